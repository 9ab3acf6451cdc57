package nn_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/crdgo/crdgo/crd/nn"
	"github.com/crdgo/crdgo/crd/tensor"
	tt "github.com/crdgo/crdgo/crd/tensor/tensortest"
)

// An opCase checks one op (or a small composition) of package nn end to end
// through the tape: forward values against the float64 reference of
// tensortest, and the gradient of ⟨r, f(x)⟩ for a fixed random r with respect
// to every input against central finite differences of that reference.
type opCase struct {
	name string
	in   []input
	ref  func(in []tt.Array) tt.Array
	op   func(tp *nn.Tape, in []*nn.Var) *nn.Var
}

// input is an argument's shape and value range; away keeps values at least
// that far from the kinks (non-smooth points) of the op.
type input struct {
	shape  []int
	lo, hi float64
	away   []float64
	noGrad bool // a constant argument (a target)
}

func in(shape ...int) input { return input{shape: shape, lo: -1, hi: 1} }

func (i input) rng(lo, hi float64) input { i.lo, i.hi = lo, hi; return i }
func (i input) kinks(k ...float64) input { i.away = k; return i }
func (i input) constant() input          { i.noGrad = true; return i }
func numel(s []int) int {
	n := 1
	for _, d := range s {
		n *= d
	}
	return n
}

func (i input) draw(r *rand.Rand) tt.Array {
	a := tt.Zeros(i.shape...)
	for k := range a.Data {
		for {
			v := i.lo + (i.hi-i.lo)*r.Float64()
			ok := true
			for _, kink := range i.away {
				if math.Abs(v-kink) < 0.05 {
					ok = false
				}
			}
			if ok {
				a.Data[k] = float64(float32(v)) // exactly representable in both
				break
			}
		}
	}
	return a
}

func maxAbs(v []float64) float64 {
	m := 0.0
	for _, x := range v {
		m = max(m, math.Abs(x))
	}
	return m
}

func runOpCase(t *testing.T, be tensor.Backend, c opCase, seed uint64) {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 7))
	ins := make([]tt.Array, len(c.in))
	for k, spec := range c.in {
		ins[k] = spec.draw(r)
	}
	want := c.ref(ins)
	contract := tt.Zeros(want.Shape...)
	for k := range contract.Data {
		contract.Data[k] = 2*r.Float64() - 1
	}

	tp := nn.NewTape(be)
	vars := make([]*nn.Var, len(ins))
	for k, a := range ins {
		tv := be.New(tensor.Shape(a.Shape))
		be.Upload(tv, a.Float32())
		if c.in[k].noGrad {
			vars[k] = nn.Const(tv)
		} else {
			vars[k] = nn.Leaf(tv)
		}
	}
	out := c.op(tp, vars)
	got := make([]float32, out.Value.Numel())
	be.Download(got, out.Value)
	if len(got) != len(want.Data) {
		t.Fatalf("%s (seed %d): output has %d elements %v; want %v", c.name, seed, len(got), out.Value.Shape, want.Shape)
	}
	scale := max(maxAbs(want.Data), 1e-3)
	for k := range got {
		// float32 forward against float64: a few ulps of the output's scale per
		// summed term; 2e-5 covers the sums of these small shapes.
		if d := math.Abs(float64(got[k]) - want.Data[k]); d > 2e-5*scale {
			t.Fatalf("%s (seed %d): forward element %d = %g; want %g (|diff| %.2g, scale %.2g)", c.name, seed, k, got[k], want.Data[k], d, scale)
		}
	}
	if !out.RequiresGrad() {
		return
	}
	dy := be.New(out.Value.Shape)
	be.Upload(dy, contract.Float32())
	tp.BackwardFrom(out, dy)

	f := func(xs []tt.Array) float64 {
		y := c.ref(xs)
		s := 0.0
		for k, v := range y.Data {
			s += v * contract.Data[k]
		}
		return s
	}
	const h = 1e-6
	nums := make([][]float64, len(ins))
	all := 0.0
	for k, a := range ins {
		if c.in[k].noGrad {
			continue
		}
		num := make([]float64, a.Numel())
		for i := range a.Data {
			old := a.Data[i]
			a.Data[i] = old + h
			fp := f(ins)
			a.Data[i] = old - h
			fm := f(ins)
			a.Data[i] = old
			num[i] = (fp - fm) / (2 * h)
		}
		nums[k] = num
		all = max(all, maxAbs(num))
	}
	for k, num := range nums {
		if num == nil {
			continue
		}
		g := make([]float32, len(num))
		be.Download(g, vars[k].Grad)
		// The analytic gradient is float32 sums of float32 products; the
		// numeric one is exact to ~1e-9. 1e-4 of the input's gradient max-norm,
		// floored at 1e-2 of the largest gradient of any input (a gradient that
		// is exactly 0 in theory, like a bias before instance norm, is rounding
		// noise of the other terms in float32).
		gs := max(maxAbs(num), 1e-2*all, 1e-6)
		for i := range num {
			if d := math.Abs(float64(g[i]) - num[i]); d > 1e-4*gs {
				t.Fatalf("%s (seed %d): ∂/∂input%d element %d = %g; finite differences give %g (|diff| %.2g, scale %.2g)",
					c.name, seed, k, i, g[i], num[i], d, gs)
			}
		}
	}
}

