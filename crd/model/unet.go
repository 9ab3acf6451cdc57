package model

import (
	"fmt"
	"strings"

	"github.com/crdgo/crdgo/crd/nn"
	"github.com/crdgo/crdgo/crd/tensor"
)

// UnetConfig describes the pix2pix U-Net generator (docs/crd.md §5.3): Downs
// down-samplings by 2 (num_downs; 8 for unet_256, 6 for 64×64 images), base
// width NGF, Norm batch (the U-Net recipe) or instance. Dropout is 0 in every
// recipe, so the generator has none (use_dropout = False).
type UnetConfig struct {
	InC, OutC, NGF, Downs int
	Norm                  Norm
}

// Validate reports every problem with c at once.
func (c UnetConfig) Validate() error {
	var errs []error
	if c.InC <= 0 || c.OutC <= 0 {
		errs = append(errs, fmt.Errorf("channels in %d out %d: must be > 0", c.InC, c.OutC))
	}
	if c.NGF <= 0 {
		errs = append(errs, fmt.Errorf("ngf %d: must be > 0", c.NGF))
	}
	if c.Downs < 5 || c.Downs > maxDowns {
		errs = append(errs, fmt.Errorf("downs %d: must be in [5, %d] (UnetGenerator's num_downs)", c.Downs, maxDowns))
	}
	if _, err := ParseNorm(string(c.Norm)); err != nil {
		errs = append(errs, err)
	}
	return joinErrs("unet generator", errs)
}

const maxDowns = 12

// UnetGenerator is UnetGenerator of the reference code: nested
// UnetSkipConnectionBlocks, level 0 outermost, level Downs−1 innermost.
type UnetGenerator struct {
	cfg    UnetConfig
	ps     *nn.ParamSet
	levels []*unetLevel
}

// unetLevel is one UnetSkipConnectionBlock without its submodule.
type unetLevel struct {
	down     *nn.Conv2d
	downNorm *normLayer // nil for the outermost and innermost levels
	up       *nn.ConvTranspose2d
	upNorm   *normLayer // nil for the outermost level
}

// NewUnetGenerator registers every parameter under its state_dict name
// (model.model.1.model.3…, docs/crd.md §5.3) in the order PyTorch lists them and
// packs the set.
func NewUnetGenerator(be tensor.Backend, c UnetConfig) (*UnetGenerator, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	ps := nn.NewParamSet(be)
	g := &UnetGenerator{cfg: c, ps: ps, levels: make([]*unetLevel, c.Downs)}
	f := c.NGF
	useBias := c.Norm == NormInstance
	k4 := tensor.ConvParams{StrideH: 2, StrideW: 2, PadH: 1, PadW: 1}
	// Channel plan (outer, inner) from the outermost level inwards.
	outer, inner := make([]int, c.Downs), make([]int, c.Downs)
	for l := range c.Downs {
		outer[l], inner[l] = 8*f, 8*f
		switch l {
		case 0:
			outer[l], inner[l] = c.InC, f
		case 1, 2, 3:
			outer[l], inner[l] = f<<(l-1), f<<l
		}
	}
	// PyTorch registers a block's modules in its Sequential's order, so the
	// down path of a level comes before its submodule and the up path after.
	var build func(l int)
	build = func(l int) {
		p := unetPrefix(l)
		lv := &unetLevel{}
		g.levels[l] = lv
		switch {
		case l == 0:
			lv.down = nn.NewConv2d(ps, p+".0", c.InC, f, 4, 4, k4, useBias, initStd)
			build(1)
			lv.up = nn.NewConvTranspose2d(ps, p+".3", 2*f, c.OutC, 4, 4, k4, true, initStd)
		case l == c.Downs-1:
			lv.down = nn.NewConv2d(ps, p+".1", outer[l], inner[l], 4, 4, k4, useBias, initStd)
			lv.up = nn.NewConvTranspose2d(ps, p+".3", inner[l], outer[l], 4, 4, k4, useBias, initStd)
			lv.upNorm = newNorm(ps, c.Norm, p+".4", outer[l])
		default:
			lv.down = nn.NewConv2d(ps, p+".1", outer[l], inner[l], 4, 4, k4, useBias, initStd)
			lv.downNorm = newNorm(ps, c.Norm, p+".2", inner[l])
			build(l + 1)
			lv.up = nn.NewConvTranspose2d(ps, p+".5", 2*inner[l], outer[l], 4, 4, k4, useBias, initStd)
			lv.upNorm = newNorm(ps, c.Norm, p+".6", outer[l])
		}
	}
	build(0)
	ps.Pack()
	return g, nil
}

// unetPrefix is the state_dict prefix of level l's Sequential: model.model,
// then .1 (the outermost block's submodule) and .model.3 for each level deeper.
func unetPrefix(l int) string {
	var b strings.Builder
	b.WriteString("model.model")
	for i := 1; i <= l; i++ {
		if i == 1 {
			b.WriteString(".1.model")
		} else {
			b.WriteString(".3.model")
		}
	}
	return b.String()
}

// Params returns the generator's parameters.
func (g *UnetGenerator) Params() *nn.ParamSet { return g.ps }

// Config returns the generator's configuration.
func (g *UnetGenerator) Config() UnetConfig { return g.cfg }

// SetTraining switches batch norm layers between batch and running statistics.
func (g *UnetGenerator) SetTraining(on bool) {
	for _, lv := range g.levels {
		for _, n := range []*normLayer{lv.downNorm, lv.upNorm} {
			if n != nil {
				n.setTraining(on)
			}
		}
	}
}

// Forward maps x (N,InC,H,W), H and W multiples of 2^Downs, to (N,OutC,H,W)
// in [−1,1].
func (g *UnetGenerator) Forward(tp *nn.Tape, x *nn.Var) *nn.Var {
	return g.level(tp, 0, x)
}

// level is UnetSkipConnectionBlock.forward of level l. The reference's
// down-path LeakyReLU is in-place, so its skip half holds LReLU(x); that half
// only feeds the parent's ReLU and ReLU∘LReLU = ReLU (values and derivative),
// so concatenating x itself is the same network (docs/crd.md §5.3).
func (g *UnetGenerator) level(tp *nn.Tape, l int, x *nn.Var) *nn.Var {
	lv := g.levels[l]
	if l == 0 {
		h := g.level(tp, 1, lv.down.Forward(tp, x))
		h = lv.up.Forward(tp, nn.ReLU(tp, h))
		return nn.Tanh(tp, h)
	}
	h := lv.down.Forward(tp, nn.LeakyReLU(tp, x, 0.2))
	if l == g.cfg.Downs-1 {
		h = nn.ReLU(tp, h)
	} else {
		h = lv.downNorm.forward(tp, h, noAct)
		h = nn.ReLU(tp, g.level(tp, l+1, h))
	}
	h = lv.upNorm.forward(tp, lv.up.Forward(tp, h), noAct)
	return nn.Concat(tp, 1, x, h)
}
