package train

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/crdgo/crdgo/crd/data"
	"github.com/crdgo/crdgo/crd/nn"
	"github.com/crdgo/crdgo/crd/tensor"
)

// TestTranslateMemoryMatchesTheArena: the estimate's activations, from a
// forward pass on the shape-only backend, are exactly what the CPU backend's
// arena holds after the real pass.
func TestTranslateMemoryMatchesTheArena(t *testing.T) {
	r := tinyRecipe(t, "demo")
	be := tensor.NewCPU(tensor.DefaultCPUKind(), 1)
	for _, which := range []Generator{StudentGenerator, TeacherGenerator} {
		for _, size := range []int{32, 48} {
			est, err := TranslateMemory(r.Net(which), size, 0)
			if err != nil {
				t.Fatal(err)
			}
			g, err := buildNetwork(be, r.Net(which), 3, 3)
			if err != nil {
				t.Fatal(err)
			}
			g.SetTraining(false)
			tp := nn.NewTape(be)
			Translate(tp, g, []data.Example{{A: make([]float32, 3*size*size)}})
			if got := tp.Arena().Bytes(); got != est.Activations {
				t.Errorf("%s at %d²: arena holds %d bytes; estimate says %d", which, size, got, est.Activations)
			}
		}
	}
}

// TestTranslateFilesRefusesWhatDoesNotFit reproduces issue 19's sixth defect:
// translate --size 8192 died with Go's "out of memory" and a page of goroutine
// traces. It is now refused before anything is allocated, with both numbers,
// and nothing is written.
func TestTranslateFilesRefusesWhatDoesNotFit(t *testing.T) {
	r := tinyRecipe(t, "demo")
	root, out := t.TempDir(), t.TempDir()
	runKeep(t, r, root, out, 2, 2, 1)
	cp := filepath.Join(out, "checkpoints", "step-00000002")
	in := filepath.Join(root, r.Data.Dataset, "val", "0000.png")
	dst := filepath.Join(t.TempDir(), "out.png")
	be := tensor.NewCPU(tensor.DefaultCPUKind(), 1)
	ctx := context.Background()
	_, err := TranslateFiles(ctx, be, cp, []string{in}, []string{dst},
		TranslateOptions{Net: StudentGenerator, Size: 8192, MaxMemory: 1 << 30, MemoryFrom: "the test's budget"}, nil)
	for _, want := range []string{"8192×8192", "needs about", "1024 MiB is available (the test's budget)", "--size"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("TranslateFiles(size 8192, 1 GiB) = %v; want an error containing %q", err, want)
		}
	}
	if _, err := os.Stat(dst); err == nil {
		t.Errorf("a refused translation wrote %s", dst)
	}
	_, err = TranslateFiles(ctx, be, cp, []string{in}, []string{dst}, TranslateOptions{Net: StudentGenerator, Size: 30}, nil)
	if err == nil || !strings.Contains(err.Error(), "--size 30") || !strings.Contains(err.Error(), "multiple of 4") {
		t.Errorf("TranslateFiles(size 30) = %v; want an error naming --size and the multiple the generator needs", err)
	}
	var got []Translated
	sum, err := TranslateFiles(ctx, be, cp, []string{in}, []string{dst},
		TranslateOptions{Net: StudentGenerator, Size: 64, MaxMemory: 1 << 30}, func(tr Translated) { got = append(got, tr) })
	if err != nil {
		t.Fatalf("TranslateFiles(size 64) = %v", err)
	}
	if w, h, err := data.ImageDims(dst); err != nil || w != 64 || h != 64 || len(got) != 1 || sum.Images != 1 {
		t.Errorf("output %d×%d (%v), %d callbacks, summary %+v; want a 64×64 image and one callback", w, h, err, len(got), sum)
	}
}
