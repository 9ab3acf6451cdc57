package main

import (
	"bytes"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/crdgo/crdgo/crd/nn"
	"github.com/crdgo/crdgo/crd/weights"
)

// TestTrainNodes is the data-parallel CLI: --nodes 2 and --nodes 1 write
// checkpoints whose every tensor agrees within Adam's bound (the tolerance of
// free-running training, node's equivalence test explains why), --nodes 3
// runs a global batch of 4 in uneven parts, and each transport works.
func TestTrainNodes(t *testing.T) {
	dir := t.TempDir()
	recipe := filepath.Join(dir, "tiny.yaml")
	if err := os.WriteFile(recipe, []byte(tinyRecipeYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	const steps = 6
	train := func(out string, extra ...string) string {
		args := append([]string{"train", "--recipe", recipe, "--data-root", data, "--out", filepath.Join(dir, out), "--no-progress",
			"--max-steps", "6", "--checkpoint-every", "6", "--threads", "2"}, extra...)
		runCLI(t, args...)
		return filepath.Join(dir, out, "checkpoints", "step-00000006")
	}
	one := train("one", "--nodes", "1")
	for _, run := range [][]string{
		{"--nodes", "2"},
		{"--nodes", "3"},
		{"--nodes", "2", "--transport", "mem"},
		{"--nodes", "2", "--transport", "tcp"},
	} {
		got := train(strings.Join(run, "_"), run...)
		bound := nn.AdamBound(2e-4, 0.5, 0.999, steps)
		for _, f := range []string{"teacher_G", "teacher_D", "student_G"} {
			a := readTensors(t, filepath.Join(one, f+".safetensors"))
			b := readTensors(t, filepath.Join(got, f+".safetensors"))
			for name, x := range a {
				y := b[name]
				if len(y) != len(x) {
					t.Fatalf("%v: %s %s: %d values; one process has %d", run, f, name, len(y), len(x))
				}
				for i := range x {
					if d := math.Abs(float64(x[i]) - float64(y[i])); d > bound {
						t.Fatalf("%v: %s %s[%d] = %g; --nodes 1 has %g: |Δ| %.2g > Adam's bound %.2g after %d steps", run, f, name, i, y[i], x[i], d, bound, steps)
					}
				}
			}
		}
	}
}

func readTensors(t *testing.T, path string) map[string][]float32 {
	t.Helper()
	ts, _, err := weights.ReadSafetensorsFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]float32{}
	for _, x := range ts {
		if x.F32 != nil {
			out[x.Name] = x.F32
		}
	}
	return out
}

// TestTrainNodesFlags: each bad data-parallel flag is one line naming the
// flag and what it accepts.
func TestTrainNodesFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--nodes", "0"}, "--nodes 0: want 1 to 4"},
		{[]string{"--nodes", "5"}, "--nodes 5: more workers than the global batch of 4 examples: want 1 to 4, or raise --batch"},
		{[]string{"--nodes", "3", "--batch", "2"}, "--nodes 3: more workers than the global batch of 2 examples"},
		{[]string{"--transport", "udp"}, `--transport "udp": want one of nats, mem, tcp`},
		{[]string{"--keep", "0"}, "--keep 0: want ≥ 1"},
	} {
		root := newRootCmd()
		root.SetOut(&bytes.Buffer{})
		root.SetErr(&bytes.Buffer{})
		root.SetArgs(append([]string{"--log-level", "error", "train", "--recipe", "demo", "--data-root", t.TempDir(), "--out", t.TempDir()}, tc.args...))
		err := root.Execute()
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("train %v: err = %v; want one line containing %q", tc.args, err, tc.want)
		}
	}
}
