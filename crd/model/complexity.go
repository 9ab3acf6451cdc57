package model

import (
	"fmt"
	"strings"

	"github.com/crdgo/crdgo/crd/nn"
	"github.com/crdgo/crdgo/crd/tensor"
)

// Convention is a way of counting multiply-accumulates. GAN Compression, OMGD
// and CRD report torchprofile's profile_macs on one image (docs/crd.md §5.5), whose
// handlers changed in torchprofile 0.0.3 (April 2021); both are kept.
//
// What every convention counts: a convolution prod(output)·C_in/groups·k_h·k_w
// and a transposed convolution prod(output)·C_in·k_h·k_w (torchprofile reads
// the in-channels from the weight's shape, so a transposed convolution counts
// every output position: stride² times its real multiplies), a matrix product
// m·n·k; biases are not counted. ReLU, LeakyReLU (in-place in every reference
// module, and torchprofile has no handler for aten::leaky_relu_), Tanh,
// clamp, padding, max-pooling, addition, concatenation and dropout count 0.
// What differs is below.
type Convention string

const (
	// MACsV003 is torchprofile ≥ 0.0.3, the default: norms with an affine
	// transform (BatchNorm2d) count prod(output), InstanceNorm2d(affine=False)
	// 0; average pools and multiplications prod(output); bilinear resizing
	// 4·prod(output).
	MACsV003 Convention = "v003"
	// MACsV002 is torchprofile ≤ 0.0.2: every instance norm counts
	// prod(output), batch norm 0, average pools and multiplications
	// prod(output), resizing 0 (no handler).
	MACsV002 Convention = "v002"
	// MACsConv counts convolutions and matrix products only.
	MACsConv Convention = "conv"
)

// Conventions lists the conventions, the default first.
func Conventions() []Convention { return []Convention{MACsV003, MACsV002, MACsConv} }

// ParseConvention validates a convention name.
func ParseConvention(s string) (Convention, error) {
	for _, c := range Conventions() {
		if string(c) == s {
			return c, nil
		}
	}
	return "", fmt.Errorf("convention %q: want v003 (torchprofile ≥ 0.0.3), v002 (≤ 0.0.2) or conv", s)
}

// OpKind is a kind of kernel call that may count MACs.
type OpKind string

// The kernel calls a Counter records.
const (
	OpConv          OpKind = "conv"
	OpConvTranspose OpKind = "conv_transpose"
	OpBatchNorm     OpKind = "batch_norm"
	OpInstanceNorm  OpKind = "instance_norm"
	OpAvgPool       OpKind = "avg_pool"
	OpAdaptiveAvg   OpKind = "adaptive_avg_pool"
	OpResize        OpKind = "resize_bilinear"
	OpMul           OpKind = "mul"
	OpMatMul        OpKind = "matmul"
)

// OpCost is one recorded kernel call.
type OpCost struct {
	Kind OpKind
	// Layer is the state_dict prefix of the call's parameters ("model.1",
	// "Mixed_5b.branch1x1.conv"); Count names a call without parameters after
	// the layer before it, with a "+" ("model.10.conv_block.1.conv.0+"). A
	// bare Counter leaves Layer empty.
	Layer string
	// Detail describes the kernel ("7×7", "3×3/2", "3×3 dw").
	Detail string
	Out    tensor.Shape
	// Params is the number of parameters the call uses (weight and bias, or
	// γ and β).
	Params int64
	// Mult is the convolution or matrix-product count (all conventions);
	// Elems is prod(output) for the kinds whose count depends on the
	// convention.
	Mult, Elems int64
	// Affine is set for a norm with γ and β.
	Affine bool

	weight *tensor.Tensor // the weight or γ, for naming
}

// MACs is the call's count in convention c.
func (o OpCost) MACs(c Convention) int64 {
	switch o.Kind {
	case OpConv, OpConvTranspose, OpMatMul:
		return o.Mult
	}
	switch c {
	case MACsV003:
		switch o.Kind {
		case OpBatchNorm, OpInstanceNorm:
			if o.Affine {
				return o.Elems
			}
			return 0
		case OpResize:
			return 4 * o.Elems
		}
		return o.Elems // pools, mul
	case MACsV002:
		switch o.Kind {
		case OpBatchNorm, OpResize:
			return 0
		}
		return o.Elems // instance norm, pools, mul
	}
	return 0
}

