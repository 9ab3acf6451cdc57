package tensortest

import (
	"fmt"
	"math"

	"github.com/crdgo/crdgo/crd/tensor"
)

// RefUnary applies op elementwise to x (any shape), as the PyTorch function of
// the same name: relu, leaky_relu(A), tanh, sigmoid, sqrt, abs, square,
// clamp(A, B), A·x + B, smooth L1 against 0 with β = A (x²/(2β) where |x| < β,
// else |x| − β/2), softplus log(1 + eˣ), exp and log.
func RefUnary(op tensor.UnaryOp, x Array) Array {
	a, b := float64(op.A), float64(op.B)
	y := Zeros(x.Shape...)
	for i, v := range x.Data {
		var r float64
		switch op.Kind {
		case tensor.UReLU:
			r = math.Max(v, 0)
		case tensor.ULeakyReLU:
			r = v
			if v <= 0 {
				r = a * v
			}
		case tensor.UTanh:
			r = math.Tanh(v)
		case tensor.USigmoid:
			r = 1 / (1 + math.Exp(-v))
		case tensor.USqrt:
			r = math.Sqrt(v)
		case tensor.UAbs:
			r = math.Abs(v)
		case tensor.USquare:
			r = v * v
		case tensor.UClamp:
			r = math.Min(math.Max(v, a), b)
		case tensor.UAffine:
			r = a*v + b
		case tensor.USmoothL1:
			if math.Abs(v) < a {
				r = v * v / (2 * a)
			} else {
				r = math.Abs(v) - a/2
			}
		case tensor.USoftplus:
			// log(1 + eᵛ) = v + log(1 + e⁻ᵛ): the second form for v > 0 avoids overflow.
			if v > 0 {
				r = v + math.Log1p(math.Exp(-v))
			} else {
				r = math.Log1p(math.Exp(v))
			}
		case tensor.UExp:
			r = math.Exp(v)
		case tensor.ULog:
			r = math.Log(v)
		default:
			panic(fmt.Sprintf("tensortest: RefUnary: unknown op %d", op.Kind))
		}
		y.Data[i] = r
	}
	return y
}

// RefBroadcastShape is NumPy's broadcast of shapes a and b: aligned at the
// right, each pair of dimensions equal or one of them 1. It panics when they
// do not broadcast.
func RefBroadcastShape(a, b []int) []int {
	r := max(len(a), len(b))
	out := make([]int, r)
	for i := range out {
		da, db := 1, 1
		if j := i - (r - len(a)); j >= 0 {
			da = a[j]
		}
		if j := i - (r - len(b)); j >= 0 {
			db = b[j]
		}
		switch {
		case da == db || db == 1:
			out[i] = da
		case da == 1:
			out[i] = db
		default:
			panic(fmt.Sprintf("tensortest: shapes %v and %v do not broadcast", a, b))
		}
	}
	return out
}

// broadcastIndex returns the flat index into an array of shape in (aligned at
// the right with the coordinates idx of a larger shape) of the element that
// broadcasts to idx.
func broadcastIndex(in, idx []int) int {
	off := len(idx) - len(in)
	flat := 0
	for d, n := range in {
		c := 0
		if n != 1 {
			c = idx[off+d]
		}
		flat = flat*n + c
	}
	return flat
}

// RefBinary is a ∘ b elementwise with NumPy broadcasting (torch.add, sub, mul,
// div); the result has RefBroadcastShape(a.Shape, b.Shape).
func RefBinary(op tensor.BinaryOp, a, b Array) Array {
	shape := RefBroadcastShape(a.Shape, b.Shape)
	y := Zeros(shape...)
	idx := make([]int, len(shape))
	for i := range y.Data {
		unravel(i, shape, idx)
		u, v := a.Data[broadcastIndex(a.Shape, idx)], b.Data[broadcastIndex(b.Shape, idx)]
		switch op {
		case tensor.BAdd:
			y.Data[i] = u + v
		case tensor.BSub:
			y.Data[i] = u - v
		case tensor.BMul:
			y.Data[i] = u * v
		case tensor.BDiv:
			y.Data[i] = u / v
		default:
			panic(fmt.Sprintf("tensortest: RefBinary: unknown op %d", op))
		}
	}
	return y
}

