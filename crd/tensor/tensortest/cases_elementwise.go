package tensortest

import (
	"fmt"
	"math/rand/v2"

	"github.com/crdgo/crdgo/crd/tensor"
)

// elemTol covers an elementwise op: a float64 function rounded to float32, or
// a few float32 operations (SmoothL1's v·v/(2β), dy·y·(1−y)), each rounding
// once; relative to the max-norm, so the cancellation in 1 − y² near |y| = 1
// stays inside. The largest error measured is 2·u.
const elemTol = 16 * u32

var unaryNames = map[tensor.UnaryKind]string{
	tensor.UReLU: "relu", tensor.ULeakyReLU: "leakyrelu", tensor.UTanh: "tanh", tensor.USigmoid: "sigmoid",
	tensor.USqrt: "sqrt", tensor.UAbs: "abs", tensor.USquare: "square", tensor.UClamp: "clamp",
	tensor.UAffine: "affine", tensor.USmoothL1: "smoothl1", tensor.USoftplus: "softplus",
	tensor.UExp: "exp", tensor.ULog: "log",
}

// unaryCase is Unary and UnaryBackward of op on x drawn by gen (away from
// the op's kinks). inPlace computes y = f(y) after copying x into y.
func unaryCase(op tensor.UnaryOp, x []int, gen func(*rand.Rand, int) []float64, inPlace bool) kcase {
	name := fmt.Sprintf("%s_A%g_B%g_x%s", unaryNames[op.Kind], op.A, op.B, shp(x))
	if inPlace {
		name += "_inplace"
	}
	return kcase{
		name: name,
		in:   []operand{{name: "x", shape: x, gen: gen, grad: true}},
		out:  x,
		ref:  func(a []Array) Array { return RefUnary(op, a[0]) },
		run: func(be tensor.Backend, y *tensor.Tensor, t []*tensor.Tensor) []*tensor.Tensor {
			if inPlace {
				be.Copy(y, t[0])
				be.Unary(op, y, y)
			} else {
				be.Unary(op, y, t[0])
			}
			return nil
		},
		back: func(be tensor.Backend, g []*tensor.Tensor, dy *tensor.Tensor, t []*tensor.Tensor, y *tensor.Tensor, _ []*tensor.Tensor) {
			be.UnaryBackward(op, g[0], dy, t[0], y)
		},
		tol:     elemTol,
		gradTol: elemTol,
	}
}

func unaryGroup(short bool) group {
	type U = tensor.UnaryOp
	x := []int{3, 5, 7}
	away0 := genAway(0.01, 0)
	cs := []kcase{
		unaryCase(U{Kind: tensor.UReLU}, x, away0, false),
		unaryCase(U{Kind: tensor.ULeakyReLU, A: 0.2}, x, away0, false),
		unaryCase(U{Kind: tensor.UTanh}, x, genUniform(-2, 2), false),
		unaryCase(U{Kind: tensor.USigmoid}, x, genUniform(-3, 3), false),
		unaryCase(U{Kind: tensor.USqrt}, x, genUniform(0.2, 2), false),
		unaryCase(U{Kind: tensor.UAbs}, x, away0, false),
		unaryCase(U{Kind: tensor.USquare}, x, nil, false),
		unaryCase(U{Kind: tensor.UClamp, A: -0.5, B: 0.5}, x, genAway(0.01, -0.5, 0.5), false),
		unaryCase(U{Kind: tensor.UAffine, A: 1.5, B: -0.25}, x, nil, false),
		unaryCase(U{Kind: tensor.USmoothL1, A: 0.5}, x, genAway(0.01, -0.5, 0.5), false),
		unaryCase(U{Kind: tensor.USmoothL1, A: 1}, x, genAway(0.01, -1, 1), false),
		unaryCase(U{Kind: tensor.USoftplus}, x, genUniform(-4, 4), false),
		unaryCase(U{Kind: tensor.UExp}, x, genUniform(-2, 2), false),
		unaryCase(U{Kind: tensor.ULog}, x, genUniform(0.2, 3), false),
		// y may be x.
		unaryCase(U{Kind: tensor.UReLU}, x, away0, true),
		unaryCase(U{Kind: tensor.UTanh}, x, genUniform(-2, 2), true),
		unaryCase(U{Kind: tensor.USigmoid}, x, genUniform(-3, 3), true),
		// Large enough to be split across workers.
		unaryCase(U{Kind: tensor.ULeakyReLU, A: 0.2}, []int{2, 3, 100, 111}, away0, false),
	}
	if !short {
		cs = append(cs, unaryCase(U{Kind: tensor.UTanh}, []int{2, 3, 100, 111}, nil, true))
	}
	return group{"Unary", cs}
}

