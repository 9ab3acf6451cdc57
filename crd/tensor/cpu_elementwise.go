package tensor

import (
	"fmt"
	"math"
)

// elemGrain is the smallest number of elements worth a goroutine.
const elemGrain = 32768

// Unary sets y = f(x).
func (c *CPU) Unary(op UnaryOp, y, x *Tensor) {
	mustLen("Unary", y.Numel(), x.Numel())
	xs, ys := x.Data, y.Data
	c.parallelFor(len(xs), elemGrain, func(lo, hi int) {
		unaryRange(op, ys[lo:hi], xs[lo:hi])
	})
}

func unaryRange(op UnaryOp, ys, xs []float32) {
	a, b := op.A, op.B
	switch op.Kind {
	case UReLU:
		for i, v := range xs {
			ys[i] = max(v, 0)
		}
	case ULeakyReLU:
		for i, v := range xs {
			if v > 0 {
				ys[i] = v
			} else {
				ys[i] = a * v
			}
		}
	case UTanh:
		for i, v := range xs {
			ys[i] = float32(math.Tanh(float64(v)))
		}
	case USigmoid:
		for i, v := range xs {
			ys[i] = float32(sigmoid64(float64(v)))
		}
	case USqrt:
		for i, v := range xs {
			ys[i] = float32(math.Sqrt(float64(v)))
		}
	case UAbs:
		for i, v := range xs {
			ys[i] = float32(math.Abs(float64(v)))
		}
	case USquare:
		for i, v := range xs {
			ys[i] = v * v
		}
	case UClamp:
		for i, v := range xs {
			ys[i] = min(max(v, a), b)
		}
	case UAffine:
		for i, v := range xs {
			ys[i] = a*v + b
		}
	case USmoothL1:
		for i, v := range xs {
			z := float32(math.Abs(float64(v)))
			if z < a {
				ys[i] = 0.5 * v * v / a
			} else {
				ys[i] = z - 0.5*a
			}
		}
	case USoftplus:
		for i, v := range xs {
			ys[i] = float32(softplus64(float64(v)))
		}
	case UExp:
		for i, v := range xs {
			ys[i] = float32(math.Exp(float64(v)))
		}
	case ULog:
		for i, v := range xs {
			ys[i] = float32(math.Log(float64(v)))
		}
	default:
		panic(fmt.Sprintf("tensor: Unary: unknown op %d", op.Kind))
	}
}

func sigmoid64(v float64) float64 {
	if v >= 0 {
		return 1 / (1 + math.Exp(-v))
	}
	e := math.Exp(v)
	return e / (1 + e)
}

// softplus64 is log(1+eᵛ) without overflow: max(v,0) + log1p(e^−|v|).
func softplus64(v float64) float64 {
	return math.Max(v, 0) + math.Log1p(math.Exp(-math.Abs(v)))
}

// UnaryBackward adds dx += dy·f′.
func (c *CPU) UnaryBackward(op UnaryOp, dx, dy, x, y *Tensor) {
	mustLen("UnaryBackward", dx.Numel(), dy.Numel())
	n := dx.Numel()
	var xs, ys []float32
	if x != nil {
		xs = x.Data
	}
	if y != nil {
		ys = y.Data
	}
	c.parallelFor(n, elemGrain, func(lo, hi int) {
		unaryBackwardRange(op, dx.Data[lo:hi], dy.Data[lo:hi], sub(xs, lo, hi), sub(ys, lo, hi))
	})
}

func sub(s []float32, lo, hi int) []float32 {
	if s == nil {
		return nil
	}
	return s[lo:hi]
}

