package model

import (
	"fmt"

	"github.com/crdgo/crdgo/crd/nn"
	"github.com/crdgo/crdgo/crd/tensor"
)

// ResnetConfig describes resnet_9blocks and mobile_resnet_9blocks (docs/crd.md §5.1,
// §5.2): NGF is the base width f, Blocks the number of residual blocks (9 in
// every recipe), Norm the generator's norm, Mobile selects depthwise-separable
// residual blocks.
type ResnetConfig struct {
	InC, OutC, NGF, Blocks int
	Norm                   Norm
	Mobile                 bool
}

// Validate reports every problem with c at once.
func (c ResnetConfig) Validate() error {
	var errs []error
	if c.InC <= 0 || c.OutC <= 0 {
		errs = append(errs, fmt.Errorf("channels in %d out %d: must be > 0", c.InC, c.OutC))
	}
	if c.NGF <= 0 {
		errs = append(errs, fmt.Errorf("ngf %d: must be > 0", c.NGF))
	}
	if c.Blocks < 0 {
		errs = append(errs, fmt.Errorf("blocks %d: must be ≥ 0", c.Blocks))
	}
	if _, err := ParseNorm(string(c.Norm)); err != nil {
		errs = append(errs, err)
	}
	return joinErrs("resnet generator", errs)
}

// ResnetGenerator is the CycleGAN/pix2pix ResNet generator, plain or mobile.
type ResnetGenerator struct {
	cfg                ResnetConfig
	ps                 *nn.ParamSet
	in, down1, down2   *nn.Conv2d
	n1, n2, n3, n4, n5 *normLayer
	blocks             []*resnetBlock
	up1, up2           *nn.ConvTranspose2d
	out                *nn.Conv2d
}

type resnetBlock struct {
	// Plain block: conv1, conv2. Mobile block: depthwise dw1 → IN → pointwise pw1,
	// and the same for the second separable conv.
	conv1, conv2 *nn.Conv2d
	dw1, pw1     *nn.Conv2d
	dw2, pw2     *nn.Conv2d
	n1, n2       *normLayer
}

// NewResnetGenerator registers every parameter under its state_dict name and
// packs the set. Values are zero until Params().Initialize or a weights load.
func NewResnetGenerator(be tensor.Backend, c ResnetConfig) (*ResnetGenerator, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	ps := nn.NewParamSet(be)
	f := c.NGF
	useBias := c.Norm == NormInstance
	g := &ResnetGenerator{cfg: c, ps: ps}
	g.in = nn.NewConv2d(ps, "model.1", c.InC, f, 7, 7, tensor.ConvParams{}, useBias, initStd)
	g.n1 = newNorm(ps, c.Norm, "model.2", f)
	g.down1 = nn.NewConv2d(ps, "model.4", f, 2*f, 3, 3, tensor.ConvParams{StrideH: 2, StrideW: 2, PadH: 1, PadW: 1}, useBias, initStd)
	g.n2 = newNorm(ps, c.Norm, "model.5", 2*f)
	g.down2 = nn.NewConv2d(ps, "model.7", 2*f, 4*f, 3, 3, tensor.ConvParams{StrideH: 2, StrideW: 2, PadH: 1, PadW: 1}, useBias, initStd)
	g.n3 = newNorm(ps, c.Norm, "model.8", 4*f)
	d := 4 * f
	for i := 0; i < c.Blocks; i++ {
		p := fmt.Sprintf("model.%d.conv_block", 10+i)
		b := &resnetBlock{}
		if c.Mobile {
			dwp := tensor.ConvParams{Groups: d}
			b.dw1 = nn.NewConv2d(ps, p+".1.conv.0", d, d, 3, 3, dwp, true, initStd)
			b.pw1 = nn.NewConv2d(ps, p+".1.conv.2", d, d, 1, 1, tensor.ConvParams{}, true, initStd)
			b.n1 = newNorm(ps, c.Norm, p+".2", d)
			b.dw2 = nn.NewConv2d(ps, p+".6.conv.0", d, d, 3, 3, dwp, true, initStd)
			b.pw2 = nn.NewConv2d(ps, p+".6.conv.2", d, d, 1, 1, tensor.ConvParams{}, true, initStd)
			b.n2 = newNorm(ps, c.Norm, p+".7", d)
		} else {
			b.conv1 = nn.NewConv2d(ps, p+".1", d, d, 3, 3, tensor.ConvParams{}, useBias, initStd)
			b.n1 = newNorm(ps, c.Norm, p+".2", d)
			b.conv2 = nn.NewConv2d(ps, p+".6", d, d, 3, 3, tensor.ConvParams{}, useBias, initStd)
			b.n2 = newNorm(ps, c.Norm, p+".7", d)
		}
		g.blocks = append(g.blocks, b)
	}
	k := 10 + c.Blocks
	up := tensor.ConvParams{StrideH: 2, StrideW: 2, PadH: 1, PadW: 1, OutPadH: 1, OutPadW: 1}
	g.up1 = nn.NewConvTranspose2d(ps, fmt.Sprintf("model.%d", k), 4*f, 2*f, 3, 3, up, useBias, initStd)
	g.n4 = newNorm(ps, c.Norm, fmt.Sprintf("model.%d", k+1), 2*f)
	g.up2 = nn.NewConvTranspose2d(ps, fmt.Sprintf("model.%d", k+3), 2*f, f, 3, 3, up, useBias, initStd)
	g.n5 = newNorm(ps, c.Norm, fmt.Sprintf("model.%d", k+4), f)
	g.out = nn.NewConv2d(ps, fmt.Sprintf("model.%d", k+7), f, c.OutC, 7, 7, tensor.ConvParams{}, true, initStd)
	ps.Pack()
	return g, nil
}

