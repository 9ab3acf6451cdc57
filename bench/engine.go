// Package bench runs crdgo's workloads beside the same work in PyTorch (the
// scripts in this folder) and reports the two side by side: ms per step, the
// ratio, and peak memory, each configuration in a fresh process.
package bench

import (
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/crdgo/crdgo/crd/model"
	"github.com/crdgo/crdgo/crd/nn"
	"github.com/crdgo/crdgo/crd/tensor"
)

// GANConfig is one configuration of the engine benchmark's GAN step.
type GANConfig struct {
	Size, Batch, NGF, NDF, Blocks int
}

// GANStep is one training step of a small pix2pix-style GAN: mobile ResNet
// generator, 3-layer PatchGAN, LSGAN + 10·L1, Adam — the same step as
// bench/torch_step.py.
type GANStep struct {
	be           tensor.Backend
	g            *model.ResnetGenerator
	d            *model.PatchGAN
	optG, optD   *nn.Adam
	tp           *nn.Tape
	x, y         []float32
	cfg          GANConfig
	LossD, LossG float32
}

// NewGANStep builds the networks with seeded weights and fixed random data.
func NewGANStep(be tensor.Backend, c GANConfig) (*GANStep, error) {
	g, err := model.NewResnetGenerator(be, model.ResnetConfig{InC: 3, OutC: 3, NGF: c.NGF, Blocks: c.Blocks, Norm: model.NormInstance, Mobile: true})
	if err != nil {
		return nil, err
	}
	d, err := model.NewPatchGAN(be, model.PatchGANConfig{InC: 3, NDF: c.NDF, Layers: 3, Norm: model.NormInstance})
	if err != nil {
		return nil, err
	}
	rng := rand.New(rand.NewPCG(1, 2))
	g.Params().Initialize(rng)
	d.Params().Initialize(rng)
	n := c.Batch * 3 * c.Size * c.Size
	s := &GANStep{
		be: be, g: g, d: d, cfg: c, tp: nn.NewTape(be),
		optG: nn.NewAdam(g.Params(), 2e-4, 0.5, 0.999),
		optD: nn.NewAdam(d.Params(), 2e-4, 0.5, 0.999),
		x:    make([]float32, n), y: make([]float32, n),
	}
	for i := range s.x {
		s.x[i] = 2*rng.Float32() - 1
		s.y[i] = 2*rng.Float32() - 1
	}
	return s, nil
}

// Step runs one training step: G forward, D step, G step through the updated D.
func (s *GANStep) Step() {
	tp := s.tp
	tp.Reset()
	c := s.cfg
	x := tp.Input(s.x, c.Batch, 3, c.Size, c.Size)
	y := tp.Input(s.y, c.Batch, 3, c.Size, c.Size)

	fake := s.g.Forward(tp, x)

	s.d.Params().SetRequiresGrad(true)
	s.d.Params().ZeroGrad()
	// Reals and fakes go through D as one batch: its norms are per sample
	// (instance norm), so this is the same math as two passes, in half the
	// GEMM calls with twice the inner dimension for the weight gradients.
	pr, pf := model.PairForward(tp, s.d, y, nn.Detach(fake))
	lossD := nn.Scale(tp, nn.Add(tp, nn.MSEToConst(tp, pr, 1), nn.MSEToConst(tp, pf, 0)), 0.5)
	tp.Backward(lossD)
	s.optD.Step()

	s.d.Params().SetRequiresGrad(false)
	s.g.Params().ZeroGrad()
	lossG := nn.Add(tp, nn.MSEToConst(tp, s.d.Forward(tp, fake), 1), nn.Scale(tp, nn.L1Loss(tp, fake, y), 10))
	tp.Backward(lossG)
	s.optG.Step()

	var v [1]float32
	s.be.Download(v[:], lossD.Value)
	s.LossD = v[0]
	s.be.Download(v[:], lossG.Value)
	s.LossG = v[0]
}

// TimeSteps runs warmup steps, then returns the duration of each of n steps.
func TimeSteps(step func(), warmup, n int) []time.Duration {
	for i := 0; i < warmup; i++ {
		step()
	}
	out := make([]time.Duration, n)
	for i := range out {
		t0 := time.Now()
		step()
		out[i] = time.Since(t0)
	}
	return out
}

func (c GANConfig) String() string {
	return fmt.Sprintf("%d×%d b%d ngf%d", c.Size, c.Size, c.Batch, c.NGF)
}
