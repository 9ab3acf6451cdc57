package train

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap/zaptest"

	"github.com/crdgo/crdgo/crd/tensor"
)

// runKeep trains the tiny recipe in out up to maxSteps, resuming from the newest
// intact checkpoint, with a checkpoint every `every` steps and keep checkpoints.
func runKeep(t *testing.T, r Recipe, root, out string, maxSteps, every, keep int) (*Trainer, Summary) {
	t.Helper()
	log := zaptest.NewLogger(t)
	ctx := context.Background()
	if _, err := PrepareData(ctx, root, r, nil, log); err != nil {
		t.Fatal(err)
	}
	tr, err := New(Config{Recipe: r, DataRoot: root, OutDir: out, MaxSteps: maxSteps, LogEvery: 1, SampleEvery: 100,
		CheckpointEvery: every, KeepCheckpoints: keep, Workers: 1}, tensor.NewCPU(tensor.DefaultCPUKind(), 2), Extras{}, log)
	if err != nil {
		t.Fatal(err)
	}
	ck := filepath.Join(out, "checkpoints")
	if err := TidyCheckpoints(ck, log); err != nil {
		t.Fatal(err)
	}
	if cp, err := LatestCheckpoint(ck, log); err != nil {
		t.Fatal(err)
	} else if cp != "" {
		if err := tr.LoadCheckpoint(cp); err != nil {
			t.Fatal(err)
		}
	}
	sum, err := tr.Run(ctx, RunOptions{Output: NewRunFolder(out, nil, log)})
	if err != nil {
		t.Fatal(err)
	}
	return tr, sum
}

func breakCheckpoint(t *testing.T, out string, step int) {
	t.Helper()
	p := filepath.Join(out, "checkpoints", stepName(step), "student_G.safetensors")
	if err := os.Truncate(p, 100); err != nil {
		t.Fatal(err)
	}
}

func stepName(step int) string { return "step-" + pad8(step) }

func pad8(n int) string {
	s := "00000000" + itoa(n)
	return s[len(s)-8:]
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

// checkpointSet lists the step folders under out/checkpoints with "!" after
// the broken ones, newest first.
func checkpointSet(t *testing.T, out string) string {
	t.Helper()
	cps, err := Checkpoints(filepath.Join(out, "checkpoints"))
	if err != nil {
		t.Fatal(err)
	}
	var s []string
	for _, c := range cps {
		name := strings.TrimPrefix(filepath.Base(c), "step-")
		if _, err := VerifyCheckpoint(c); err != nil {
			name += "!"
		}
		s = append(s, name)
	}
	return strings.Join(s, " ")
}

// TestRetentionKeepsTheNewestIntact reproduces issue 19's second defect: the
// newest checkpoint broken, --resume --keep 1 resumed from the one before and
// then pruned every intact checkpoint, leaving only the broken one. Retention
// counts intact checkpoints: the new one is kept, the broken newer one is
// reported and kept, the older intact ones beyond keep go.
func TestRetentionKeepsTheNewestIntact(t *testing.T) {
	r := tinyRecipe(t, "demo")
	root, out := t.TempDir(), t.TempDir()
	runKeep(t, r, root, out, 12, 4, 3)
	// Epochs are 6 steps: 4, 6 (end of epoch 1), 8, 12; keep 3.
	if got := checkpointSet(t, out); got != "00000012 00000008 00000006" {
		t.Fatalf("checkpoints after 12 steps: %s; want 12, 8 and 6", got)
	}
	breakCheckpoint(t, out, 12)
	tr, _ := runKeep(t, r, root, out, 10, 2, 1) // resumes from 8, saves 10
	if tr.loadedFrom == "" || !strings.HasSuffix(tr.loadedFrom, "step-00000008") {
		t.Fatalf("resumed from %q; want step-00000008", tr.loadedFrom)
	}
	if got := checkpointSet(t, out); got != "00000012! 00000010" {
		t.Errorf("checkpoints = %s; want the broken 12 (newer, reported) and the intact 10", got)
	}
	cp, err := LatestCheckpoint(filepath.Join(out, "checkpoints"), zaptest.NewLogger(t))
	if err != nil || !strings.HasSuffix(cp, "step-00000010") {
		t.Errorf("LatestCheckpoint = %q, %v; want step-00000010", cp, err)
	}
}

// TestRetentionWithBrokenCheckpoints: with three broken checkpoints and keep 3
// every new checkpoint was pruned as soon as it was written. Now the new ones
// are kept, and the broken ones go only once three newer intact ones exist.
func TestRetentionWithBrokenCheckpoints(t *testing.T) {
	r := tinyRecipe(t, "demo")
	root, out := t.TempDir(), t.TempDir()
	runKeep(t, r, root, out, 15, 5, 3) // 5, 6 (end of epoch 1), 10, 12 (epoch 2), 15; keep 3
	for _, s := range []int{10, 12, 15} {
		breakCheckpoint(t, out, s)
	}
	runKeep(t, r, root, out, 4, 2, 3) // from scratch: 2, 4
	if got := checkpointSet(t, out); got != "00000015! 00000012! 00000010! 00000004 00000002" {
		t.Errorf("checkpoints = %s; want the three broken ones and the new 4 and 2", got)
	}
	runKeep(t, r, root, out, 8, 2, 3) // 6, 8: 8, 6 and 4 are the three newest intact
	if got := checkpointSet(t, out); got != "00000015! 00000012! 00000010! 00000008 00000006 00000004" {
		t.Errorf("checkpoints = %s; want 15! 12! 10! 8 6 4 (2 is older than the third newest intact)", got)
	}
	runKeep(t, r, root, out, 22, 2, 3) // 10 and 12 rewritten intact; 22, 20, 18 the newest three
	if got := checkpointSet(t, out); got != "00000022 00000020 00000018" {
		t.Errorf("checkpoints = %s; want 22 20 18 (the broken 15 older than the third newest intact)", got)
	}
}

// TestTidyCheckpoints: a crash between the two renames of a replaced checkpoint
// leaves step-N.old without step-N (restored), a crash while writing leaves
// step-N.tmp (removed); a folder with such a name holding a file crdgo does not
// write is left alone.
func TestTidyCheckpoints(t *testing.T) {
	r := tinyRecipe(t, "demo")
	root, out := t.TempDir(), t.TempDir()
	runKeep(t, r, root, out, 4, 2, 3)
	ck := filepath.Join(out, "checkpoints")
	if err := os.Rename(filepath.Join(ck, "step-00000004"), filepath.Join(ck, "step-00000004.old")); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(ck, "step-00000006.tmp", "teacher_G.safetensors"), "half")
	write(t, filepath.Join(ck, "step-00000006.tmp", ".student_G.safetensors.tmp123"), "half")
	write(t, filepath.Join(ck, "step-00000008.tmp", "notes.txt"), "mine")
	write(t, filepath.Join(ck, "step-00000002.old", "state.json"), "{}") // step-00000002 exists: a leftover
	if err := TidyCheckpoints(ck, zaptest.NewLogger(t)); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(ck)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if got, want := strings.Join(names, " "), "step-00000002 step-00000004 step-00000008.tmp"; got != want {
		t.Errorf("after TidyCheckpoints: %s; want %s", got, want)
	}
	if _, err := VerifyCheckpoint(filepath.Join(ck, "step-00000004")); err != nil {
		t.Errorf("restored checkpoint: %v", err)
	}
}

