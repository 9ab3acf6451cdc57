package train

import (
	"context"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"go.uber.org/zap/zaptest"

	"github.com/crdgo/crdgo/crd/metric"
	"github.com/crdgo/crdgo/crd/model"
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
	sum, err := tr.Run(ctx, RunOptions{Output: NewRunFolder(out, nil, log)})
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

// TestPerceptualAndFIDPlumbing runs a few steps with a VGG16 and evaluates
// with an Inception, both with random weights: it checks the wiring (shapes,
// frozen networks, the evaluation path), not perceptual quality.
func TestPerceptualAndFIDPlumbing(t *testing.T) {
	if testing.Short() {
		t.Skip("Inception at 299×299 on the CPU: skipped with -short")
	}
	r := tinyRecipe(t, "demo")
	r.Data.Synth.NTest = 3
	root, out := t.TempDir(), t.TempDir()
	log := zaptest.NewLogger(t)
	ctx := context.Background()
	if _, err := PrepareData(ctx, root, r, nil, log); err != nil {
		t.Fatal(err)
	}
	be := tensor.NewCPU(tensor.DefaultCPUKind(), 2)
	vgg := model.NewVGG16(be)
	vgg.Params().Initialize(rand.New(rand.NewPCG(1, 1)))
	inc := model.NewInception(be)
	inc.Params().Initialize(rand.New(rand.NewPCG(2, 1)))
	tr, err := New(Config{Recipe: r, DataRoot: root, OutDir: out, MaxSteps: 2, Workers: 1}, be, Extras{VGG: vgg, Inception: inc}, log)
	if err != nil {
		t.Fatal(err)
	}
	sum, err := tr.Run(ctx, RunOptions{Output: NewRunFolder(out, nil, log)})
	if err != nil {
		t.Fatal(err)
	}
	e := sum.Eval
	if e == nil || math.IsNaN(e.Student.FID) || math.IsNaN(e.Teacher.FID) || e.Student.FID < 0 {
		t.Fatalf("eval = %+v; want FIDs", e)
	}
	// FID of the real images against their own statistics is ~0.
	src, err := LocalDataset(root, r)
	if err != nil {
		t.Fatal(err)
	}
	ds, err := OpenEvalSet(ctx, src, r, log)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := NewEvaluator(ctx, be, ds, r, inc, "", log)
	if err != nil {
		t.Fatal(err)
	}
	if err := ev.realFromImages(ctx); err != nil {
		t.Fatal(err)
	}
	fid, _, err := metric.FrechetDistance(*ev.real, *ev.real)
	trace := 0.0 // the scale of FID's terms: tr Σ (random weights give huge features)
	for i := range ev.real.Dim {
		trace += ev.real.Sigma[i*ev.real.Dim+i]
	}
	if err != nil || math.Abs(fid) > 1e-9*trace {
		t.Fatalf("FID(real, real) = %g (tr Σ = %g), %v; want ~0", fid, trace, err)
	}
}
