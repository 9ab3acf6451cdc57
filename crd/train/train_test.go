package train

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"go.uber.org/zap/zaptest"

	"github.com/crdgo/crdgo/crd/tensor"
)

// tinyRecipe is a recipe small enough for tests: 32×32 synthetic data, narrow
// networks, a few steps.
func tinyRecipe(t *testing.T, name string) Recipe {
	t.Helper()
	r, err := LoadRecipe(name)
	if err != nil {
		t.Fatal(err)
	}
	r.Data.CropSize, r.Data.LoadSize = 32, 36
	r.Data.Synth.Size, r.Data.Synth.N, r.Data.Synth.NTest = 32, 24, 6
	r.Teacher.NGF, r.Teacher.Blocks = 4, 2
	r.Student.NGF, r.Student.Blocks = 2, 2
	r.Discriminator.NDF = 8
	r.Loss.Patch = 8
	if err := r.Validate(); err != nil {
		t.Fatal(err)
	}
	return r
}

func runTiny(t *testing.T, r Recipe, root, out string, maxSteps int) (*Trainer, Summary) {
	t.Helper()
	log := zaptest.NewLogger(t)
	ctx := context.Background()
	if _, err := PrepareData(ctx, root, r, nil, log); err != nil {
		t.Fatal(err)
	}
	tr, err := New(Config{Recipe: r, DataRoot: root, OutDir: out, MaxSteps: maxSteps, LogEvery: 1, SampleEvery: 5, CheckpointEvery: 4, Workers: 1},
		tensor.NewCPU(tensor.DefaultCPUKind(), 2), Extras{}, log)
	if err != nil {
		t.Fatal(err)
	}
	if cp, err := LatestCheckpoint(filepath.Join(out, "checkpoints"), log); err != nil {
		t.Fatal(err)
	} else if cp != "" {
		if err := tr.LoadCheckpoint(cp); err != nil {
			t.Fatal(err)
		}
	}
	sum, err := tr.Run(ctx, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return tr, sum
}

func TestPix2PixRunsAndWritesOutputs(t *testing.T) {
	r := tinyRecipe(t, "demo")
	root, out := t.TempDir(), t.TempDir()
	_, sum := runTiny(t, r, root, out, 9)
	if sum.Steps != 9 {
		t.Fatalf("steps = %d; want 9", sum.Steps)
	}
	for _, f := range []string{"metrics.jsonl", "loss.png", "samples/latest.png"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Errorf("missing output: %v", err)
		}
	}
	if sum.Eval == nil || !(sum.Eval.Student.PSNR > 0) {
		t.Errorf("eval = %+v; want paired metrics", sum.Eval)
	}
}

// TestResumeIsBitExact trains 9 steps in one go, and 5 steps then a resume
// from the step-4 checkpoint (a "killed" run), and wants identical bits in
// every network and optimizer.
func TestResumeIsBitExact(t *testing.T) {
	for _, name := range []string{"demo", "demo-cyclegan"} {
		t.Run(name, func(t *testing.T) {
			r := tinyRecipe(t, name)
			if r.Mode == CycleGAN {
				r.Schedule.Epochs, r.Schedule.DecayEpochs, r.Schedule.SaveEpochFreq = 2, 1, 1
			}
			root := t.TempDir()
			straight, _ := runTiny(t, r, root, t.TempDir(), 61)

			out := t.TempDir()
			runTiny(t, r, root, out, 6) // checkpoints at 4 and at the end (6)
			if err := os.RemoveAll(filepath.Join(out, "checkpoints", "step-00000006")); err != nil {
				t.Fatal(err)
			}
			resumed, sum := runTiny(t, r, root, out, 61)
			if sum.Steps != straight.State().Step || sum.Steps <= 6 {
				t.Fatalf("resumed run ended at step %d; the straight one at %d", sum.Steps, straight.State().Step)
			}
			if straight.State() != resumed.State() {
				t.Errorf("state: straight %+v, resumed %+v", straight.State(), resumed.State())
			}
			for i, nf := range straight.netFiles() {
				a, b := nf.net.Params().Values().Data, resumed.netFiles()[i].net.Params().Values().Data
				for j := range a {
					if a[j] != b[j] {
						t.Fatalf("%s: parameter element %d: straight %v, resumed %v", nf.name, j, a[j], b[j])
					}
				}
			}
		})
	}
}