// TestRerunOfAFinishedRun: resuming a run whose schedule is complete trains
// nothing and writes nothing: the newest checkpoint and metrics.jsonl are
// unchanged (they were rewritten, and an evaluation line appended, each time).
func TestRerunOfAFinishedRun(t *testing.T) {
	r := tinyRecipe(t, "demo")
	root, out := t.TempDir(), t.TempDir()
	runKeep(t, r, root, out, 6, 4, 3)
	before := treeHash(t, out)
	_, sum := runKeep(t, r, root, out, 6, 4, 3)
	if sum.Steps != 6 || !strings.HasSuffix(sum.Checkpoint, "step-00000006") {
		t.Errorf("summary of the re-run = %+v; want step 6 and its checkpoint", sum)
	}
	sameTree(t, "re-run of a finished run", before, treeHash(t, out))
}

// TestLoadCheckpointRejectsABadState: state.json is outside input; a negative
// step (with the manifest's hashes fixed up to match) is refused.
func TestLoadCheckpointRejectsABadState(t *testing.T) {
	r := tinyRecipe(t, "demo")
	root, out := t.TempDir(), t.TempDir()
	runKeep(t, r, root, out, 4, 4, 3)
	cp := filepath.Join(out, "checkpoints", "step-00000004")
	for _, tc := range []struct {
		edit func(map[string]any)
		want string
	}{
		{func(s map[string]any) { s["step"] = -50 }, "state.step: -50"},
		{func(s map[string]any) { s["cursor"] = map[string]any{"epoch": 0, "pos": -1} }, "state.cursor.pos: -1"},
		{func(s map[string]any) { s["phase"] = "lunch" }, `state.phase: "lunch"`},
		{func(s map[string]any) { s["teacher_steps"] = 1000 }, "want ≤ step 4"},
	} {
		dir := t.TempDir()
		copyDir(t, cp, dir)
		var cs map[string]any
		b, _ := os.ReadFile(filepath.Join(dir, "state.json"))
		if err := json.Unmarshal(b, &cs); err != nil {
			t.Fatal(err)
		}
		tc.edit(cs["state"].(map[string]any))
		b, _ = json.Marshal(cs)
		write(t, filepath.Join(dir, "state.json"), string(b))
		fixManifest(t, dir)
		if _, err := VerifyCheckpoint(dir); err != nil {
			t.Fatalf("the edited checkpoint's manifest does not match: %v", err)
		}
		tr, err := New(Config{Recipe: r, DataRoot: root, OutDir: t.TempDir()}, tensor.NewCPU(tensor.DefaultCPUKind(), 1), Extras{}, zaptest.NewLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		if err := tr.LoadCheckpoint(dir); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("LoadCheckpoint with an edited state = %v; want an error containing %q", err, tc.want)
		}
	}
}