func unaryBackwardRange(op UnaryOp, dx, dy, xs, ys []float32) {
	a, b := op.A, op.B
	need := func(s []float32, what string) []float32 {
		if s == nil {
			panic(fmt.Sprintf("tensor: UnaryBackward op %d needs %s", op.Kind, what))
		}
		return s
	}
	switch op.Kind {
	case UReLU:
		xs = need(xs, "x")
		for i, g := range dy {
			if xs[i] > 0 {
				dx[i] += g
			}
		}
	case ULeakyReLU:
		xs = need(xs, "x")
		for i, g := range dy {
			if xs[i] > 0 {
				dx[i] += g
			} else {
				dx[i] += a * g
			}
		}
	case UTanh:
		ys = need(ys, "y")
		for i, g := range dy {
			dx[i] += g * (1 - ys[i]*ys[i])
		}
	case USigmoid:
		ys = need(ys, "y")
		for i, g := range dy {
			dx[i] += g * ys[i] * (1 - ys[i])
		}
	case USqrt:
		ys = need(ys, "y")
		for i, g := range dy {
			dx[i] += g * 0.5 / ys[i]
		}
	case UAbs:
		xs = need(xs, "x")
		for i, g := range dy {
			switch {
			case xs[i] > 0:
				dx[i] += g
			case xs[i] < 0:
				dx[i] -= g
			}
		}
	case USquare:
		xs = need(xs, "x")
		for i, g := range dy {
			dx[i] += 2 * xs[i] * g
		}
	case UClamp:
		xs = need(xs, "x")
		for i, g := range dy {
			if xs[i] >= a && xs[i] <= b {
				dx[i] += g
			}
		}
	case UAffine:
		for i, g := range dy {
			dx[i] += a * g
		}
	case USmoothL1:
		xs = need(xs, "x")
		for i, g := range dy {
			v := xs[i]
			switch {
			case v >= a:
				dx[i] += g
			case v <= -a:
				dx[i] -= g
			default:
				dx[i] += g * v / a
			}
		}
	case USoftplus:
		xs = need(xs, "x")
		for i, g := range dy {
			dx[i] += g * float32(sigmoid64(float64(xs[i])))
		}
	case UExp:
		ys = need(ys, "y")
		for i, g := range dy {
			dx[i] += g * ys[i]
		}
	case ULog:
		xs = need(xs, "x")
		for i, g := range dy {
			dx[i] += g / xs[i]
		}
	default:
		panic(fmt.Sprintf("tensor: UnaryBackward: unknown op %d", op.Kind))
	}
}

func binaryScalar(op BinaryOp, a, b float32) float32 {
	switch op {
	case BAdd:
		return a + b
	case BSub:
		return a - b
	case BMul:
		return a * b
	case BDiv:
		return a / b
	}
	panic(fmt.Sprintf("tensor: unknown binary op %d", op))
}

// Binary sets y = a ∘ b with broadcasting.
func (c *CPU) Binary(op BinaryOp, y, a, b *Tensor) {
	want, ok := BroadcastShape(a.Shape, b.Shape)
	if !ok || want.Numel() != y.Numel() {
		panic(fmt.Sprintf("tensor: Binary: %v ∘ %v → %v", a.Shape, b.Shape, y.Shape))
	}
	if a.Numel() == y.Numel() && b.Numel() == y.Numel() {
		c.parallelFor(y.Numel(), elemGrain, func(lo, hi int) {
			binaryRange(op, y.Data[lo:hi], a.Data[lo:hi], 1, b.Data[lo:hi], 1)
		})
		return
	}
	p := newBcastPlan("Binary", want, a.Shape, b.Shape)
	inner, rows := p.inner(), p.rows()
	sa, sb := p.innerStride(0), p.innerStride(1)
	c.parallelFor(rows, max(1, elemGrain/inner), func(lo, hi int) {
		offs := make([]int, 2)
		for r := lo; r < hi; r++ {
			p.rowOffsets(r, offs)
			binaryRange(op, y.Data[r*inner:(r+1)*inner], a.Data[offs[0]:], sa, b.Data[offs[1]:], sb)
		}
	})
}

// binaryRange sets ys[i] = as[i·sa] ∘ bs[i·sb].
func binaryRange(op BinaryOp, ys, as []float32, sa int, bs []float32, sb int) {
	n := len(ys)
	if sa == 1 && sb == 1 {
		as, bs = as[:n], bs[:n]
		switch op {
		case BAdd:
			for i := range ys {
				ys[i] = as[i] + bs[i]
			}
		case BSub:
			for i := range ys {
				ys[i] = as[i] - bs[i]
			}
		case BMul:
			for i := range ys {
				ys[i] = as[i] * bs[i]
			}
		case BDiv:
			for i := range ys {
				ys[i] = as[i] / bs[i]
			}
		}
		return
	}
	if sa == 1 && sb == 0 {
		bv := bs[0]
		as = as[:n]
		switch op {
		case BAdd:
			for i := range ys {
				ys[i] = as[i] + bv
			}
		case BSub:
			for i := range ys {
				ys[i] = as[i] - bv
			}
		case BMul:
			for i := range ys {
				ys[i] = as[i] * bv
			}
		case BDiv:
			for i := range ys {
				ys[i] = as[i] / bv
			}
		}
		return
	}
	for i := range ys {
		ys[i] = binaryScalar(op, as[i*sa], bs[i*sb])
	}
}