// RefScale returns alpha·x.
func RefScale(alpha float64, x Array) Array {
	y := x.Clone()
	for i := range y.Data {
		y.Data[i] *= alpha
	}
	return y
}

// RefReduceSum sums x over every dimension where shape is 1 and x is not,
// torch.sum(x, dims, keepdim=True) reshaped to shape. shape has x's rank or
// fewer dimensions, aligned at the right as in broadcasting (so (C,1,1) sums an
// (N,C,H,W) x over N, H and W); every dimension of shape is 1 or x's.
func RefReduceSum(x Array, shape []int) Array {
	if len(shape) > len(x.Shape) {
		panic(fmt.Sprintf("tensortest: RefReduceSum: %v to %v", x.Shape, shape))
	}
	for d, n := range shape {
		if xd := x.Shape[len(x.Shape)-len(shape)+d]; n != 1 && n != xd {
			panic(fmt.Sprintf("tensortest: RefReduceSum: %v to %v", x.Shape, shape))
		}
	}
	y := Zeros(shape...)
	idx := make([]int, len(x.Shape))
	for i, v := range x.Data {
		unravel(i, x.Shape, idx)
		y.Data[broadcastIndex(shape, idx)] += v
	}
	return y
}

// RefPermute is torch.permute: result dimension i is x's dimension perm[i].
func RefPermute(x Array, perm []int) Array {
	if len(perm) != len(x.Shape) {
		panic(fmt.Sprintf("tensortest: RefPermute: %v by %v", x.Shape, perm))
	}
	shape := make([]int, len(perm))
	for i, p := range perm {
		shape[i] = x.Shape[p]
	}
	y := Zeros(shape...)
	xst := strides(x.Shape)
	idx := make([]int, len(shape))
	for i := range y.Data {
		unravel(i, shape, idx)
		off := 0
		for d, p := range perm {
			off += idx[d] * xst[p]
		}
		y.Data[i] = x.Data[off]
	}
	return y
}

// RefSliceAxis is torch.narrow(x, axis, start, n): the elements of x whose
// coordinate along axis lies in [start, start+n).
func RefSliceAxis(x Array, axis, start, n int) Array {
	if axis < 0 || axis >= len(x.Shape) || start < 0 || n < 0 || start+n > x.Shape[axis] {
		panic(fmt.Sprintf("tensortest: RefSliceAxis: [%d, +%d) of %v along %d", start, n, x.Shape, axis))
	}
	shape := append([]int(nil), x.Shape...)
	shape[axis] = n
	y := Zeros(shape...)
	idx := make([]int, len(shape))
	xst := strides(x.Shape)
	for i := range y.Data {
		unravel(i, shape, idx)
		off := 0
		for d, c := range idx {
			if d == axis {
				c += start
			}
			off += c * xst[d]
		}
		y.Data[i] = x.Data[off]
	}
	return y
}

// RefConcat is torch.cat(xs, axis): the arrays, equal in every other
// dimension, one after the other along axis.
func RefConcat(axis int, xs ...Array) Array {
	if len(xs) == 0 || axis < 0 || axis >= len(xs[0].Shape) {
		panic(fmt.Sprintf("tensortest: RefConcat: %d arrays along %d", len(xs), axis))
	}
	shape := append([]int(nil), xs[0].Shape...)
	shape[axis] = 0
	for _, x := range xs {
		for d := range shape {
			if len(x.Shape) != len(shape) || (d != axis && x.Shape[d] != shape[d]) {
				panic(fmt.Sprintf("tensortest: RefConcat: %v does not match %v along %d", x.Shape, xs[0].Shape, axis))
			}
		}
		shape[axis] += x.Shape[axis]
	}
	y := Zeros(shape...)
	yst := strides(shape)
	idx := make([]int, len(shape))
	start := 0
	for _, x := range xs {
		for i, v := range x.Data {
			unravel(i, x.Shape, idx)
			idx[axis] += start
			off := 0
			for d, c := range idx {
				off += c * yst[d]
			}
			y.Data[off] = v
		}
		start += x.Shape[axis]
	}
	return y
}