func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		write(t, filepath.Join(dst, e.Name()), string(b))
	}
}

// fixManifest rewrites dir's manifest to match its files, as someone tampering
// with a checkpoint would.
func fixManifest(t *testing.T, dir string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, manifestName))
	if err != nil {
		t.Fatal(err)
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for i, f := range m.Files {
		mf, err := hashFile(filepath.Join(dir, f.Name))
		if err != nil {
			t.Fatal(err)
		}
		m.Files[i].Size, m.Files[i].SHA256 = mf.Size, mf.SHA256
	}
	b, _ = json.Marshal(m)
	write(t, filepath.Join(dir, manifestName), string(b))
}

// TestRecipeSizeLimit: a recipe file over 1 MiB is refused before it is parsed
// (it used to be copied into every checkpoint's state.json).
func TestRecipeSizeLimit(t *testing.T) {
	p := filepath.Join(t.TempDir(), "huge.yaml")
	b := []byte("name: huge\ndescription: \"" + strings.Repeat("x", MaxRecipeBytes) + "\"\n")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := LoadRecipe(p)
	if err == nil || !strings.Contains(err.Error(), "larger than 1048576 bytes") || !strings.Contains(err.Error(), p) {
		t.Errorf("LoadRecipe(%d-byte file) = %v; want a size error naming the file", len(b), err)
	}
}

// TestSaveCheckpointKeepsAUsersFolder: a folder with a checkpoint's temporary
// name that holds a user's file is never removed to make room: checkpoints are
// written under fresh names (step-N.tmpDIGITS), and the run goes on.
func TestSaveCheckpointKeepsAUsersFolder(t *testing.T) {
	r := tinyRecipe(t, "demo")
	root, out := t.TempDir(), t.TempDir()
	for _, name := range []string{"step-00000002.tmp", "step-00000002.old"} {
		write(t, filepath.Join(out, "checkpoints", name, "notes.txt"), "mine")
	}
	runKeep(t, r, root, out, 2, 1, 3) // step 2 saved twice: every 1 step and at the end
	for _, name := range []string{"step-00000002.tmp", "step-00000002.old"} {
		if b, err := os.ReadFile(filepath.Join(out, "checkpoints", name, "notes.txt")); err != nil || string(b) != "mine" {
			t.Errorf("%s/notes.txt = %q, %v; want it kept", name, b, err)
		}
	}
	if got := checkpointSet(t, out); got != "00000002 00000001" {
		t.Errorf("checkpoints = %s; want 2 and 1", got)
	}
}

// TestSaveCheckpointRefusesToReplaceAUsersFolder: a folder named like a
// checkpoint (step-N) that crdgo did not write is not replaced when step N is
// saved: the save fails, naming it, and the folder stays.
func TestSaveCheckpointRefusesToReplaceAUsersFolder(t *testing.T) {
	r := tinyRecipe(t, "demo")
	root, out := t.TempDir(), t.TempDir()
	write(t, filepath.Join(out, "checkpoints", "step-00000001", "notes.txt"), "mine")
	log := zaptest.NewLogger(t)
	if _, err := PrepareData(context.Background(), root, r, nil, log); err != nil {
		t.Fatal(err)
	}
	tr, err := New(Config{Recipe: r, DataRoot: root, OutDir: out, MaxSteps: 2, CheckpointEvery: 1, Workers: 1},
		tensor.NewCPU(tensor.DefaultCPUKind(), 1), Extras{}, log)
	if err != nil {
		t.Fatal(err)
	}
	_, err = tr.Run(context.Background(), RunOptions{Output: NewRunFolder(out, nil, log)})
	if err == nil || !strings.Contains(err.Error(), "step-00000001 exists and holds files crdgo does not write") {
		t.Errorf("Run over a user's step-00000001 = %v; want an error naming it", err)
	}
	if b, err := os.ReadFile(filepath.Join(out, "checkpoints", "step-00000001", "notes.txt")); err != nil || string(b) != "mine" {
		t.Errorf("notes.txt = %q, %v; want it kept", b, err)
	}
}