// BinaryBackward adds the gradients of Binary, reduced over broadcast dimensions.
func (c *CPU) BinaryBackward(op BinaryOp, da, db, dy, a, b *Tensor) {
	grad := func(dst *Tensor, forA bool) {
		if dst == nil {
			return
		}
		self := b
		if forA {
			self = a
		}
		mustShape("BinaryBackward", "gradient", dst, self.Shape...)
		// Local derivative times dy, at the output shape.
		var t *Tensor
		switch {
		case op == BAdd || (op == BSub && forA):
			t = dy
		case op == BSub:
			c.ReduceSum(dst, dy, -1, true)
			return
		default:
			t = &Tensor{Shape: dy.Shape, Data: c.getScratch(dy.Numel())}
			defer c.putScratch(t.Data)
			switch {
			case op == BMul && forA:
				c.Binary(BMul, t, dy, b)
			case op == BMul:
				c.Binary(BMul, t, dy, a)
			case op == BDiv && forA:
				c.Binary(BDiv, t, dy, b)
			default: // ∂(a/b)/∂b = −a/b²
				c.Binary(BMul, t, dy, a)
				c.Binary(BDiv, t, t, b)
				c.Binary(BDiv, t, t, b)
				c.Unary(UnaryOp{Kind: UAffine, A: -1}, t, t)
			}
		}
		if dst.Numel() == t.Numel() {
			c.parallelFor(t.Numel(), elemGrain, func(lo, hi int) {
				d, s := dst.Data[lo:hi], t.Data[lo:hi]
				for i := range d {
					d[i] += s[i]
				}
			})
			return
		}
		c.ReduceSum(dst, t, 1, true)
	}
	grad(da, true)
	grad(db, false)
}

// ReduceSum sets or adds y = alpha·Σ x over the dimensions where y is 1.
func (c *CPU) ReduceSum(y, x *Tensor, alpha float32, accumulate bool) {
	// Pad y's shape on the left to x's rank.
	r := len(x.Shape)
	if len(y.Shape) > r {
		panic(fmt.Sprintf("tensor: ReduceSum: %v → %v", x.Shape, y.Shape))
	}
	ys := make(Shape, r)
	for d := range ys {
		j := len(y.Shape) - r + d
		ys[d] = 1
		if j >= 0 {
			ys[d] = y.Shape[j]
		}
		if ys[d] != 1 && ys[d] != x.Shape[d] {
			panic(fmt.Sprintf("tensor: ReduceSum: %v → %v", x.Shape, y.Shape))
		}
	}
	store := func(i int, s float64) {
		v := alpha * float32(s)
		if accumulate {
			y.Data[i] += v
		} else {
			y.Data[i] = v
		}
	}
	if y.Numel() == 1 {
		store(0, c.sumAll(x.Data))
		return
	}
	if y.Numel() == x.Numel() {
		for i, v := range x.Data {
			store(i, float64(v))
		}
		return
	}
	// Iterate y's elements (in parallel); for each, walk the reduced dimensions
	// of x. kept/red hold, per dimension, y's size or the reduced size.
	xst := x.Shape.Strides()
	var keptDims, keptSt, redDims, redSt []int
	for d := 0; d < r; d++ {
		if ys[d] == 1 {
			if x.Shape[d] != 1 {
				redDims = append(redDims, x.Shape[d])
				redSt = append(redSt, xst[d])
			}
		} else {
			keptDims = append(keptDims, ys[d])
			keptSt = append(keptSt, xst[d])
		}
	}
	nred := 1
	for _, d := range redDims {
		nred *= d
	}
	c.parallelFor(y.Numel(), max(1, elemGrain/max(nred, 1)), func(lo, hi int) {
		for i := lo; i < hi; i++ {
			base, rem := 0, i
			for d := len(keptDims) - 1; d >= 0; d-- {
				base += (rem % keptDims[d]) * keptSt[d]
				rem /= keptDims[d]
			}
			var s float64
			if len(redDims) == 1 && redSt[0] == 1 {
				s = sum64(x.Data[base : base+redDims[0]])
			} else {
				for j := 0; j < nred; j++ {
					off, rem := base, j
					for d := len(redDims) - 1; d >= 0; d-- {
						off += (rem % redDims[d]) * redSt[d]
						rem /= redDims[d]
					}
					s += float64(x.Data[off])
				}
			}
			store(i, s)
		}
	})
}

// sumBlock is the fixed block size of whole-tensor sums: partial sums of
// blocks are combined in block order, so the result does not depend on the
// number of workers.
const sumBlock = 16384