// Params returns the generator's parameters.
func (g *ResnetGenerator) Params() *nn.ParamSet { return g.ps }

// Config returns the generator's configuration.
func (g *ResnetGenerator) Config() ResnetConfig { return g.cfg }

// SetTraining switches batch norm layers between batch and running statistics.
func (g *ResnetGenerator) SetTraining(on bool) {
	for _, n := range []*normLayer{g.n1, g.n2, g.n3, g.n4, g.n5} {
		n.setTraining(on)
	}
	for _, b := range g.blocks {
		b.n1.setTraining(on)
		b.n2.setTraining(on)
	}
}

// Forward maps x (N,InC,H,W), H and W multiples of 4, to (N,OutC,H,W) in [−1,1].
func (g *ResnetGenerator) Forward(tp *nn.Tape, x *nn.Var) *nn.Var {
	if !g.cfg.Mobile {
		x = nn.Clamp(tp, x, -1, 1) // resnet_generator.py clamps its input
	}
	h := g.n1.forward(tp, g.in.Forward(tp, nn.ReflectPad2D(tp, x, 3)), relu)
	h = g.n2.forward(tp, g.down1.Forward(tp, h), relu)
	h = g.n3.forward(tp, g.down2.Forward(tp, h), relu)
	for _, b := range g.blocks {
		h = nn.Add(tp, h, b.forward(tp, h))
	}
	h = g.n4.forward(tp, g.up1.Forward(tp, h), relu)
	h = g.n5.forward(tp, g.up2.Forward(tp, h), relu)
	h = g.out.Forward(tp, nn.ReflectPad2D(tp, h, 3))
	return nn.Tanh(tp, h)
}

// forward is conv_block(x): the residual branch, without the skip.
func (b *resnetBlock) forward(tp *nn.Tape, x *nn.Var) *nn.Var {
	if b.conv1 != nil {
		h := b.n1.forward(tp, b.conv1.Forward(tp, nn.ReflectPad2D(tp, x, 1)), relu)
		return b.n2.forward(tp, b.conv2.Forward(tp, nn.ReflectPad2D(tp, h, 1)), noAct)
	}
	h := separable(tp, b.dw1, b.pw1, nn.ReflectPad2D(tp, x, 1))
	h = b.n1.forward(tp, h, relu)
	h = separable(tp, b.dw2, b.pw2, nn.ReflectPad2D(tp, h, 1))
	return b.n2.forward(tp, h, noAct)
}

// separable is SeparableConv2d: depthwise conv, InstanceNorm (always, affine
// off), pointwise conv (docs/crd.md §5.2).
func separable(tp *nn.Tape, dw, pw *nn.Conv2d, x *nn.Var) *nn.Var {
	h := dw.Forward(tp, x)
	h = nn.InstanceNorm(tp, h, nil, nil, 1e-5, noAct)
	return pw.Forward(tp, h)
}