func relu() tensor.Activation  { return tensor.Activation{Kind: tensor.ActReLU} }
func lrelu() tensor.Activation { return tensor.Activation{Kind: tensor.ActLeakyReLU, Slope: 0.2} }

func opCases() []opCase {
	conv := func(name string, x, w []int, bias bool, p tensor.ConvParams) opCase {
		ins := []input{in(x...), in(w...)}
		if bias {
			ins = append(ins, in(w[0]))
		}
		return opCase{name: name, in: ins,
			ref: func(a []tt.Array) tt.Array {
				var b tt.Array
				if bias {
					b = a[2]
				}
				return tt.RefConv2D(a[0], a[1], b, p)
			},
			op: func(tp *nn.Tape, v []*nn.Var) *nn.Var {
				var b *nn.Var
				if bias {
					b = v[2]
				}
				return nn.Conv2D(tp, v[0], v[1], b, p)
			}}
	}
	convT := func(name string, x, w []int, p tensor.ConvParams) opCase {
		return opCase{name: name, in: []input{in(x...), in(w...), in(w[1] * max(p.Groups, 1))},
			ref: func(a []tt.Array) tt.Array { return tt.RefConvTranspose2D(a[0], a[1], a[2], p) },
			op:  func(tp *nn.Tape, v []*nn.Var) *nn.Var { return nn.ConvTranspose2D(tp, v[0], v[1], v[2], p) }}
	}
	unary := func(name string, op tensor.UnaryOp, x input, f func(*nn.Tape, *nn.Var) *nn.Var) opCase {
		return opCase{name: name, in: []input{x},
			ref: func(a []tt.Array) tt.Array { return tt.RefUnary(op, a[0]) },
			op:  func(tp *nn.Tape, v []*nn.Var) *nn.Var { return f(tp, v[0]) }}
	}
	binary := func(name string, op tensor.BinaryOp, a, b input, f func(*nn.Tape, *nn.Var, *nn.Var) *nn.Var) opCase {
		return opCase{name: name, in: []input{a, b},
			ref: func(x []tt.Array) tt.Array { return tt.RefBinary(op, x[0], x[1]) },
			op:  func(tp *nn.Tape, v []*nn.Var) *nn.Var { return f(tp, v[0], v[1]) }}
	}
	meanRef := func(a tt.Array, shape []int) tt.Array {
		s := tt.RefReduceSum(a, shape)
		return tt.RefScale(float64(numel(shape))/float64(a.Numel()), s)
	}
	return []opCase{
		conv("conv 3x3 pad1 bias", []int{2, 3, 7, 6}, []int{4, 3, 3, 3}, true, tensor.ConvParams{PadH: 1, PadW: 1}),
		conv("conv 4x4 s2 p1", []int{1, 5, 9, 8}, []int{3, 5, 4, 4}, true, tensor.ConvParams{StrideH: 2, StrideW: 2, PadH: 1, PadW: 1}),
		conv("conv 7x7 valid", []int{1, 3, 10, 9}, []int{2, 3, 7, 7}, false, tensor.ConvParams{}),
		conv("conv depthwise 3x3", []int{2, 4, 6, 7}, []int{4, 1, 3, 3}, true, tensor.ConvParams{Groups: 4}),
		conv("conv grouped dil2", []int{1, 4, 9, 9}, []int{6, 2, 3, 3}, true, tensor.ConvParams{Groups: 2, DilationH: 2, DilationW: 2, PadH: 2, PadW: 2}),
		conv("conv 1x7 pad (0,3)", []int{1, 3, 5, 8}, []int{2, 3, 1, 7}, false, tensor.ConvParams{PadW: 3}),
		conv("conv pointwise", []int{2, 5, 4, 3}, []int{3, 5, 1, 1}, true, tensor.ConvParams{}),
		convT("convT 3x3 s2 p1 op1", []int{2, 4, 4, 3}, []int{4, 3, 3, 3}, tensor.ConvParams{StrideH: 2, StrideW: 2, PadH: 1, PadW: 1, OutPadH: 1, OutPadW: 1}),
		convT("convT 4x4 s2 p1", []int{1, 3, 3, 4}, []int{3, 2, 4, 4}, tensor.ConvParams{StrideH: 2, StrideW: 2, PadH: 1, PadW: 1}),
		{name: "instance norm affine relu", in: []input{in(2, 3, 5, 4), in(3).rng(0.5, 1.5), in(3)},
			ref: func(a []tt.Array) tt.Array { return tt.RefInstanceNorm(a[0], a[1], a[2], 1e-5, relu()) },
			op:  func(tp *nn.Tape, v []*nn.Var) *nn.Var { return nn.InstanceNorm(tp, v[0], v[1], v[2], 1e-5, relu()) }},
		{name: "instance norm plain", in: []input{in(1, 4, 6, 5)},
			ref: func(a []tt.Array) tt.Array {
				return tt.RefInstanceNorm(a[0], tt.Array{}, tt.Array{}, 1e-5, tensor.Activation{})
			},
			op: func(tp *nn.Tape, v []*nn.Var) *nn.Var {
				return nn.InstanceNorm(tp, v[0], nil, nil, 1e-5, tensor.Activation{})
			}},
		{name: "reflect pad 2", in: []input{in(2, 3, 5, 4)},
			ref: func(a []tt.Array) tt.Array {
				return tt.RefPad2D(a[0], tensor.Padding{Top: 2, Bottom: 2, Left: 2, Right: 2, Mode: tensor.PadReflect})
			},
			op: func(tp *nn.Tape, v []*nn.Var) *nn.Var { return nn.ReflectPad2D(tp, v[0], 2) }},
		{name: "zero pad asym", in: []input{in(1, 2, 3, 4)},
			ref: func(a []tt.Array) tt.Array { return tt.RefPad2D(a[0], tensor.Padding{Top: 1, Left: 2, Right: 1}) },
			op: func(tp *nn.Tape, v []*nn.Var) *nn.Var {
				return nn.Pad2D(tp, v[0], tensor.Padding{Top: 1, Left: 2, Right: 1})
			}},
		unary("relu", tensor.UnaryOp{Kind: tensor.UReLU}, in(3, 7).kinks(0), nn.ReLU),
		unary("leaky relu", tensor.UnaryOp{Kind: tensor.ULeakyReLU, A: 0.2}, in(3, 7).kinks(0),
			func(tp *nn.Tape, x *nn.Var) *nn.Var { return nn.LeakyReLU(tp, x, 0.2) }),
		unary("tanh", tensor.UnaryOp{Kind: tensor.UTanh}, in(3, 7).rng(-3, 3), nn.Tanh),
		unary("sigmoid", tensor.UnaryOp{Kind: tensor.USigmoid}, in(3, 7).rng(-4, 4), nn.Sigmoid),
		unary("sqrt", tensor.UnaryOp{Kind: tensor.USqrt}, in(3, 7).rng(0.1, 3), nn.Sqrt),
		unary("abs", tensor.UnaryOp{Kind: tensor.UAbs}, in(3, 7).kinks(0), nn.Abs),
		unary("square", tensor.UnaryOp{Kind: tensor.USquare}, in(3, 7), nn.Square),
		unary("clamp", tensor.UnaryOp{Kind: tensor.UClamp, A: -0.5, B: 0.6}, in(3, 7).kinks(-0.5, 0.6),
			func(tp *nn.Tape, x *nn.Var) *nn.Var { return nn.Clamp(tp, x, -0.5, 0.6) }),
		unary("affine", tensor.UnaryOp{Kind: tensor.UAffine, A: -1.5, B: 0.25}, in(3, 7),
			func(tp *nn.Tape, x *nn.Var) *nn.Var { return nn.Affine(tp, x, -1.5, 0.25) }),
		unary("softplus", tensor.UnaryOp{Kind: tensor.USoftplus}, in(3, 7).rng(-5, 5), nn.Softplus),
		unary("exp", tensor.UnaryOp{Kind: tensor.UExp}, in(3, 7), nn.Exp),
		unary("log", tensor.UnaryOp{Kind: tensor.ULog}, in(3, 7).rng(0.2, 3), nn.Log),
		binary("add bcast (1,C,1,1)", tensor.BAdd, in(2, 3, 4, 5), in(1, 3, 1, 1), nn.Add),
		binary("sub bcast (C,1,1)", tensor.BSub, in(2, 3, 4, 5), in(3, 1, 1), nn.Sub),
		binary("mul bcast (N,1,H,W)", tensor.BMul, in(2, 3, 4, 5), in(2, 1, 4, 5), nn.Mul),
		binary("div bcast scalar", tensor.BDiv, in(2, 3, 4), in(1).rng(0.5, 2), nn.Div),
		binary("mul same", tensor.BMul, in(4, 6), in(4, 6), nn.Mul),
		{name: "sum axes (0,2) keepdims", in: []input{in(3, 4, 5)},
			ref: func(a []tt.Array) tt.Array { return tt.RefReduceSum(a[0], []int{1, 4, 1}) },
			op:  func(tp *nn.Tape, v []*nn.Var) *nn.Var { return nn.Sum(tp, v[0], true, 0, 2) }},
		{name: "mean all", in: []input{in(3, 4, 5)},
			ref: func(a []tt.Array) tt.Array { return meanRef(a[0], []int{1}) },
			op:  func(tp *nn.Tape, v []*nn.Var) *nn.Var { return nn.Mean(tp, v[0], false) }},
		{name: "mean last axis", in: []input{in(3, 4, 5)},
			ref: func(a []tt.Array) tt.Array { return meanRef(a[0], []int{3, 4, 1}) },
			op:  func(tp *nn.Tape, v []*nn.Var) *nn.Var { return nn.Mean(tp, v[0], false, -1) }},
		{name: "permute (2,0,1)", in: []input{in(3, 4, 5)},
			ref: func(a []tt.Array) tt.Array { return tt.RefPermute(a[0], []int{2, 0, 1}) },
			op:  func(tp *nn.Tape, v []*nn.Var) *nn.Var { return nn.Permute(tp, v[0], 2, 0, 1) }},
		{name: "reshape then transpose", in: []input{in(2, 3, 4)},
			ref: func(a []tt.Array) tt.Array {
				b := tt.Array{Shape: []int{6, 4}, Data: a[0].Data}
				return tt.RefPermute(b, []int{1, 0})
			},
			op: func(tp *nn.Tape, v []*nn.Var) *nn.Var { return nn.Transpose(tp, nn.Reshape(tp, v[0], 6, 4)) }},
		{name: "slice axis 1", in: []input{in(2, 5, 3)},
			ref: func(a []tt.Array) tt.Array { return tt.RefSliceAxis(a[0], 1, 1, 3) },
			op:  func(tp *nn.Tape, v []*nn.Var) *nn.Var { return nn.Slice(tp, v[0], 1, 1, 3) }},
		{name: "concat channels", in: []input{in(2, 2, 3, 3), in(2, 3, 3, 3)},
			ref: func(a []tt.Array) tt.Array { return tt.RefConcat(1, a[0], a[1]) },
			op:  func(tp *nn.Tape, v []*nn.Var) *nn.Var { return nn.Concat(tp, 1, v[0], v[1]) }},
		{name: "max pool 2x2", in: []input{in(2, 3, 6, 5)},
			ref: func(a []tt.Array) tt.Array { return tt.RefMaxPool2D(a[0], tensor.PoolParams{KH: 2, KW: 2}) },
			op:  func(tp *nn.Tape, v []*nn.Var) *nn.Var { return nn.MaxPool2D(tp, v[0], tensor.PoolParams{KH: 2, KW: 2}) }},
		{name: "max pool 3 s1 p1", in: []input{in(1, 2, 5, 5)},
			ref: func(a []tt.Array) tt.Array {
				return tt.RefMaxPool2D(a[0], tensor.PoolParams{KH: 3, KW: 3, StrideH: 1, StrideW: 1, PadH: 1, PadW: 1})
			},
			op: func(tp *nn.Tape, v []*nn.Var) *nn.Var {
				return nn.MaxPool2D(tp, v[0], tensor.PoolParams{KH: 3, KW: 3, StrideH: 1, StrideW: 1, PadH: 1, PadW: 1})
			}},
		{name: "avg pool 3 s1 p1 exclude pad", in: []input{in(1, 2, 5, 6)},
			ref: func(a []tt.Array) tt.Array {
				return tt.RefAvgPool2D(a[0], tensor.PoolParams{KH: 3, KW: 3, StrideH: 1, StrideW: 1, PadH: 1, PadW: 1})
			},
			op: func(tp *nn.Tape, v []*nn.Var) *nn.Var {
				return nn.AvgPool2D(tp, v[0], tensor.PoolParams{KH: 3, KW: 3, StrideH: 1, StrideW: 1, PadH: 1, PadW: 1})
			}},
		{name: "adaptive avg pool 7→3", in: []input{in(2, 2, 7, 7)},
			ref: func(a []tt.Array) tt.Array { return tt.RefAdaptiveAvgPool2D(a[0], 3, 3) },
			op:  func(tp *nn.Tape, v []*nn.Var) *nn.Var { return nn.AdaptiveAvgPool2D(tp, v[0], 3, 3) }},
		{name: "bilinear 5x4→9x7", in: []input{in(1, 2, 5, 4)},
			ref: func(a []tt.Array) tt.Array { return tt.RefResizeBilinear(a[0], 9, 7, false) },
			op:  func(tp *nn.Tape, v []*nn.Var) *nn.Var { return nn.ResizeBilinear(tp, v[0], 9, 7, false) }},
		{name: "bilinear 8x8→3x5 align", in: []input{in(1, 1, 8, 8)},
			ref: func(a []tt.Array) tt.Array { return tt.RefResizeBilinear(a[0], 3, 5, true) },
			op:  func(tp *nn.Tape, v []*nn.Var) *nn.Var { return nn.ResizeBilinear(tp, v[0], 3, 5, true) }},
		{name: "matmul", in: []input{in(3, 4), in(4, 5)},
			ref: func(a []tt.Array) tt.Array { return tt.RefMatMul(a[0], a[1], false, false) },
			op:  func(tp *nn.Tape, v []*nn.Var) *nn.Var { return nn.MatMul(tp, v[0], v[1], false, false) }},
		{name: "matmul transA transB", in: []input{in(4, 3), in(5, 4)},
			ref: func(a []tt.Array) tt.Array { return tt.RefMatMul(a[0], a[1], true, true) },
			op:  func(tp *nn.Tape, v []*nn.Var) *nn.Var { return nn.MatMul(tp, v[0], v[1], true, true) }},
		{name: "batched matmul transB (Gram)", in: []input{in(2, 3, 6), in(2, 4, 6)},
			ref: func(a []tt.Array) tt.Array { return tt.RefMatMul(a[0], a[1], false, true) },
			op:  func(tp *nn.Tape, v []*nn.Var) *nn.Var { return nn.MatMul(tp, v[0], v[1], false, true) }},
		{name: "batched matmul transA", in: []input{in(2, 5, 3), in(2, 5, 4)},
			ref: func(a []tt.Array) tt.Array { return tt.RefMatMul(a[0], a[1], true, false) },
			op:  func(tp *nn.Tape, v []*nn.Var) *nn.Var { return nn.MatMul(tp, v[0], v[1], true, false) }},
		{name: "L1 loss", in: []input{in(2, 3, 4), in(2, 3, 4).constant()},
			ref: func(a []tt.Array) tt.Array {
				return meanRef(tt.RefUnary(tensor.UnaryOp{Kind: tensor.UAbs}, tt.RefBinary(tensor.BSub, a[0], a[1])), []int{1})
			},
			op: func(tp *nn.Tape, v []*nn.Var) *nn.Var { return nn.L1Loss(tp, v[0], v[1]) }},
		{name: "smooth L1 loss β=0.5", in: []input{in(2, 3, 4).rng(-2, 2), in(2, 3, 4).constant()},
			ref: func(a []tt.Array) tt.Array {
				return meanRef(tt.RefUnary(tensor.UnaryOp{Kind: tensor.USmoothL1, A: 0.5}, tt.RefBinary(tensor.BSub, a[0], a[1])), []int{1})
			},
			op: func(tp *nn.Tape, v []*nn.Var) *nn.Var { return nn.SmoothL1Loss(tp, v[0], v[1], 0.5) }},
		{name: "hinge real", in: []input{in(2, 1, 3, 3).rng(-2, 2).kinks(1)},
			ref: func(a []tt.Array) tt.Array {
				return meanRef(tt.RefUnary(tensor.UnaryOp{Kind: tensor.UReLU}, tt.RefUnary(tensor.UnaryOp{Kind: tensor.UAffine, A: -1, B: 1}, a[0])), []int{1})
			},
			op: func(tp *nn.Tape, v []*nn.Var) *nn.Var { return nn.HingeReal(tp, v[0]) }},
		{name: "BCE with logits, label 1", in: []input{in(2, 1, 3, 3).rng(-3, 3)},
			ref: func(a []tt.Array) tt.Array {
				sp := tt.RefUnary(tensor.UnaryOp{Kind: tensor.USoftplus}, a[0])
				return meanRef(tt.RefBinary(tensor.BSub, sp, a[0]), []int{1})
			},
			op: func(tp *nn.Tape, v []*nn.Var) *nn.Var { return nn.BCEWithLogitsConst(tp, v[0], 1) }},
		{name: "mobile block: pad→dw→IN→pw, residual", in: []input{in(1, 4, 5, 5), in(4, 1, 3, 3), in(4), in(4, 4, 1, 1), in(4)},
			ref: func(a []tt.Array) tt.Array {
				h := tt.RefPad2D(a[0], tensor.Padding{Top: 1, Bottom: 1, Left: 1, Right: 1, Mode: tensor.PadReflect})
				h = tt.RefConv2D(h, a[1], a[2], tensor.ConvParams{Groups: 4})
				h = tt.RefInstanceNorm(h, tt.Array{}, tt.Array{}, 1e-5, tensor.Activation{})
				h = tt.RefConv2D(h, a[3], a[4], tensor.ConvParams{})
				return tt.RefBinary(tensor.BAdd, a[0], h)
			},
			op: func(tp *nn.Tape, v []*nn.Var) *nn.Var {
				h := nn.ReflectPad2D(tp, v[0], 1)
				h = nn.Conv2D(tp, h, v[1], v[2], tensor.ConvParams{Groups: 4})
				h = nn.InstanceNorm(tp, h, nil, nil, 1e-5, tensor.Activation{})
				h = nn.Conv2D(tp, h, v[3], v[4], tensor.ConvParams{})
				return nn.Add(tp, v[0], h)
			}},
		{name: "x used twice: x·tanh(x) + x", in: []input{in(3, 4)},
			ref: func(a []tt.Array) tt.Array {
				return tt.RefBinary(tensor.BAdd, tt.RefBinary(tensor.BMul, a[0], tt.RefUnary(tensor.UnaryOp{Kind: tensor.UTanh}, a[0])), a[0])
			},
			op: func(tp *nn.Tape, v []*nn.Var) *nn.Var { return nn.Add(tp, nn.Mul(tp, v[0], nn.Tanh(tp, v[0])), v[0]) }},
	}
}