func (c *CPU) sumAll(x []float32) float64 {
	nb := (len(x) + sumBlock - 1) / sumBlock
	if nb <= 1 {
		return sum64(x)
	}
	part := make([]float64, nb)
	c.parallelFor(nb, 4, func(lo, hi int) {
		for b := lo; b < hi; b++ {
			part[b] = sum64(x[b*sumBlock : min((b+1)*sumBlock, len(x))])
		}
	})
	var s float64
	for _, p := range part {
		s += p
	}
	return s
}

// BroadcastAdd adds dst += alpha·src broadcast to dst's shape.
func (c *CPU) BroadcastAdd(dst, src *Tensor, alpha float32) {
	if dst.Numel() == src.Numel() {
		c.parallelFor(dst.Numel(), elemGrain, func(lo, hi int) {
			d, s := dst.Data[lo:hi], src.Data[lo:hi]
			for i := range d {
				d[i] += alpha * s[i]
			}
		})
		return
	}
	p := newBcastPlan("BroadcastAdd", dst.Shape, src.Shape)
	inner, rows := p.inner(), p.rows()
	ss := p.innerStride(0)
	c.parallelFor(rows, max(1, elemGrain/inner), func(lo, hi int) {
		offs := make([]int, 1)
		for r := lo; r < hi; r++ {
			p.rowOffsets(r, offs)
			d := dst.Data[r*inner : (r+1)*inner]
			s := src.Data[offs[0]:]
			for i := range d {
				d[i] += alpha * s[i*ss]
			}
		}
	})
}

// CopyAxis copies a slab along one axis.
func (c *CPU) CopyAxis(dst, src *Tensor, axis, dstStart, srcStart, n int, accumulate bool) {
	if len(dst.Shape) != len(src.Shape) || axis < 0 || axis >= len(dst.Shape) {
		panic(fmt.Sprintf("tensor: CopyAxis: %v → %v along %d", src.Shape, dst.Shape, axis))
	}
	for d := range dst.Shape {
		if d != axis && dst.Shape[d] != src.Shape[d] {
			panic(fmt.Sprintf("tensor: CopyAxis: %v → %v along %d", src.Shape, dst.Shape, axis))
		}
	}
	if n < 0 || srcStart < 0 || dstStart < 0 || srcStart+n > src.Shape[axis] || dstStart+n > dst.Shape[axis] {
		panic(fmt.Sprintf("tensor: CopyAxis: [%d,+%d) of %v into [%d,+%d) of %v", srcStart, n, src.Shape, dstStart, n, dst.Shape))
	}
	outer := Shape(dst.Shape[:axis]).Numel()
	inner := Shape(dst.Shape[axis+1:]).Numel()
	ds, ss := dst.Shape[axis]*inner, src.Shape[axis]*inner
	blk := n * inner
	c.parallelFor(outer, max(1, elemGrain/max(blk, 1)), func(lo, hi int) {
		for o := lo; o < hi; o++ {
			d := dst.Data[o*ds+dstStart*inner : o*ds+dstStart*inner+blk]
			s := src.Data[o*ss+srcStart*inner : o*ss+srcStart*inner+blk]
			if accumulate {
				for i := range d {
					d[i] += s[i]
				}
			} else {
				copy(d, s)
			}
		}
	})
}

// Permute reorders dimensions: y.Shape[i] = x.Shape[perm[i]].
func (c *CPU) Permute(y, x *Tensor, perm []int, accumulate bool) {
	r := len(x.Shape)
	if len(perm) != r || len(y.Shape) != r {
		panic(fmt.Sprintf("tensor: Permute: %v by %v → %v", x.Shape, perm, y.Shape))
	}
	xst := x.Shape.Strides()
	st := make([]int, r) // x stride for each y dimension
	seen := make([]bool, r)
	for i, p := range perm {
		if p < 0 || p >= r || seen[p] || y.Shape[i] != x.Shape[p] {
			panic(fmt.Sprintf("tensor: Permute: %v by %v → %v", x.Shape, perm, y.Shape))
		}
		seen[p] = true
		st[i] = xst[p]
	}
	plan := bcastPlan{dims: y.Shape.Clone(), st: [][]int{st}}
	if r == 0 {
		plan = bcastPlan{dims: []int{1}, st: [][]int{{0}}}
	}
	inner, rows := plan.inner(), plan.rows()
	is := plan.innerStride(0)
	c.parallelFor(rows, max(1, elemGrain/max(inner, 1)), func(lo, hi int) {
		offs := make([]int, 1)
		for row := lo; row < hi; row++ {
			plan.rowOffsets(row, offs)
			d := y.Data[row*inner : (row+1)*inner]
			s := x.Data[offs[0]:]
			if accumulate {
				for i := range d {
					d[i] += s[i*is]
				}
			} else {
				for i := range d {
					d[i] = s[i*is]
				}
			}
		}
	})
}

