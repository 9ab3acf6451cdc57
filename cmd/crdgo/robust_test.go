package main

// The robustness suite: crdgo run as a separate process, the way a user runs it,
// against what a hostile but realistic user does (issue 19): kill -9 in the
// middle of training, two writers on one run folder, recipes, images, weight and
// loss files that are wrong on purpose, sizes that do not fit. Every case checks
// the exit status, that the message names the input, that nothing outside the
// folders the command may write changed (a hash of the whole sandbox), and the
// process's peak RSS (its VmHWM, written as it ends) against a ceiling. The
// process is the test binary, about 28 MiB before it does anything.
//
// The process is this test binary re-executed as crdgo (TestMain): the same
// main, built once by go test, with no toolchain needed at run time.

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/crdgo/crdgo/runlock"
)

const (
	asMainEnv = "CRDGO_TEST_AS_MAIN" // "1": this process is crdgo
	asLimit   = "CRDGO_TEST_RLIMIT_AS"
	hwmFile   = "CRDGO_TEST_HWM_FILE" // where crdgo writes its peak RSS (VmHWM) when it ends
)

func TestMain(m *testing.M) {
	if os.Getenv(asMainEnv) == "1" {
		if v := os.Getenv(asLimit); v != "" {
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				fmt.Fprintln(os.Stderr, "bad", asLimit, v)
				os.Exit(2)
			}
			if err := syscall.Setrlimit(syscall.RLIMIT_AS, &syscall.Rlimit{Cur: n, Max: n}); err != nil {
				fmt.Fprintln(os.Stderr, "setrlimit:", err)
				os.Exit(2)
			}
		}
		// main, and then the peak RSS: rusage's maxrss of a child started with
		// vfork counts the parent's RSS at the exec, so the process reports its
		// own VmHWM.
		err := newRootCmd().Execute()
		if path := os.Getenv(hwmFile); path != "" {
			if b, rerr := os.ReadFile("/proc/self/status"); rerr == nil {
				for _, line := range strings.Split(string(b), "\n") {
					if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
						os.WriteFile(path, []byte(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB"))), 0o644)
					}
				}
			}
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "crdgo:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// result is what a crdgo process did.
type result struct {
	code           int
	stdout, stderr string
	maxRSS         int64 // bytes: VmHWM, or rusage's maxrss (an upper bound) if crdgo was killed
	took           time.Duration
}

// proc is a crdgo command to run in dir, optionally under an address-space limit.
type proc struct {
	dir     string
	args    []string
	limitAS uint64
}

func (p proc) cmd() *exec.Cmd {
	c := exec.Command(os.Args[0], append([]string{"--log-level", "warn"}, p.args...)...)
	c.Dir = p.dir
	c.Env = append(os.Environ(), asMainEnv+"=1")
	// A child that outlives crdgo (a worker) would hold the output pipes open
	// and Wait with them: bound that.
	c.WaitDelay = 5 * time.Second
	if p.limitAS > 0 {
		c.Env = append(c.Env, asLimit+"="+strconv.FormatUint(p.limitAS, 10))
	}
	return c
}

func finish(c *exec.Cmd, out, errb *bytes.Buffer, start time.Time) result {
	r := result{stdout: out.String(), stderr: errb.String(), took: time.Since(start), code: -1}
	if ps := c.ProcessState; ps != nil {
		r.code = ps.ExitCode()
		if ru, ok := ps.SysUsage().(*syscall.Rusage); ok {
			r.maxRSS = ru.Maxrss << 10 // KiB on Linux
		}
	}
	return r
}

// run runs p to its end (60 s at most).
func (p proc) run(t *testing.T) result {
	t.Helper()
	c := p.cmd()
	hwm := filepath.Join(t.TempDir(), "hwm")
	c.Env = append(c.Env, hwmFile+"="+hwm)
	var out, errb bytes.Buffer
	c.Stdout, c.Stderr = &out, &errb
	start := time.Now()
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	timer := time.AfterFunc(60*time.Second, func() { c.Process.Kill() })
	c.Wait()
	timer.Stop()
	r := finish(c, &out, &errb, start)
	if b, err := os.ReadFile(hwm); err == nil {
		if kb, err := strconv.ParseInt(string(b), 10, 64); err == nil {
			r.maxRSS = kb << 10
		}
	}
	return r
}

// fails checks that r failed (exit status 1) with a message holding every want.
func (r result) fails(t *testing.T, what string, want ...string) {
	t.Helper()
	if r.code != 1 {
		t.Errorf("%s: exit status %d; want 1\nstderr: %s", what, r.code, tail(r.stderr))
	}
	for _, w := range want {
		if !strings.Contains(r.stderr, w) {
			t.Errorf("%s: message does not contain %q\nstderr: %s", what, w, tail(r.stderr))
		}
	}
	for _, bad := range []string{"panic:", "goroutine ", "fatal error"} {
		if strings.Contains(r.stderr, bad) {
			t.Errorf("%s: %q in the output: a crash, not an error\nstderr: %s", what, bad, tail(r.stderr))
		}
	}
}

// succeeds checks that r exited 0.
func (r result) succeeds(t *testing.T, what string) {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("%s: exit status %d; want 0\nstderr: %s", what, r.code, tail(r.stderr))
	}
}

// under checks the peak RSS against a ceiling.
func (r result) under(t *testing.T, what string, ceiling int64) {
	t.Helper()
	t.Logf("%s: peak RSS %d MiB (ceiling %d MiB), %v", what, r.maxRSS>>20, ceiling>>20, r.took.Round(time.Millisecond))
	if r.maxRSS > ceiling {
		t.Errorf("%s: peak RSS %d MiB; ceiling %d MiB", what, r.maxRSS>>20, ceiling>>20)
	}
}

func tail(s string) string {
	if len(s) > 1500 {
		return "…" + s[len(s)-1500:]
	}
	return s
}

// sandbox is a folder with a user's files around where crdgo works; snapshot
// and unchanged check that nothing outside the allowed folders changed.
type sandbox struct {
	dir string
}

func newSandbox(t *testing.T) *sandbox {
	t.Helper()
	s := &sandbox{dir: t.TempDir()}
	writeFile(t, s.path("home/README.md"), "a user's notes")
	writeFile(t, s.path("home/photos/cat.png"), "not really a cat")
	if err := os.Symlink(s.path("home"), s.path("home-link")); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *sandbox) path(p string) string { return filepath.Join(s.dir, filepath.FromSlash(p)) }

// snapshot hashes every entry under the sandbox except those under allowed
// (relative paths).
func (s *sandbox) snapshot(t *testing.T, allowed ...string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(s.dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(s.dir, p)
		rel = filepath.ToSlash(rel)
		for _, a := range allowed {
			if rel == a || strings.HasPrefix(rel, a+"/") {
				if e.IsDir() && rel != a {
					return fs.SkipDir
				}
				return nil
			}
		}
		switch {
		case e.Type()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			out[rel] = "-> " + target
		case e.IsDir():
			out[rel] = "dir"
		default:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			h := sha256.Sum256(b)
			out[rel] = hex.EncodeToString(h[:8])
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// unchanged fails when anything outside allowed differs from before.
func (s *sandbox) unchanged(t *testing.T, what string, before map[string]string, allowed ...string) {
	t.Helper()
	after := s.snapshot(t, allowed...)
	for k, v := range before {
		if after[k] != v {
			t.Errorf("%s: %s changed or vanished outside %v", what, k, allowed)
		}
	}
	for k := range after {
		if _, ok := before[k]; !ok {
			t.Errorf("%s: %s appeared outside %v", what, k, allowed)
		}
	}
}

func writeFile(t *testing.T, path, body string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

// robustRecipe is the tiny recipe with 24 steps: 6 epochs of 4 steps.
var robustRecipe = strings.Replace(tinyRecipeYAML, "epochs: 1, decay_epochs: 1", "epochs: 3, decay_epochs: 3", 1)

// trainSandbox is a sandbox with the recipe and its dataset generated, so that
// train only reads data/.
func trainSandbox(t *testing.T) *sandbox {
	t.Helper()
	s := newSandbox(t)
	writeFile(t, s.path("tiny.yaml"), robustRecipe)
	r := proc{dir: s.dir, args: []string{"data", "synth", "--kind", "edges2shapes", "--size", "32", "--n", "16", "--n-test", "4", "--seed", "3", "--out", "data/tinyshapes"}}.run(t)
	r.succeeds(t, "data synth")
	return s
}

func trainArgs(out string, extra ...string) []string {
	return append([]string{"train", "--recipe", "tiny.yaml", "--data-root", "data", "--out", out, "--no-progress",
		"--threads", "1", "--workers", "1", "--checkpoint-every", "2", "--resume"}, extra...)
}

const miB = 1 << 20

// TestRobustKillAndResume kills training with SIGKILL at seeded random moments
// (many of them inside checkpoint writes: one every 2 steps) and resumes each
// time; the final checkpoint must equal an uninterrupted run's bit for bit.
func TestRobustKillAndResume(t *testing.T) {
	if testing.Short() {
		t.Skip("trains the tiny recipe many times: skipped with -short")
	}
	s := trainSandbox(t)
	straight := proc{dir: s.dir, args: trainArgs("straight")}.run(t)
	straight.succeeds(t, "uninterrupted train")
	straight.under(t, "uninterrupted train", 200*miB)

	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 19))
	before := s.snapshot(t, "killed", "straight")
	kills := 0
	for attempt := 0; ; attempt++ {
		if attempt == 30 {
			t.Fatalf("seed %d: not done after %d attempts", seed, attempt)
		}
		c := proc{dir: s.dir, args: trainArgs("killed")}.cmd()
		var out, errb bytes.Buffer
		c.Stdout, c.Stderr = &out, &errb
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { c.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(time.Duration(150+rng.IntN(1200)) * time.Millisecond): // the fault's moment, not a synchronisation
			c.Process.Signal(syscall.SIGKILL)
			<-done
			kills++
		}
		if c.ProcessState.Exited() {
			r := finish(c, &out, &errb, time.Now())
			r.succeeds(t, fmt.Sprintf("seed %d: train after %d kills", seed, kills))
			break
		}
	}
	t.Logf("seed %d: %d kills", seed, kills)
	s.unchanged(t, "kill and resume", before, "killed", "straight")
	a, b := s.path("straight/checkpoints/step-00000024"), s.path("killed/checkpoints/step-00000024")
	ents, err := os.ReadDir(a)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.Name() == "manifest.json" { // holds the creation time
			continue
		}
		x, err1 := os.ReadFile(filepath.Join(a, e.Name()))
		y, err2 := os.ReadFile(filepath.Join(b, e.Name()))
		if err1 != nil || err2 != nil || !bytes.Equal(x, y) {
			t.Errorf("seed %d, %d kills: %s differs from the uninterrupted run's (%v, %v)", seed, kills, e.Name(), err1, err2)
		}
	}
	leftovers, _ := filepath.Glob(s.path("killed/checkpoints/*.*"))
	if len(leftovers) > 0 {
		t.Errorf("seed %d: leftovers after the final run: %v", seed, leftovers)
	}
}

// TestRobustConcurrentWriters: a second train on a run folder in use is turned
// away at once, naming the first; the first finishes with a valid metrics.jsonl.
func TestRobustConcurrentWriters(t *testing.T) {
	s := trainSandbox(t)
	first := proc{dir: s.dir, args: trainArgs("run")}.cmd()
	var out1, err1 bytes.Buffer
	first.Stdout, first.Stderr = &out1, &err1
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	defer first.Process.Kill()
	// Wait until the first holds the lock and has written its name.
	deadline := time.Now().Add(30 * time.Second)
	for {
		b, _ := os.ReadFile(s.path("run/" + runlock.LockFile))
		if bytes.Contains(b, []byte(`"pid"`)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the first train did not take the lock within 30 s; stderr: %s", err1.String())
		}
		time.Sleep(10 * time.Millisecond) // polled under the deadline above
	}
	before := s.snapshot(t, "run")
	second := proc{dir: s.dir, args: trainArgs("run")}.run(t)
	host, _ := os.Hostname()
	second.fails(t, "second train on the same folder", "run is in use by pid "+strconv.Itoa(first.Process.Pid), "host "+host)
	second.under(t, "second train", 64*miB)
	if second.took > 10*time.Second {
		t.Errorf("second train took %v to give up; want at once", second.took)
	}
	synth := proc{dir: s.dir, args: []string{"data", "synth", "--out", "run", "--size", "16", "--n", "2"}}.run(t)
	synth.fails(t, "data synth into the run folder in use", "in use by pid "+strconv.Itoa(first.Process.Pid))
	if err := first.Wait(); err != nil {
		t.Fatalf("first train: %v\n%s", err, tail(err1.String()))
	}
	s.unchanged(t, "concurrent writers", before, "run")
	f, err := os.Open(s.path("run/metrics.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		if !json.Valid(sc.Bytes()) {
			t.Errorf("metrics.jsonl line %d is not JSON: %q", n, sc.Text())
		}
	}
}

// TestRobustRetentionAndRerun: the retention case through the CLI (the
// newest checkpoint broken, --resume --keep 1), --keep 0, stale .tmp folders,
// and a finished run re-run, which must change nothing.
func TestRobustRetentionAndRerun(t *testing.T) {
	s := trainSandbox(t)
	proc{dir: s.dir, args: trainArgs("run", "--max-steps", "12")}.run(t).succeeds(t, "train 12 steps")
	ck := s.path("run/checkpoints")
	if err := os.Truncate(filepath.Join(ck, "step-00000012", "student_G.safetensors"), 64); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(ck, "step-00000014.tmp", "teacher_G.safetensors"), "half written")
	writeFile(t, filepath.Join(ck, "step-00000016.tmp", "notes.txt"), "the user's")
	before := s.snapshot(t, "run")
	// The case: the newest checkpoint (12) broken; resume (from 10)
	// with --keep 1 and stop before 12. Main kept only the broken 12.
	r := proc{dir: s.dir, args: trainArgs("run", "--max-steps", "11", "--keep", "1")}.run(t)
	r.succeeds(t, "resume --keep 1 with a broken newest checkpoint")
	r.under(t, "resume --keep 1", 200*miB)
	if !strings.Contains(r.stderr, "broken checkpoint") {
		t.Errorf("the broken checkpoint was not reported: %s", tail(r.stderr))
	}
	s.unchanged(t, "retention", before, "run")
	ents, _ := os.ReadDir(ck)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	// 11, the one intact checkpoint kept; 12, broken and newer, kept and
	// reported; 14.tmp, crdgo's leftover, removed; the user's 16.tmp kept.
	if got, want := strings.Join(names, " "), "step-00000011 step-00000012 step-00000016.tmp"; got != want {
		t.Errorf("checkpoints after --keep 1: %s; want %s", got, want)
	}
	proc{dir: s.dir, args: trainArgs("run", "--keep", "0")}.run(t).fails(t, "--keep 0", "--keep 0")

	// A finished run, re-run: nothing in the run folder changes (the lock
	// file's record aside).
	proc{dir: s.dir, args: trainArgs("run")}.run(t).succeeds(t, "train to the end")
	done := s.snapshot(t, "run/"+runlock.LockFile)
	proc{dir: s.dir, args: trainArgs("run")}.run(t).succeeds(t, "re-run of a finished run")
	s.unchanged(t, "re-run of a finished run", done, "run/"+runlock.LockFile)
}

// TestRobustDatasets: the synthetic dataset of a recipe never replaces a user's
// folder nor leaves --data-root, and a dataset path that is a file says so.
func TestRobustDatasets(t *testing.T) {
	s := newSandbox(t)
	writeFile(t, s.path("data/tinyshapes/README.md"), "my dataset")
	writeFile(t, s.path("data/tinyshapes/train/0000.png"), "my image")
	for _, c := range []struct {
		name, dataset string
		want          []string
	}{
		{"user folder", "tinyshapes", []string{"data/tinyshapes/train is not empty"}},
		{"parent", "../home", []string{"tiny.yaml", "data.dataset", `"../home"`}},
		{"root", ".", []string{"tiny.yaml", "data.dataset", `"."`}},
		{"absolute", s.path("home"), []string{"tiny.yaml", "data.dataset"}},
	} {
		writeFile(t, s.path("tiny.yaml"), strings.Replace(robustRecipe, "dataset: tinyshapes", "dataset: "+c.dataset, 1))
		before := s.snapshot(t, "run")
		r := proc{dir: s.dir, args: trainArgs("run")}.run(t)
		r.fails(t, "train with dataset "+c.name, c.want...)
		r.under(t, "train with dataset "+c.name, 64*miB)
		s.unchanged(t, "train with dataset "+c.name, before, "run")
	}
	writeFile(t, s.path("tiny.yaml"), strings.Replace(robustRecipe, "dataset: tinyshapes", "dataset: link", 1))
	if err := os.Symlink(s.path("home"), s.path("data/link")); err != nil {
		t.Fatal(err)
	}
	before := s.snapshot(t, "run")
	proc{dir: s.dir, args: trainArgs("run")}.run(t).fails(t, "train with a symlink out of the data root", "outside --data-root")
	s.unchanged(t, "symlink", before, "run")

	// A dataset path that is a file, for a recipe without synth.
	noSynth := strings.Replace(strings.Replace(robustRecipe, "  synth: {kind: edges2shapes, size: 32, n: 16, n_test: 4, seed: 3}\n", "", 1), "dataset: tinyshapes", "dataset: afile", 1)
	writeFile(t, s.path("tiny.yaml"), noSynth)
	writeFile(t, s.path("data/afile"), "not a folder")
	proc{dir: s.dir, args: trainArgs("run")}.run(t).fails(t, "dataset that is a file", "data/afile is a file")
}

// TestRobustHostileInputs: recipes, images, weight files and loss files that
// are wrong on purpose; each is an error naming the input, never a crash, with
// little memory.
func TestRobustHostileInputs(t *testing.T) {
	s := trainSandbox(t)
	proc{dir: s.dir, args: trainArgs("run", "--max-steps", "2")}.run(t).succeeds(t, "train 2 steps")
	png := s.path("data/tinyshapes/val/0000.png")
	good, err := os.ReadFile(png)
	if err != nil {
		t.Fatal(err)
	}
	bomb := slices.Clone(good[:33]) // signature and IHDR, claiming 100000×100000
	binary.BigEndian.PutUint32(bomb[16:], 100000)
	binary.BigEndian.PutUint32(bomb[20:], 100000)
	binary.BigEndian.PutUint32(bomb[29:], crc32.ChecksumIEEE(bomb[12:29])) // IHDR's CRC
	files := map[string]string{
		"recipes/unknown.yaml":     strings.Replace(robustRecipe, "seed: 5", "seed: 5\nsede: 6", 1),
		"recipes/negative.yaml":    strings.Replace(robustRecipe, "batch: 4", "batch: -4", 1),
		"recipes/huge.yaml":        strings.Replace(robustRecipe, "ngf: 4,", "ngf: 4000000000,", 1),
		"recipes/garbage.yaml":     "\x00\xff\x13 not yaml {{{",
		"recipes/aliases.yaml":     "a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n",
		"recipes/large.yaml":       robustRecipe + "#" + strings.Repeat("x", 2<<20) + "\n",
		"images/truncated.png":     string(good[:len(good)/2]),
		"images/bomb.png":          string(bomb),
		"images/empty.png":         "",
		"images/text.png":          "this is not an image",
		"weights/truncated.pth":    "PK\x03\x04\x14\x00",
		"weights/huge.safetensors": string(binary.LittleEndian.AppendUint64(nil, 1<<50)) + "{}",
		"weights/pickle.pth":       "\x80\x02cos\nsystem\nq\x00X\x02\x00\x00\x00lsq\x01\x85q\x02Rq\x03.",
		"loss/empty.json":          "",
		"loss/short.json":          `{"shape_NCHW":[1,1,4,4],"patch_size":2,"teacher":[1,2],"student":[]}`,
		"loss/nan.json":            `{"shape_NCHW":[1,1,4,4],"patch_size":2,"teacher":[NaN]}`,
	}
	for name, body := range files {
		writeFile(t, s.path("in/"+name), body)
	}
	before := s.snapshot(t, "run", "out")
	for _, c := range []struct {
		args    []string
		want    []string
		ceiling int64
	}{
		{[]string{"train", "--recipe", "in/recipes/unknown.yaml"}, []string{"in/recipes/unknown.yaml", "sede"}, 64 * miB},
		{[]string{"train", "--recipe", "in/recipes/negative.yaml"}, []string{"in/recipes/negative.yaml", "schedule.batch: -4"}, 64 * miB},
		{[]string{"train", "--recipe", "in/recipes/huge.yaml"}, []string{"in/recipes/huge.yaml", "teacher.ngf: 4000000000"}, 64 * miB},
		{[]string{"train", "--recipe", "in/recipes/garbage.yaml"}, []string{"in/recipes/garbage.yaml"}, 64 * miB},
		{[]string{"train", "--recipe", "in/recipes/aliases.yaml"}, []string{"in/recipes/aliases.yaml"}, 64 * miB},
		{[]string{"train", "--recipe", "in/recipes/large.yaml"}, []string{"in/recipes/large.yaml", "larger than 1048576 bytes"}, 64 * miB},
		{[]string{"translate", "--checkpoint", "run", "in/images/truncated.png", "out/a.png"}, []string{"in/images/truncated.png"}, 64 * miB},
		{[]string{"translate", "--checkpoint", "run", "in/images/bomb.png", "out/a.png"}, []string{"in/images/bomb.png", "100000x100000"}, 64 * miB},
		{[]string{"translate", "--checkpoint", "run", "in/images/empty.png", "out/a.png"}, []string{"in/images/empty.png"}, 64 * miB},
		{[]string{"translate", "--checkpoint", "run", "in/images/text.png", "out/a.png"}, []string{"in/images/text.png", "not a PNG or JPEG"}, 64 * miB},
		{[]string{"model", "info", "--arch", "vgg16", "--weights", "in/weights/truncated.pth"}, []string{"in/weights/truncated.pth"}, 64 * miB},
		{[]string{"model", "info", "--arch", "vgg16", "--weights", "in/weights/huge.safetensors"}, []string{"in/weights/huge.safetensors"}, 64 * miB},
		{[]string{"model", "info", "--arch", "vgg16", "--weights", "in/weights/pickle.pth"}, []string{"in/weights/pickle.pth"}, 64 * miB},
		{[]string{"loss", "in/loss/empty.json"}, []string{"in/loss/empty.json: empty file"}, 64 * miB},
		{[]string{"loss", "in/loss/short.json"}, []string{"in/loss/short.json", `"teacher" has 2 numbers`, `"student" has 0 numbers`}, 64 * miB},
		{[]string{"loss", "in/loss/nan.json"}, []string{"in/loss/nan.json", "invalid character"}, 64 * miB},
		{[]string{"eval", "--checkpoint", "run", "--max-images", "-1"}, []string{"--max-images -1"}, 64 * miB},
	} {
		what := strings.Join(c.args, " ")
		r := proc{dir: s.dir, args: c.args}.run(t)
		r.fails(t, what, c.want...)
		r.under(t, what, c.ceiling)
	}
	s.unchanged(t, "hostile inputs", before, "run", "out")
}

// TestRobustLossStream reproduces the fifth defect through the CLI: a 64 MB
// loss file with shape [1,1,2,2] is refused at its fifth number, quickly and
// in little memory (main read it whole: 36 s and 4.8 GB for 240 MB).
func TestRobustLossStream(t *testing.T) {
	s := newSandbox(t)
	f, err := os.Create(s.path("big.json"))
	if err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriter(f)
	w.WriteString(`{"shape_NCHW":[1,1,2,2],"patch_size":1,"teacher":[`)
	chunk := strings.Repeat("0.123456,", 1<<16)
	for range (64 << 20) / len(chunk) {
		w.WriteString(chunk)
	}
	w.WriteString(`0],"student":[0,0,0,0]}`)
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	r := proc{dir: s.dir, args: []string{"loss", "big.json"}}.run(t)
	r.fails(t, "loss on a 64 MB file", `big.json: "teacher" has more than 4 numbers`)
	r.under(t, "loss on a 64 MB file", 48*miB)
	if r.took > 5*time.Second {
		t.Errorf("loss on a 64 MB file took %v; want it to stop at the fifth number", r.took)
	}
}

// TestRobustTranslateMemory reproduces the sixth defect: translate --size 8192
// under a 3 GB address-space limit (ulimit -v) died with Go's out-of-memory
// crash; it is refused with both numbers, and nothing is written.
func TestRobustTranslateMemory(t *testing.T) {
	s := trainSandbox(t)
	proc{dir: s.dir, args: trainArgs("run", "--max-steps", "2")}.run(t).succeeds(t, "train 2 steps")
	before := s.snapshot(t)
	r := proc{dir: s.dir, limitAS: 3_000_000_000, args: []string{"translate", "--checkpoint", "run", "--size", "8192", "data/tinyshapes/val/0000.png", "out.png"}}.run(t)
	r.fails(t, "translate --size 8192 under ulimit -v 3 GB", "8192×8192", "needs about", "is available (RLIMIT_AS")
	r.under(t, "translate --size 8192", 64*miB)
	r = proc{dir: s.dir, args: []string{"translate", "--checkpoint", "run", "--size", "8192", "--max-memory", "2G", "data/tinyshapes/val/0000.png", "out.png"}}.run(t)
	r.fails(t, "translate --size 8192 --max-memory 2G", "needs about", "2048 MiB is available (--max-memory)")
	s.unchanged(t, "translate refused", before)
}

// TestRobustAllreduceWorkers reproduces the fourth defect through the CLI: a
// stopped worker is named within the ring timeout and killed, and SIGTERM or
// SIGKILL to the parent leaves no worker behind.
func TestRobustAllreduceWorkers(t *testing.T) {
	if testing.Short() {
		t.Skip("runs allreduce worker processes for ~20 s: skipped with -short")
	}
	args := []string{"bench", "allreduce", "--modes", "processes", "--ranks", "3", "--floats", "10K", "--transports", "tcp",
		"--runs", "1000000", "--warmup", "1", "--ring-timeout", "2s"}
	start := func(t *testing.T) (*exec.Cmd, *bytes.Buffer, []int) {
		c := proc{dir: t.TempDir(), args: args}.cmd()
		var errb bytes.Buffer
		c.Stderr = &errb
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(30 * time.Second)
		for {
			if kids := children(c.Process.Pid); len(kids) == 3 {
				return c, &errb, kids
			}
			if time.Now().After(deadline) {
				c.Process.Kill()
				c.Wait()
				t.Fatalf("3 workers did not start within 30 s: %s", tail(errb.String()))
			}
			time.Sleep(20 * time.Millisecond) // polled under the deadline above
		}
	}
	t.Run("stopped worker", func(t *testing.T) {
		c, errb, kids := start(t)
		time.Sleep(time.Second) // let the series run a little: the fault's moment
		victim := kids[1]
		syscall.Kill(victim, syscall.SIGSTOP)
		t0 := time.Now()
		done := make(chan error, 1)
		go func() { done <- c.Wait() }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			c.Process.Kill()
			<-done
			syscall.Kill(victim, syscall.SIGKILL)
			t.Fatalf("bench allreduce still running 30 s after a worker stopped (ring timeout 2 s)")
		}
		if took := time.Since(t0); took > 15*time.Second {
			t.Errorf("bench allreduce ended %v after a worker stopped; want within ring timeout + grace", took)
		}
		if !strings.Contains(errb.String(), fmt.Sprintf("(pid %d) neither finished nor failed", victim)) {
			t.Errorf("the error does not name the stopped worker (pid %d): %s", victim, tail(errb.String()))
		}
		waitGone(t, kids)
	})
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		t.Run(sig.String(), func(t *testing.T) {
			c, _, kids := start(t)
			c.Process.Signal(sig)
			c.Wait()
			waitGone(t, kids)
		})
	}
}

// children lists the processes whose parent is pid.
func children(pid int) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ppid, state := procStat(n); ppid == pid && state != "Z" {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

// procStat reads a process's parent and state from /proc/PID/stat.
func procStat(pid int) (ppid int, state string) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, ""
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, ""
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 {
		return 0, ""
	}
	ppid, _ = strconv.Atoi(f[1])
	return ppid, f[0]
}

// waitGone waits (10 s at most) until none of pids is alive; zombies count as
// gone: they have exited and wait for their new parent to reap them.
func waitGone(t *testing.T, pids []int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var alive []int
		for _, p := range pids {
			if _, state := procStat(p); state != "" && state != "Z" {
				alive = append(alive, p)
			}
		}
		if len(alive) == 0 {
			return
		}
		if time.Now().After(deadline) {
			for _, p := range alive {
				syscall.Kill(p, syscall.SIGKILL)
			}
			t.Fatalf("workers %v still alive 10 s after their parent ended", alive)
		}
		time.Sleep(20 * time.Millisecond) // polled under the deadline above
	}
}