// RefPad2D is torch.nn.functional.pad of the last two dimensions of x (rank ≥ 2)
// with p.Top/Bottom rows and p.Left/Right columns, mode "constant" (zeros) or
// "reflect" (the border mirrored without repeating the edge: index −1 copies
// 1; PyTorch requires every pad < the padded dimension).
func RefPad2D(x Array, p tensor.Padding) Array {
	r := len(x.Shape)
	if r < 2 {
		panic(fmt.Sprintf("tensortest: RefPad2D: x %v", x.Shape))
	}
	h, w := x.Shape[r-2], x.Shape[r-1]
	if p.Mode == tensor.PadReflect && (p.Top >= h || p.Bottom >= h || p.Left >= w || p.Right >= w) {
		panic(fmt.Sprintf("tensortest: RefPad2D: reflect padding %+v of %d×%d", p, h, w))
	}
	oh, ow := h+p.Top+p.Bottom, w+p.Left+p.Right
	shape := append(append([]int(nil), x.Shape[:r-2]...), oh, ow)
	y := Zeros(shape...)
	src := func(i, n int) (int, bool) {
		switch {
		case i >= 0 && i < n:
			return i, true
		case p.Mode == tensor.PadZero:
			return 0, false
		case i < 0:
			return -i, true // reflect about index 0
		default:
			return 2*(n-1) - i, true // reflect about index n−1
		}
	}
	for pl := 0; pl < numel(x.Shape[:r-2]); pl++ {
		for oy := 0; oy < oh; oy++ {
			iy, oky := src(oy-p.Top, h)
			for ox := 0; ox < ow; ox++ {
				ix, okx := src(ox-p.Left, w)
				if oky && okx {
					y.Data[(pl*oh+oy)*ow+ox] = x.Data[(pl*h+iy)*w+ix]
				}
			}
		}
	}
	return y
}

// RefMatMul is op(a)·op(b), op transposing the last two dimensions when its
// flag is set: a (m×k) or, transposed, (k×m); b (k×n) or (n×k); result (m×n).
// With 3-D operands (B,·,·) it is torch.bmm, one product per batch entry.
func RefMatMul(a, b Array, transA, transB bool) Array {
	r := len(a.Shape)
	if (r != 2 && r != 3) || len(b.Shape) != r || (r == 3 && a.Shape[0] != b.Shape[0]) {
		panic(fmt.Sprintf("tensortest: RefMatMul: %v · %v", a.Shape, b.Shape))
	}
	batch := 1
	if r == 3 {
		batch = a.Shape[0]
	}
	ar, ac, br, bc := a.Shape[r-2], a.Shape[r-1], b.Shape[r-2], b.Shape[r-1]
	m, k := ar, ac
	if transA {
		m, k = ac, ar
	}
	kb, n := br, bc
	if transB {
		kb, n = bc, br
	}
	if k != kb {
		panic(fmt.Sprintf("tensortest: RefMatMul: %v (trans %v) · %v (trans %v)", a.Shape, transA, b.Shape, transB))
	}
	at := func(s int, i, l int) float64 { // op(a)[i,l]
		if transA {
			return a.Data[s*ar*ac+l*ac+i]
		}
		return a.Data[s*ar*ac+i*ac+l]
	}
	bt := func(s int, l, j int) float64 { // op(b)[l,j]
		if transB {
			return b.Data[s*br*bc+j*bc+l]
		}
		return b.Data[s*br*bc+l*bc+j]
	}
	shape := []int{m, n}
	if r == 3 {
		shape = []int{batch, m, n}
	}
	y := Zeros(shape...)
	for s := 0; s < batch; s++ {
		for i := 0; i < m; i++ {
			for j := 0; j < n; j++ {
				var acc float64
				for l := 0; l < k; l++ {
					acc += at(s, i, l) * bt(s, l, j)
				}
				y.Data[(s*m+i)*n+j] = acc
			}
		}
	}
	return y
}
