package coordinator

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/*.txt with the output of this code (review the diff)")

// TestTranscripts replays testdata/*.txt: each block is a command, a line
// "----" and what apply printed for it (its effects, then the state). With
// -update the files are rewritten; review them as diffs.
func TestTranscripts(t *testing.T) {
	files, err := filepath.Glob("testdata/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no transcripts in testdata (%v)", err)
	}
	for _, path := range files {
		t.Run(strings.TrimSuffix(filepath.Base(path), ".txt"), func(t *testing.T) {
			blocks, err := readTranscript(path)
			if err != nil {
				t.Fatal(err)
			}
			var s State
			var out strings.Builder
			for _, b := range blocks {
				got, next, err := runLine(s, b.cmd)
				if err != nil {
					t.Fatalf("%s:%d: %s: %v", path, b.line, b.cmd, err)
				}
				s = next
				if !*update && got != b.want {
					t.Errorf("%s:%d: %s\ngot:\n%s\nwant:\n%s", path, b.line, b.cmd, got, b.want)
				}
				out.WriteString(b.pre)
				fmt.Fprintf(&out, "%s\n----\n%s\n", b.cmd, got)
			}
			if *update {
				if err := os.WriteFile(path, []byte(out.String()), 0o644); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

type block struct {
	pre  string // comments and blank lines before the command
	cmd  string
	want string // without its final newline... and the blank line after it
	line int
}

func readTranscript(path string) ([]block, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var blocks []block
	var cur block
	sc := bufio.NewScanner(f)
	n := 0
	state := 0 // 0: before a command, 1: reading output
	var want []string
	for sc.Scan() {
		n++
		l := sc.Text()
		switch state {
		case 0:
			if l == "" || strings.HasPrefix(l, "#") {
				cur.pre += l + "\n"
				continue
			}
			if l == "----" {
				return nil, fmt.Errorf("%s:%d: ---- without a command", path, n)
			}
			if cur.cmd != "" {
				return nil, fmt.Errorf("%s:%d: command %q follows %q without ----", path, n, l, cur.cmd)
			}
			cur.cmd, cur.line = l, n
			if !sc.Scan() || sc.Text() != "----" {
				return nil, fmt.Errorf("%s:%d: want ---- after the command", path, n)
			}
			n++
			state, want = 1, nil
		case 1:
			if l == "" {
				cur.want = strings.Join(want, "\n") + "\n"
				blocks = append(blocks, cur)
				cur, state = block{}, 0
				continue
			}
			want = append(want, l)
		}
	}
	if state == 1 {
		cur.want = strings.Join(want, "\n") + "\n"
		blocks = append(blocks, cur)
	}
	return blocks, sc.Err()
}

// runLine parses one transcript command, applies it and prints the effects and
// the state after it.
//
//	create [key=value…]        job spec; defaults: job=demo batch=4 min-nodes=2 version=v1 recipe-hash=r1 dataset-hash=d1
//	join ID [inc= host= version= recipe-hash= dataset-hash=]
//	leave ID [inc=]
//	timeout ID gen=G
//	report ID gen=G step=S [loss=name:v,…] [time=s] [ar=s] [sum=hex]
//	checkpoint ID gen=G step=S [recipe= version= files=N]
//	stop REASON…
//	snapshot                   encode, decode and compare the state
//	state                      print the whole state as JSON
//	reset                      start again from the empty state
func runLine(s State, line string) (string, State, error) {
	f := strings.Fields(line)
	verb, args := f[0], f[1:]
	var id string
	if len(args) > 0 && !strings.Contains(args[0], "=") {
		id, args = args[0], args[1:]
	}
	kv := map[string]string{}
	for _, a := range args {
		k, v, ok := strings.Cut(a, "=")
		if !ok {
			if verb == "stop" {
				continue
			}
			return "", s, fmt.Errorf("argument %q: want key=value", a)
		}
		kv[k] = v
	}
	get := func(k, def string) string {
		if v, ok := kv[k]; ok {
			return v
		}
		return def
	}
	num := func(k string, def uint64) uint64 {
		v, err := strconv.ParseUint(get(k, strconv.FormatUint(def, 10)), 10, 64)
		if err != nil {
			panic(fmt.Sprintf("%s: %v", k, err))
		}
		return v
	}
	flt := func(k string) float64 {
		v, _ := strconv.ParseFloat(get(k, "0"), 64)
		return v
	}
	var c Command
	switch verb {
	case "create":
		c = CreateJob{Spec: Spec{
			Job: get("job", "demo"), Recipe: get("recipe", "demo"), RecipeHash: get("recipe-hash", "r1"),
			Dataset: get("dataset", "edges2shapes"), DatasetHash: get("dataset-hash", "d1"),
			Seed: num("seed", 1), GlobalBatch: int(num("batch", 4)), Version: get("version", "v1"),
			MinNodes: int(num("min-nodes", 2)), MaxSteps: num("max-steps", 0),
			CheckpointEvery: num("checkpoint-every", 0), ChecksumEvery: num("checksum-every", 0),
		}}
	case "join":
		c = Join{Node: id, Incarnation: get("inc", "1"), Host: get("host", id+".local"), Addr: get("addr", ""),
			Version: get("version", "v1"), RecipeHash: get("recipe-hash", "r1"), DatasetHash: get("dataset-hash", "d1")}
	case "leave":
		c = Leave{Node: id, Incarnation: get("inc", "1")}
	case "timeout":
		c = HeartbeatTimeout{Node: id, Gen: num("gen", 0)}
	case "report":
		r := Report{Node: id, Gen: num("gen", 0), Step: num("step", 0), StepTime: flt("time"), AllreduceTime: flt("ar"), Checksum: get("sum", "")}
		if l := get("loss", ""); l != "" {
			r.Losses = map[string]float64{}
			for _, p := range strings.Split(l, ",") {
				k, v, _ := strings.Cut(p, ":")
				r.Losses[k], _ = strconv.ParseFloat(v, 64)
			}
		}
		c = r
	case "checkpoint":
		step := num("step", 0)
		m := Manifest{Step: step, Recipe: get("recipe", "demo"), Version: get("version", "v1")}
		for i := range num("files", 2) {
			m.Files = append(m.Files, ManifestFile{Name: fmt.Sprintf("f%d.safetensors", i), Size: int64(100 * (i + 1)), SHA256: strings.Repeat(strconv.FormatUint(step%10, 10), 64)})
		}
		c = CommitCheckpoint{Node: id, Gen: num("gen", 0), Manifest: m}
	case "stop":
		c = Stop{Reason: strings.Join(f[1:], " ")}
	case "snapshot":
		b, err := json.Marshal(s)
		if err != nil {
			return "", s, err
		}
		var r State
		if err := json.Unmarshal(b, &r); err != nil {
			return "", s, err
		}
		b2, err := json.Marshal(r)
		if err != nil || string(b2) != string(b) {
			return "", s, fmt.Errorf("restored state encodes differently (%v):\n%s\n%s", err, b, b2)
		}
		// Continue from the restored copy: later commands prove it works.
		return fmt.Sprintf("snapshot: %d bytes, restored equal\n%s\n", len(b), describe(r)), r, nil
	case "reset":
		return describe(State{}) + "\n", State{}, nil
	case "state":
		b, err := json.MarshalIndent(s, "", "  ")
		return string(b) + "\n", s, err
	default:
		return "", s, fmt.Errorf("unknown verb %q", verb)
	}
	next, eff := apply(s, c)
	var out strings.Builder
	for _, e := range eff {
		out.WriteString(describeEffect(e) + "\n")
	}
	out.WriteString(describe(next) + "\n")
	return out.String(), next, nil
}

func describeEffect(e Effect) string {
	switch e := e.(type) {
	case Assign:
		var parts []string
		for _, a := range e.Assignments {
			parts = append(parts, fmt.Sprintf("%s=r%d%v", a.Ring[a.Rank], a.Rank, a.Split[a.Rank]))
		}
		a := e.Assignments[0]
		return fmt.Sprintf("> assign gen %d world %d start %d: %s", a.Gen, a.World, a.Start, strings.Join(parts, " "))
	case Committed:
		return fmt.Sprintf("> committed step %d (gen %d, world %d) losses %s step %.3gs allreduce %.3gs", e.Point.Step, e.Point.Gen, e.Point.World, losses(e.Point.Losses), e.Point.StepTime, e.Point.AllreduceTime)
	case CheckpointCommitted:
		return fmt.Sprintf("> checkpoint committed: step %d, %d files (gen %d)", e.Manifest.Step, len(e.Manifest.Files), e.Gen)
	}
	return fmt.Sprintf("> %T %+v", e, e)
}

func losses(m map[string]float64) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s:%g", k, m[k]))
	}
	return "{" + strings.Join(parts, ",") + "}"
}

func describe(s State) string {
	var b strings.Builder
	fmt.Fprintf(&b, "status %s", s.Status)
	if s.Reason != "" {
		fmt.Fprintf(&b, " (%s)", s.Reason)
	}
	fmt.Fprintf(&b, "; gen %d start %d ring %v split %v; committed %d", s.Gen.Gen, s.Gen.Start, s.Gen.Ring, s.Gen.Split, s.Committed)
	if len(s.Pending) > 0 {
		var parts []string
		for _, p := range s.Pending {
			var ranks []string
			for _, r := range p.Reports {
				ranks = append(ranks, strconv.Itoa(r.Rank))
			}
			parts = append(parts, fmt.Sprintf("%d:[%s]", p.Step, strings.Join(ranks, ",")))
		}
		fmt.Fprintf(&b, "; pending %s", strings.Join(parts, " "))
	}
	if s.PendingCheckpoint != nil {
		fmt.Fprintf(&b, "; checkpoint %d pending", s.PendingCheckpoint.Step)
	}
	if len(s.Checkpoints) > 0 {
		var steps []string
		for _, c := range s.Checkpoints {
			steps = append(steps, strconv.FormatUint(c.Step, 10))
		}
		fmt.Fprintf(&b, "; checkpoints [%s]", strings.Join(steps, " "))
	}
	b.WriteString("\n")
	var ms []string
	for _, m := range s.Members {
		ms = append(ms, fmt.Sprintf("%s(%s seq %d gen %d inc %s)", m.ID, m.State, m.Seq, m.JoinedGen, m.Incarnation))
	}
	fmt.Fprintf(&b, "members %s; dropped stale %d foreign %d invalid %d\n", strings.Join(ms, " "), s.Dropped.Stale, s.Dropped.Foreign, s.Dropped.Invalid)
	return strings.TrimSuffix(b.String(), "\n")
}