// Pad2D pads the last two dimensions.
func (c *CPU) Pad2D(y, x *Tensor, p Padding) {
	h, w, planes := padGeom("Pad2D", y, x, p)
	oh, ow := h+p.Top+p.Bottom, w+p.Left+p.Right
	c.parallelFor(planes, max(1, elemGrain/(oh*ow)), func(lo, hi int) {
		for pl := lo; pl < hi; pl++ {
			src := x.Data[pl*h*w : (pl+1)*h*w]
			dst := y.Data[pl*oh*ow : (pl+1)*oh*ow]
			for oy := 0; oy < oh; oy++ {
				drow := dst[oy*ow : (oy+1)*ow]
				iy, ok := padIndex(oy-p.Top, h, p.Mode)
				if !ok {
					clear(drow)
					continue
				}
				srow := src[iy*w : (iy+1)*w]
				copy(drow[p.Left:p.Left+w], srow)
				for ox := 0; ox < p.Left; ox++ {
					drow[ox] = padValue(srow, ox-p.Left, w, p.Mode)
				}
				for ox := p.Left + w; ox < ow; ox++ {
					drow[ox] = padValue(srow, ox-p.Left, w, p.Mode)
				}
			}
		}
	})
}

// Pad2DBackward adds the gradient of Pad2D: reflected border cells add into the
// cells they copied.
func (c *CPU) Pad2DBackward(dx, dy *Tensor, p Padding) {
	h, w, planes := padGeom("Pad2DBackward", dy, dx, p)
	oh, ow := h+p.Top+p.Bottom, w+p.Left+p.Right
	c.parallelFor(planes, max(1, elemGrain/(oh*ow)), func(lo, hi int) {
		for pl := lo; pl < hi; pl++ {
			dst := dx.Data[pl*h*w : (pl+1)*h*w]
			src := dy.Data[pl*oh*ow : (pl+1)*oh*ow]
			for oy := 0; oy < oh; oy++ {
				iy, ok := padIndex(oy-p.Top, h, p.Mode)
				if !ok {
					continue
				}
				srow := src[oy*ow : (oy+1)*ow]
				drow := dst[iy*w : (iy+1)*w]
				for ox, g := range srow {
					ix, ok := padIndex(ox-p.Left, w, p.Mode)
					if ok {
						drow[ix] += g
					}
				}
			}
		}
	})
}

func padGeom(op string, y, x *Tensor, p Padding) (h, w, planes int) {
	r := len(x.Shape)
	if r < 2 || len(y.Shape) != r || p.Top < 0 || p.Bottom < 0 || p.Left < 0 || p.Right < 0 {
		panic(fmt.Sprintf("tensor: %s: %v → %v with %+v", op, x.Shape, y.Shape, p))
	}
	h, w = x.Shape[r-2], x.Shape[r-1]
	if y.Shape[r-2] != h+p.Top+p.Bottom || y.Shape[r-1] != w+p.Left+p.Right {
		panic(fmt.Sprintf("tensor: %s: %v → %v with %+v", op, x.Shape, y.Shape, p))
	}
	for d := 0; d < r-2; d++ {
		if x.Shape[d] != y.Shape[d] {
			panic(fmt.Sprintf("tensor: %s: %v → %v", op, x.Shape, y.Shape))
		}
	}
	if p.Mode == PadReflect && (p.Top >= h || p.Bottom >= h || p.Left >= w || p.Right >= w) {
		panic(fmt.Sprintf("tensor: %s: reflection padding %+v needs more than %d×%d", op, p, h, w))
	}
	return h, w, Shape(x.Shape[:r-2]).Numel()
}

// padIndex maps a padded coordinate i (relative to the input's origin) to the
// input coordinate it copies, or ok=false for a zero.
func padIndex(i, n int, mode PadMode) (int, bool) {
	if i >= 0 && i < n {
		return i, true
	}
	if mode == PadZero {
		return 0, false
	}
	if i < 0 {
		return -i, true
	}
	return 2*(n-1) - i, true
}

func padValue(row []float32, i, n int, mode PadMode) float32 {
	j, ok := padIndex(i, n, mode)
	if !ok {
		return 0
	}
	return row[j]
}