// Counter is a Backend that records every call of a kernel that may count
// MACs (convolutions, norms, average pools, resizing, scaling, matrix
// products) and passes every call on to the Backend it wraps. Wrapping
// tensor.NewMeta counts a network at any size without computing it; wrapping
// a CPU backend counts a real forward pass. Not safe for concurrent use.
type Counter struct {
	tensor.Backend
	ops []OpCost
}

// NewCounter wraps be.
func NewCounter(be tensor.Backend) *Counter { return &Counter{Backend: be} }

// Ops returns the recorded calls in order.
func (c *Counter) Ops() []OpCost { return c.ops }

// Reset forgets the recorded calls.
func (c *Counter) Reset() { c.ops = c.ops[:0] }

func (c *Counter) record(o OpCost) { c.ops = append(c.ops, o) }

func numel(t *tensor.Tensor) int64 {
	if t == nil {
		return 0
	}
	return int64(t.Numel())
}

// convMACs is torchprofile's convolution handler: the in-channels are
// weight.shape[1] when the output's channels equal weight.shape[0] (a
// convolution), else weight.shape[0] (a transposed convolution).
func convMACs(y, w *tensor.Tensor) int64 {
	ic := w.Shape[0]
	if y.Shape[1] == w.Shape[0] {
		ic = w.Shape[1]
	}
	return numel(y) * int64(ic) * int64(w.Shape[2]) * int64(w.Shape[3])
}

func convDetail(w *tensor.Tensor, p tensor.ConvParams) string {
	p = p.Norm()
	d := fmt.Sprintf("%d×%d", w.Shape[2], w.Shape[3])
	if p.StrideH != 1 || p.StrideW != 1 {
		d += fmt.Sprintf("/%d", p.StrideH)
	}
	if p.Groups > 1 {
		d += fmt.Sprintf(" g%d", p.Groups)
	}
	return d
}

// Conv2D records a convolution and runs it.
func (c *Counter) Conv2D(y, x, w, b *tensor.Tensor, p tensor.ConvParams) {
	c.Backend.Conv2D(y, x, w, b, p)
	c.record(OpCost{Kind: OpConv, Detail: convDetail(w, p), Out: y.Shape.Clone(), Params: numel(w) + numel(b),
		Mult: convMACs(y, w), weight: w})
}

// ConvTranspose2D records a transposed convolution and runs it.
func (c *Counter) ConvTranspose2D(y, x, w, b *tensor.Tensor, p tensor.ConvParams) {
	c.Backend.ConvTranspose2D(y, x, w, b, p)
	c.record(OpCost{Kind: OpConvTranspose, Detail: convDetail(w, p), Out: y.Shape.Clone(), Params: numel(w) + numel(b),
		Mult: convMACs(y, w), weight: w})
}

// InstanceNorm records an instance norm and runs it.
func (c *Counter) InstanceNorm(y, mean, rstd, x, gamma, beta *tensor.Tensor, eps float32, act tensor.Activation) {
	c.Backend.InstanceNorm(y, mean, rstd, x, gamma, beta, eps, act)
	c.record(OpCost{Kind: OpInstanceNorm, Out: y.Shape.Clone(), Params: numel(gamma) + numel(beta),
		Elems: numel(y), Affine: gamma != nil, weight: gamma})
}

// BatchNormApply records a batch norm and runs it.
func (c *Counter) BatchNormApply(y, x, mean, rstd, gamma, beta *tensor.Tensor, act tensor.Activation) {
	c.Backend.BatchNormApply(y, x, mean, rstd, gamma, beta, act)
	c.record(OpCost{Kind: OpBatchNorm, Out: y.Shape.Clone(), Params: numel(gamma) + numel(beta),
		Elems: numel(y), Affine: gamma != nil, weight: gamma})
}

// AvgPool2D records an average pool and runs it.
func (c *Counter) AvgPool2D(y, x *tensor.Tensor, p tensor.PoolParams) {
	c.Backend.AvgPool2D(y, x, p)
	c.record(OpCost{Kind: OpAvgPool, Detail: fmt.Sprintf("%d×%d", p.KH, p.KW), Out: y.Shape.Clone(), Elems: numel(y)})
}

