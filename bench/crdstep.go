package bench

import (
	"context"
	_ "embed"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"

	"go.uber.org/zap"

	"github.com/crdgo/crdgo/crd/data"
	"github.com/crdgo/crdgo/crd/tensor"
	"github.com/crdgo/crdgo/crd/train"
)

//go:embed torch_crd_step.py
var torchCRDStepPy []byte

// CRDStepConfig is one configuration of `crdgo bench step`.
type CRDStepConfig struct {
	Recipe                string
	Size, Batch, NGF, NDF int
	Blocks, Patch         int
}

// CRDStep times the trainer's own pix2pix CRD step (docs/crd.md §4.1: D, teacher,
// student; no VGG, no student GAN term) on a fixed random batch.
type CRDStep struct {
	tr    *train.Trainer
	batch data.Batch
}

// NewCRDStep builds a trainer from the recipe, resized to the configuration:
// teacher mobile_resnet ngf N, student ngf N/4.
func NewCRDStep(be tensor.Backend, c CRDStepConfig) (*CRDStep, error) {
	r, err := train.LoadRecipe(c.Recipe)
	if err != nil {
		return nil, err
	}
	if r.Mode != train.Pix2Pix {
		return nil, fmt.Errorf("bench step: recipe %s is %s; the benchmark times the pix2pix step", r.Name, r.Mode)
	}
	r.Data.CropSize, r.Data.LoadSize = c.Size, c.Size
	r.Teacher.NGF, r.Student.NGF = c.NGF, max(1, c.NGF/4)
	r.Teacher.Blocks, r.Student.Blocks = c.Blocks, c.Blocks
	r.Discriminator.NDF = c.NDF
	r.Loss.Patch = c.Patch
	r.Loss.StudentGAN = 0
	r.Schedule.Batch = c.Batch
	r.Data.Synth = nil
	if err := r.Validate(); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "crdgo-bench-step-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	tr, err := train.New(train.Config{Recipe: r, DataRoot: dir, OutDir: filepath.Join(dir, "out")}, be, train.Extras{}, zap.NewNop())
	if err != nil {
		return nil, err
	}
	n := c.Batch * 3 * c.Size * c.Size
	b := data.Batch{A: make([]float32, n), B: make([]float32, n), N: c.Batch, C: 3, H: c.Size, W: c.Size}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range b.A {
		b.A[i], b.B[i] = 2*rng.Float32()-1, 2*rng.Float32()-1
	}
	return &CRDStep{tr: tr, batch: b}, nil
}

// Step runs one training step.
func (s *CRDStep) Step() error {
	_, err := s.tr.Step(context.Background(), &s.batch, nil)
	return err
}

// WriteTorchCRDScript writes the embedded PyTorch CRD step (and the step
// script it imports) into dir and returns its path.
func WriteTorchCRDScript(dir string) (string, error) {
	if _, err := WriteTorchScript(dir); err != nil {
		return "", err
	}
	p := filepath.Join(dir, "torch_crd_step.py")
	return p, os.WriteFile(p, torchCRDStepPy, 0o644)
}