// TestOpGradients checks every op of the package through the tape.
func TestOpGradients(t *testing.T) {
	for _, kind := range tensor.CPUKinds() {
		be := tensor.NewCPU(kind, 2)
		for _, c := range opCases() {
			t.Run(fmt.Sprintf("%s/%s", kind, c.name), func(t *testing.T) {
				for seed := uint64(1); seed <= 2; seed++ {
					runOpCase(t, be, c, seed)
				}
			})
		}
	}
}

// TestBatchNormGradient checks BatchNorm2d in training mode (batch statistics)
// against RefBatchNormTrain, its running-statistics update against PyTorch's
// rule, and evaluation mode against RefBatchNormEval.
func TestBatchNormGradient(t *testing.T) {
	be := tensor.NewCPU(tensor.DefaultCPUKind(), 2)
	ps := nn.NewParamSet(be)
	bn := nn.NewBatchNorm2d(ps, "bn", 3, true)
	ps.Pack()
	ps.Initialize(rand.New(rand.NewPCG(3, 0)))
	gamma := make([]float32, 3)
	beta := []float32{0.1, -0.2, 0.3}
	be.Download(gamma, bn.Weight.Value)
	be.Upload(bn.Bias.Value, beta)
	act := lrelu()
	c := opCase{name: "batch norm train lrelu", in: []input{in(4, 3, 3, 2).rng(-2, 2)},
		ref: func(a []tt.Array) tt.Array {
			y, _, _ := tt.RefBatchNormTrain(a[0], tt.FromFloat32([]int{3}, gamma), tt.FromFloat32([]int{3}, beta), 1e-5, act)
			return y
		},
		op: func(tp *nn.Tape, v []*nn.Var) *nn.Var { return bn.Forward(tp, v[0], act) }}
	runOpCase(t, be, c, 5)

	// Running statistics after that one forward: 0.9·init + 0.1·batch (unbiased var).
	r := rand.New(rand.NewPCG(5, 7))
	x := c.in[0].draw(r)
	_, mean, variance := tt.RefBatchNormTrain(x, tt.Array{}, tt.Array{}, 1e-5, act)
	rm, rv := make([]float32, 3), make([]float32, 3)
	be.Download(rm, bn.RunningMean.Value)
	be.Download(rv, bn.RunningVar.Value)
	count := float64(4 * 3 * 2)
	for k := range 3 {
		wantM := 0.1 * mean.Data[k]
		wantV := 0.9 + 0.1*variance.Data[k]*count/(count-1)
		if math.Abs(float64(rm[k])-wantM) > 1e-6 || math.Abs(float64(rv[k])-wantV) > 1e-6 {
			t.Errorf("channel %d: running mean %g var %g; want %g %g", k, rm[k], rv[k], wantM, wantV)
		}
	}
	bn.Training = false
	rm64, rv64 := tt.FromFloat32([]int{3}, rm), tt.FromFloat32([]int{3}, rv)
	runOpCase(t, be, opCase{name: "batch norm eval", in: []input{in(2, 3, 2, 2)},
		ref: func(a []tt.Array) tt.Array {
			return tt.RefBatchNormEval(a[0], rm64, rv64, tt.FromFloat32([]int{3}, gamma), tt.FromFloat32([]int{3}, beta), 1e-5, act)
		},
		op: func(tp *nn.Tape, v []*nn.Var) *nn.Var { return bn.Forward(tp, v[0], act) }}, 6)
}

