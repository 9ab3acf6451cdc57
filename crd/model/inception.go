package model

import (
	"fmt"

	"github.com/crdgo/crdgo/crd/nn"
	"github.com/crdgo/crdgo/crd/tensor"
)

// Inception is Inception-v3 as pytorch-fid computes FID with it (docs/crd.md §5.7):
// torchvision's Inception3 with the FIDInceptionA/C/E_1/E_2 patches of
// pytorch-fid, up to the 2048-d average pool. Every BasicConv2d is a bias-free
// conv, BatchNorm2d(eps 0.001) and ReLU; the module names are torchvision's
// (Conv2d_1a_3x3.conv.weight, Mixed_5b.branch_pool.bn.running_mean, …). The
// file's fc.{weight,bias} (1008 classes) are not part of this network.
//
// A new Inception computes in evaluation mode (running statistics), as FID
// does; SetTraining(true) switches its batch norms to batch statistics.
type Inception struct {
	ps     *nn.ParamSet
	stem   []stemLayer
	blocks []*inceptionBlock
	bns    []*nn.BatchNorm2d
}

// InceptionSize is the side of the square images Inception sees: inputs are
// resized to it.
const InceptionSize = 299

// InceptionDim is the length of the pooled feature vector.
const InceptionDim = 2048

// basicConv is torchvision's BasicConv2d: conv (no bias) → BN(eps 1e-3) → ReLU.
type basicConv struct {
	conv *nn.Conv2d
	bn   *nn.BatchNorm2d
}

func (b *basicConv) forward(tp *nn.Tape, x *nn.Var) *nn.Var {
	return b.bn.Forward(tp, b.conv.Forward(tp, x), relu)
}

// stemLayer is a BasicConv2d or, when conv is nil, a 3×3 stride-2 max-pool.
type stemLayer struct{ conv *basicConv }

// inceptionBranch is one branch of a mixed block: an optional pooling of the
// block input, a chain of convs, and optionally two convs applied to the
// chain's output whose results are concatenated (InceptionE's 1×3 and 3×1).
type inceptionBranch struct {
	pool  *tensor.PoolParams
	max   bool // max-pool instead of average pool
	convs []*basicConv
	split [2]*basicConv
}

type inceptionBlock struct {
	name     string
	branches []*inceptionBranch
}

// convSpec is one BasicConv2d of a branch: name suffix, output channels,
// kernel, stride and padding.
type convSpec struct {
	name       string
	cout       int
	kh, kw, s  int
	padH, padW int
}

func cs(name string, cout, k int) convSpec { return convSpec{name, cout, k, k, 1, k / 2, k / 2} }

