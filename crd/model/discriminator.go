package model

import (
	"errors"
	"fmt"

	"github.com/crdgo/crdgo/crd/nn"
	"github.com/crdgo/crdgo/crd/tensor"
)

// PatchGANConfig describes NLayerDiscriminator (docs/crd.md §5.4).
type PatchGANConfig struct {
	InC, NDF, Layers int
	Norm             Norm
}

// Validate reports every problem with c at once.
func (c PatchGANConfig) Validate() error {
	var errs []error
	if c.InC <= 0 || c.NDF <= 0 || c.Layers < 1 {
		errs = append(errs, fmt.Errorf("in %d ndf %d layers %d: in and ndf must be > 0, layers ≥ 1", c.InC, c.NDF, c.Layers))
	}
	if _, err := ParseNorm(string(c.Norm)); err != nil {
		errs = append(errs, err)
	}
	return joinErrs("patchgan", errs)
}

func joinErrs(what string, errs []error) error {
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("%s: %w", what, errors.Join(errs...))
}

// PatchGAN is the pix2pix/CycleGAN NLayerDiscriminator: 4×4 convs, LeakyReLU
// 0.2, a 1-channel map of patch logits.
type PatchGAN struct {
	cfg   PatchGANConfig
	ps    *nn.ParamSet
	convs []*nn.Conv2d
	norms []*normLayer // nil for the first and last conv
}

// NewPatchGAN registers model.{0,2,5,8,…} convs and their norms and packs the set.
func NewPatchGAN(be tensor.Backend, c PatchGANConfig) (*PatchGAN, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	ps := nn.NewParamSet(be)
	useBias := c.Norm == NormInstance
	d := &PatchGAN{cfg: c, ps: ps}
	s2 := tensor.ConvParams{StrideH: 2, StrideW: 2, PadH: 1, PadW: 1}
	s1 := tensor.ConvParams{PadH: 1, PadW: 1}
	d.convs = append(d.convs, nn.NewConv2d(ps, "model.0", c.InC, c.NDF, 4, 4, s2, true, initStd))
	d.norms = append(d.norms, nil)
	idx, mult := 2, 1
	for n := 1; n <= c.Layers; n++ {
		prev := mult
		mult = min(1<<n, 8)
		p := s2
		if n == c.Layers {
			p = s1
		}
		d.convs = append(d.convs, nn.NewConv2d(ps, fmt.Sprintf("model.%d", idx), c.NDF*prev, c.NDF*mult, 4, 4, p, useBias, initStd))
		d.norms = append(d.norms, newNorm(ps, c.Norm, fmt.Sprintf("model.%d", idx+1), c.NDF*mult))
		idx += 3
	}
	d.convs = append(d.convs, nn.NewConv2d(ps, fmt.Sprintf("model.%d", idx), c.NDF*mult, 1, 4, 4, s1, true, initStd))
	d.norms = append(d.norms, nil)
	ps.Pack()
	return d, nil
}

// Params returns the discriminator's parameters.
func (d *PatchGAN) Params() *nn.ParamSet { return d.ps }

// Config returns the discriminator's configuration.
func (d *PatchGAN) Config() PatchGANConfig { return d.cfg }

// SetTraining switches batch norm layers.
func (d *PatchGAN) SetTraining(on bool) {
	for _, n := range d.norms {
		if n != nil {
			n.setTraining(on)
		}
	}
}

// Forward maps x (N,InC,H,W) to the patch logits (N,1,H',W').
func (d *PatchGAN) Forward(tp *nn.Tape, x *nn.Var) *nn.Var {
	h := x
	last := len(d.convs) - 1
	for i, c := range d.convs {
		h = c.Forward(tp, h)
		switch {
		case i == 0:
			h = nn.LeakyReLU(tp, h, 0.2)
		case i < last:
			h = d.norms[i].forward(tp, h, lrelu02)
		}
	}
	return h
}

// PairForward runs d on a and on b (same shapes) and returns both outputs.
// A network whose layers treat samples independently (every norm an instance
// norm) takes them as one batch of 2N — the same values in half the GEMM calls;
// one with batch norm (whose training statistics depend on the batch) gets two
// passes, b after a.
func PairForward(tp *nn.Tape, d Network, a, b *nn.Var) (*nn.Var, *nn.Var) {
	if p, ok := d.(*PatchGAN); !ok || p.cfg.Norm != NormInstance {
		return d.Forward(tp, a), d.Forward(tp, b)
	}
	n := a.Value.Shape[0]
	out := d.Forward(tp, nn.Concat(tp, 0, a, b))
	return nn.Slice(tp, out, 0, 0, n), nn.Slice(tp, out, 0, n, n)
}