var binaryNames = map[tensor.BinaryOp]string{tensor.BAdd: "add", tensor.BSub: "sub", tensor.BMul: "mul", tensor.BDiv: "div"}

// binaryCase is Binary and BinaryBackward of a ∘ b with broadcasting. inPlace
// writes the result over (a copy of) a, which must have the output's shape.
func binaryCase(op tensor.BinaryOp, a, b []int, inPlace bool) kcase {
	out := RefBroadcastShape(a, b)
	var genB func(*rand.Rand, int) []float64
	if op == tensor.BDiv {
		genB = genMagnitude(0.5, 1.5)
	}
	name := fmt.Sprintf("%s_a%s_b%s", binaryNames[op], shp(a), shp(b))
	if inPlace {
		name += "_inplace"
	}
	// A gradient element of a broadcast operand sums the output elements it
	// broadcast to.
	terms := max(numel(out)/numel(a), numel(out)/numel(b))
	return kcase{
		name: name,
		in:   []operand{{name: "a", shape: a, grad: true}, {name: "b", shape: b, gen: genB, grad: true}},
		out:  out,
		ref:  func(x []Array) Array { return RefBinary(op, x[0], x[1]) },
		run: func(be tensor.Backend, y *tensor.Tensor, t []*tensor.Tensor) []*tensor.Tensor {
			if inPlace {
				be.Copy(y, t[0])
				be.Binary(op, y, y, t[1])
			} else {
				be.Binary(op, y, t[0], t[1])
			}
			return nil
		},
		back: func(be tensor.Backend, g []*tensor.Tensor, dy *tensor.Tensor, t []*tensor.Tensor, _ *tensor.Tensor, _ []*tensor.Tensor) {
			be.BinaryBackward(op, g[0], g[1], dy, t[0], t[1])
		},
		multiGrad: true,
		// Division's gradient −a·dy/b² is three roundings.
		tol:     elemTol,
		gradTol: elemTol + sumTol(terms),
	}
}

func binaryGroup(short bool) group {
	shapes := [][2][]int{
		{{2, 3, 4, 5}, {2, 3, 4, 5}},
		{{2, 3, 4, 5}, {1, 3, 1, 1}}, // per-channel (N,C,H,W)∘(1,C,1,1)
		{{2, 3, 4, 5}, {3, 1, 1}},    // (C,1,1), fewer dimensions
		{{2, 3, 4, 5}, {1}},          // a scalar
		{{2, 1, 4, 5}, {2, 3, 4, 5}}, // a broadcast along C
		{{2, 3, 4, 5}, {2, 1, 4, 5}}, // (N,1,H,W)
		{{3, 1}, {1, 4}},             // both broadcast
		{{5}, {4, 5}},
	}
	var cs []kcase
	for _, op := range []tensor.BinaryOp{tensor.BAdd, tensor.BSub, tensor.BMul, tensor.BDiv} {
		for _, s := range shapes {
			cs = append(cs, binaryCase(op, s[0], s[1], false))
		}
	}
	cs = append(cs,
		binaryCase(tensor.BMul, []int{2, 3, 4, 5}, []int{1, 3, 1, 1}, true),
		binaryCase(tensor.BSub, []int{2, 3, 4, 5}, []int{2, 3, 4, 5}, true),
		// Large enough to be split across workers.
		binaryCase(tensor.BMul, []int{2, 20, 32, 33}, []int{1, 20, 1, 1}, false),
	)
	if !short {
		cs = append(cs, binaryCase(tensor.BDiv, []int{2, 3, 100, 111}, []int{2, 3, 100, 111}, false))
	}
	return group{"Binary", cs}
}