// NewInception registers every conv and batch norm under torchvision's names,
// in torchvision's order, and packs the set. Random initialisation (conv
// weights N(0, 0.1²), BN weight 1 ± 0.02, zero bias) is for tests: FID loads
// pt_inception-2015-12-05-6726825d.pth (LoadInception).
func NewInception(be tensor.Backend) *Inception {
	ps := nn.NewParamSet(be)
	m := &Inception{ps: ps}
	bc := func(prefix string, cin int, c convSpec) *basicConv {
		b := &basicConv{
			conv: nn.NewConv2d(ps, prefix+".conv", cin, c.cout, c.kh, c.kw,
				tensor.ConvParams{StrideH: c.s, StrideW: c.s, PadH: c.padH, PadW: c.padW}, false, 0.1),
			bn: nn.NewBatchNorm2d(ps, prefix+".bn", c.cout, true),
		}
		b.bn.Eps = 1e-3
		b.bn.Training = false
		m.bns = append(m.bns, b.bn)
		return b
	}
	// Block 0 and block 1 of pytorch-fid: the stem.
	stem := []struct {
		name string
		c    convSpec
	}{
		{"Conv2d_1a_3x3", convSpec{"", 32, 3, 3, 2, 0, 0}},
		{"Conv2d_2a_3x3", convSpec{"", 32, 3, 3, 1, 0, 0}},
		{"Conv2d_2b_3x3", convSpec{"", 64, 3, 3, 1, 1, 1}},
		{"", convSpec{}}, // maxpool1
		{"Conv2d_3b_1x1", convSpec{"", 80, 1, 1, 1, 0, 0}},
		{"Conv2d_4a_3x3", convSpec{"", 192, 3, 3, 1, 0, 0}},
		{"", convSpec{}}, // maxpool2
	}
	cin := 3
	for _, l := range stem {
		if l.name == "" {
			m.stem = append(m.stem, stemLayer{})
			continue
		}
		m.stem = append(m.stem, stemLayer{conv: bc(l.name, cin, l.c)})
		cin = l.c.cout
	}

	// FIDInceptionA/C/E_1 average-pool without counting the padding (the
	// TensorFlow behaviour pytorch-fid patches in); FIDInceptionE_2 max-pools.
	avg := &tensor.PoolParams{KH: 3, KW: 3, StrideH: 1, StrideW: 1, PadH: 1, PadW: 1}
	maxS1 := &tensor.PoolParams{KH: 3, KW: 3, StrideH: 1, StrideW: 1, PadH: 1, PadW: 1}
	maxS2 := &tensor.PoolParams{KH: 3, KW: 3, StrideH: 2, StrideW: 2}
	blockA := func(name string, cin, pool int) int {
		return m.addBlock(name, cin, bc,
			branchDef{convs: []convSpec{cs("branch1x1", 64, 1)}},
			branchDef{convs: []convSpec{cs("branch5x5_1", 48, 1), cs("branch5x5_2", 64, 5)}},
			branchDef{convs: []convSpec{cs("branch3x3dbl_1", 64, 1), cs("branch3x3dbl_2", 96, 3), cs("branch3x3dbl_3", 96, 3)}},
			branchDef{pool: avg, convs: []convSpec{cs("branch_pool", pool, 1)}})
	}
	blockC := func(name string, cin, c7 int) int {
		return m.addBlock(name, cin, bc,
			branchDef{convs: []convSpec{cs("branch1x1", 192, 1)}},
			branchDef{convs: []convSpec{cs("branch7x7_1", c7, 1), c17("branch7x7_2", c7), c71("branch7x7_3", 192)}},
			branchDef{convs: []convSpec{cs("branch7x7dbl_1", c7, 1), c71("branch7x7dbl_2", c7), c17("branch7x7dbl_3", c7),
				c71("branch7x7dbl_4", c7), c17("branch7x7dbl_5", 192)}},
			branchDef{pool: avg, convs: []convSpec{cs("branch_pool", 192, 1)}})
	}
	blockE := func(name string, cin int, pool *tensor.PoolParams, isMax bool) int {
		return m.addBlock(name, cin, bc,
			branchDef{convs: []convSpec{cs("branch1x1", 320, 1)}},
			branchDef{convs: []convSpec{cs("branch3x3_1", 384, 1)}, split: []convSpec{c13("branch3x3_2a", 384), c31("branch3x3_2b", 384)}},
			branchDef{convs: []convSpec{cs("branch3x3dbl_1", 448, 1), cs("branch3x3dbl_2", 384, 3)},
				split: []convSpec{c13("branch3x3dbl_3a", 384), c31("branch3x3dbl_3b", 384)}},
			branchDef{pool: pool, max: isMax, convs: []convSpec{cs("branch_pool", 192, 1)}})
	}
	c := blockA("Mixed_5b", cin, 32)
	c = blockA("Mixed_5c", c, 64)
	c = blockA("Mixed_5d", c, 64)
	c = m.addBlock("Mixed_6a", c, bc, // InceptionB
		branchDef{convs: []convSpec{{"branch3x3", 384, 3, 3, 2, 0, 0}}},
		branchDef{convs: []convSpec{cs("branch3x3dbl_1", 64, 1), cs("branch3x3dbl_2", 96, 3), {"branch3x3dbl_3", 96, 3, 3, 2, 0, 0}}},
		branchDef{pool: maxS2, max: true})
	c = blockC("Mixed_6b", c, 128)
	c = blockC("Mixed_6c", c, 160)
	c = blockC("Mixed_6d", c, 160)
	c = blockC("Mixed_6e", c, 192)
	c = m.addBlock("Mixed_7a", c, bc, // InceptionD
		branchDef{convs: []convSpec{cs("branch3x3_1", 192, 1), {"branch3x3_2", 320, 3, 3, 2, 0, 0}}},
		branchDef{convs: []convSpec{cs("branch7x7x3_1", 192, 1), c17("branch7x7x3_2", 192), c71("branch7x7x3_3", 192),
			{"branch7x7x3_4", 192, 3, 3, 2, 0, 0}}},
		branchDef{pool: maxS2, max: true})
	c = blockE("Mixed_7b", c, avg, false)  // FIDInceptionE_1
	c = blockE("Mixed_7c", c, maxS1, true) // FIDInceptionE_2
	if c != InceptionDim {
		panic(fmt.Sprintf("model: inception: %d output channels, want %d", c, InceptionDim))
	}
	ps.Pack()
	return m
}