// TestFrozenParamsPassGradients: a frozen layer gets no gradient but still
// passes one to its input; and a second backward pass on the same tape sees
// none of the first's intermediate gradients.
func TestFrozenParamsPassGradients(t *testing.T) {
	be := tensor.NewCPU(tensor.DefaultCPUKind(), 2)
	ps := nn.NewParamSet(be)
	l := nn.NewConv2d(ps, "c", 2, 2, 3, 3, tensor.ConvParams{PadH: 1, PadW: 1}, true, 0.5)
	ps.Pack()
	ps.Initialize(rand.New(rand.NewPCG(1, 1)))
	tp := nn.NewTape(be)
	x := be.New(tensor.Shape{1, 2, 4, 4})
	be.Fill(x, 0.5)
	xv := nn.Leaf(x)

	ps.SetRequiresGrad(false)
	loss := nn.Mean(tp, nn.Square(tp, l.Forward(tp, xv)), false)
	tp.Backward(loss)
	g := make([]float32, ps.Grads().Numel())
	be.Download(g, ps.Grads())
	if maxAbs(widen(g)) != 0 {
		t.Errorf("frozen conv got weight gradients")
	}
	first := make([]float32, 32)
	be.Download(first, xv.Grad)
	if maxAbs(widen(first)) == 0 {
		t.Fatalf("no gradient reached the input through the frozen conv")
	}

	// Second pass from a fresh loss on the same tape: the input gradient must
	// grow by exactly the same amount, not twice.
	ps.SetRequiresGrad(true)
	loss2 := nn.Mean(tp, nn.Square(tp, l.Forward(tp, xv)), false)
	tp.Backward(loss2)
	second := make([]float32, 32)
	be.Download(second, xv.Grad)
	for i := range first {
		if math.Abs(float64(second[i]-2*first[i])) > 1e-6 {
			t.Fatalf("input gradient after two identical passes: element %d = %g; want 2×%g", i, second[i], first[i])
		}
	}
}

func widen(v []float32) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}