// AdaptiveAvgPool2D records an adaptive average pool and runs it.
func (c *Counter) AdaptiveAvgPool2D(y, x *tensor.Tensor) {
	c.Backend.AdaptiveAvgPool2D(y, x)
	c.record(OpCost{Kind: OpAdaptiveAvg, Out: y.Shape.Clone(), Elems: numel(y)})
}

// ResizeBilinear records a resize and runs it.
func (c *Counter) ResizeBilinear(y, x *tensor.Tensor, alignCorners bool) {
	c.Backend.ResizeBilinear(y, x, alignCorners)
	c.record(OpCost{Kind: OpResize, Out: y.Shape.Clone(), Elems: numel(y)})
}

// Unary records a multiplication by a constant (an affine map a·x+b with
// a ≠ 1: aten::mul, then aten::add or aten::sub, which count 0) and runs f.
func (c *Counter) Unary(op tensor.UnaryOp, y, x *tensor.Tensor) {
	c.Backend.Unary(op, y, x)
	if op.Kind == tensor.UAffine && op.A != 1 {
		c.record(OpCost{Kind: OpMul, Out: y.Shape.Clone(), Elems: numel(y)})
	}
}

// MatMul records a matrix product and runs it.
func (c *Counter) MatMul(cc, a, b *tensor.Tensor, transA, transB bool, alpha, beta float32) {
	c.Backend.MatMul(cc, a, b, transA, transB, alpha, beta)
	k := a.Shape[len(a.Shape)-1]
	if transA {
		k = a.Shape[len(a.Shape)-2]
	}
	c.record(OpCost{Kind: OpMatMul, Out: cc.Shape.Clone(), Mult: numel(cc) * int64(k)})
}

// Profile is the complexity of one network at one input size.
type Profile struct {
	Spec  Spec
	Input tensor.Shape
	// Params is the number of trainable parameters (PyTorch's
	// sum(p.numel() for p in parameters()); running statistics excluded).
	Params int64
	// Ops are the counted kernel calls of one forward pass, in order.
	Ops []OpCost
}

// MACs is the forward pass's count in convention c.
func (p *Profile) MACs(c Convention) int64 {
	var n int64
	for _, o := range p.Ops {
		n += o.MACs(c)
	}
	return n
}

// Count profiles the network s at a 1×C×h×w input, C its input channels,
// as torchprofile does (docs/crd.md §5.5), by running its forward pass on the
// shape-only backend: instantaneous at any size. The network is in
// evaluation mode, which changes no count.
func Count(s Spec, h, w int) (*Profile, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	if err := s.CheckSize(h, w); err != nil {
		return nil, fmt.Errorf("model %s: input %d×%d: %w", s.Arch, h, w, err)
	}
	cnt := NewCounter(tensor.NewMeta())
	net, err := New(cnt, s)
	if err != nil {
		return nil, err
	}
	net.SetTraining(false)
	tp := nn.NewTape(cnt)
	in := tensor.Shape{1, s.InputChannels(), h, w}
	net.Forward(tp, nn.Const(cnt.New(in)))
	p := &Profile{Spec: s, Input: in, Params: int64(net.Params().NumParams()), Ops: cnt.Ops()}
	p.nameOps(net.Params())
	return p, nil
}

// nameOps sets each op's Layer from its weight's state_dict name and, for ops
// without parameters, from the layer before it ("model.1+").
func (p *Profile) nameOps(ps *nn.ParamSet) {
	names := make(map[*tensor.Tensor]string)
	for _, q := range ps.Params() {
		if i := strings.LastIndexByte(q.Name, '.'); i >= 0 {
			names[q.Var.Value] = q.Name[:i]
		}
	}
	prev := "input"
	for i := range p.Ops {
		o := &p.Ops[i]
		if o.weight != nil {
			o.Layer = names[o.weight]
			o.weight = nil
		}
		if o.Layer == "" {
			o.Layer = strings.TrimSuffix(prev, "+") + "+"
		}
		prev = o.Layer
	}
}