func c17(name string, cout int) convSpec { return convSpec{name, cout, 1, 7, 1, 0, 3} }
func c71(name string, cout int) convSpec { return convSpec{name, cout, 7, 1, 1, 3, 0} }
func c13(name string, cout int) convSpec { return convSpec{name, cout, 1, 3, 1, 0, 1} }
func c31(name string, cout int) convSpec { return convSpec{name, cout, 3, 1, 1, 1, 0} }

// branchDef describes an inceptionBranch before its parameters exist.
type branchDef struct {
	pool  *tensor.PoolParams
	max   bool
	convs []convSpec
	split []convSpec
}

// addBlock builds a mixed block from its branches in order (which is
// torchvision's attribute order, hence the state_dict's) and returns its
// number of output channels.
func (m *Inception) addBlock(name string, cin int, bc func(string, int, convSpec) *basicConv, defs ...branchDef) int {
	blk := &inceptionBlock{name: name}
	cout := 0
	for _, d := range defs {
		br := &inceptionBranch{pool: d.pool, max: d.max}
		c := cin
		for _, cv := range d.convs {
			br.convs = append(br.convs, bc(name+"."+cv.name, c, cv))
			c = cv.cout
		}
		if len(d.split) == 2 {
			br.split[0] = bc(name+"."+d.split[0].name, c, d.split[0])
			br.split[1] = bc(name+"."+d.split[1].name, c, d.split[1])
			c = d.split[0].cout + d.split[1].cout
		}
		blk.branches = append(blk.branches, br)
		cout += c
	}
	m.blocks = append(m.blocks, blk)
	return cout
}

// Params returns the convs' weights and the batch norms' parameters and
// running statistics.
func (m *Inception) Params() *nn.ParamSet { return m.ps }

// SetTraining switches the batch norms between running statistics (false, as
// FID uses) and batch statistics.
func (m *Inception) SetTraining(on bool) {
	for _, bn := range m.bns {
		bn.Training = on
	}
}

// Features maps images x01 (N,3,H,W) with values in [0,1] to their pool3
// features (N,2048), as pytorch-fid's InceptionV3 does by default: bilinear
// resize to 299×299 (align_corners=False; also when the input is already 299,
// where it is the identity), x ← 2x − 1, the network, global average pool.
func (m *Inception) Features(tp *nn.Tape, x01 *nn.Var) *nn.Var {
	h := nn.ResizeBilinear(tp, x01, InceptionSize, InceptionSize, false)
	h = nn.Affine(tp, h, 2, -1)
	maxS2 := tensor.PoolParams{KH: 3, KW: 3, StrideH: 2, StrideW: 2}
	for _, l := range m.stem {
		if l.conv == nil {
			h = nn.MaxPool2D(tp, h, maxS2)
			continue
		}
		h = l.conv.forward(tp, h)
	}
	for _, b := range m.blocks {
		h = b.forward(tp, h)
	}
	h = nn.AdaptiveAvgPool2D(tp, h, 1, 1)
	return nn.Reshape(tp, h, h.Shape()[0], InceptionDim)
}

// Forward is Features.
func (m *Inception) Forward(tp *nn.Tape, x *nn.Var) *nn.Var { return m.Features(tp, x) }

func (b *inceptionBlock) forward(tp *nn.Tape, x *nn.Var) *nn.Var {
	outs := make([]*nn.Var, 0, len(b.branches)+2)
	for _, br := range b.branches {
		h := x
		if br.pool != nil {
			if br.max {
				h = nn.MaxPool2D(tp, h, *br.pool)
			} else {
				h = nn.AvgPool2D(tp, h, *br.pool) // CountIncludePad false
			}
		}
		for _, c := range br.convs {
			h = c.forward(tp, h)
		}
		if br.split[0] != nil {
			outs = append(outs, br.split[0].forward(tp, h), br.split[1].forward(tp, h))
			continue
		}
		outs = append(outs, h)
	}
	return nn.Concat(tp, 1, outs...)
}
