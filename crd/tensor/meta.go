package tensor

import (
	"fmt"
	"slices"
)

// Meta is a Backend of shapes only: its tensors have a Shape and no storage
// (Data and Device are nil), and its kernels check their operands' shapes the
// way the CPU kernels do, panicking with the op name and the shapes, and
// compute nothing. Running a network's forward pass on Meta costs microseconds
// at any image size and allocates no activations, which is what a complexity
// counter needs: the shape of every operand of every kernel.
//
// Download fills dst with zeros (there are no values to copy), Upload only
// checks the length. Code that computes on downloaded values (batch norm's
// statistics on the host) therefore sees zeros and must not rely on them.
//
// A Meta value holds no state and may be used from several goroutines.
type Meta struct{}

// NewMeta returns the shape-only backend.
func NewMeta() *Meta { return &Meta{} }

// Name is "meta".
func (*Meta) Name() string { return "meta" }

// New returns a tensor of the given shape without storage.
func (*Meta) New(shape Shape) *Tensor {
	for _, d := range shape {
		if d < 0 {
			panic(fmt.Sprintf("tensor: meta New: negative dimension in %v", shape))
		}
	}
	return &Tensor{Shape: shape.Clone()}
}

// View returns a storage-less tensor after checking the range.
func (*Meta) View(t *Tensor, offset int, shape Shape) *Tensor {
	n := shape.Numel()
	if offset < 0 || offset+n > t.Numel() {
		panic(fmt.Sprintf("tensor: meta View [%d, %d) of %d elements", offset, offset+n, t.Numel()))
	}
	return &Tensor{Shape: shape.Clone()}
}

// Upload checks that src has t's number of elements.
func (*Meta) Upload(t *Tensor, src []float32) { metaLen("Upload", len(src), t.Numel()) }

// Download checks the length and sets dst to zeros.
func (*Meta) Download(dst []float32, t *Tensor) {
	metaLen("Download", len(dst), t.Numel())
	clear(dst)
}

// Copy checks that dst and src have the same number of elements.
func (*Meta) Copy(dst, src *Tensor) { metaLen("Copy", src.Numel(), dst.Numel()) }

// Fill does nothing.
func (*Meta) Fill(*Tensor, float32) {}

// MatMul checks the operands of c = alpha·op(a)·op(b) + beta·c.
func (*Meta) MatMul(c, a, b *Tensor, transA, transB bool, _, _ float32) {
	r := len(a.Shape)
	bad := r != len(b.Shape) || r != len(c.Shape) || (r != 2 && r != 3)
	if !bad {
		if r == 3 && (b.Shape[0] != a.Shape[0] || c.Shape[0] != a.Shape[0]) {
			bad = true
		}
		m, k := a.Shape[r-2], a.Shape[r-1]
		if transA {
			m, k = k, m
		}
		k2, n := b.Shape[r-2], b.Shape[r-1]
		if transB {
			k2, n = n, k2
		}
		bad = bad || k != k2 || c.Shape[r-2] != m || c.Shape[r-1] != n
	}
	if bad {
		panic(fmt.Sprintf("tensor: meta MatMul: shapes %v·%v (transA %v, transB %v) → %v", a.Shape, b.Shape, transA, transB, c.Shape))
	}
}

// MetaConvShape checks the operands of Conv2D (x, w, and b when not nil) and
// returns y's shape.
func MetaConvShape(x, w, b *Tensor, p ConvParams) Shape {
	p = p.Norm()
	if len(x.Shape) != 4 || len(w.Shape) != 4 || p.Groups < 1 ||
		x.Shape[1]%p.Groups != 0 || w.Shape[0]%p.Groups != 0 || w.Shape[1] != x.Shape[1]/p.Groups {
		panic(fmt.Sprintf("tensor: Conv2D: x %v, w %v, groups %d", x.Shape, w.Shape, p.Groups))
	}
	oh := ConvOut(x.Shape[2], w.Shape[2], p.StrideH, p.PadH, p.DilationH)
	ow := ConvOut(x.Shape[3], w.Shape[3], p.StrideW, p.PadW, p.DilationW)
	if oh <= 0 || ow <= 0 {
		panic(fmt.Sprintf("tensor: Conv2D: x %v with kernel %v, params %+v: empty output", x.Shape, w.Shape, p))
	}
	if b != nil && !b.Shape.Equal(Shape{w.Shape[0]}) {
		panic(fmt.Sprintf("tensor: Conv2D: b %v for %d output channels", b.Shape, w.Shape[0]))
	}
	return Shape{x.Shape[0], w.Shape[0], oh, ow}
}

// MetaConvTransposeShape checks the operands of ConvTranspose2D and returns
// y's shape.
func MetaConvTransposeShape(x, w, b *Tensor, p ConvParams) Shape {
	p = p.Norm()
	if len(x.Shape) != 4 || len(w.Shape) != 4 || p.Groups < 1 || w.Shape[0] != x.Shape[1] || x.Shape[1]%p.Groups != 0 {
		panic(fmt.Sprintf("tensor: ConvTranspose2D: x %v, w %v, groups %d", x.Shape, w.Shape, p.Groups))
	}
	cout := w.Shape[1] * p.Groups
	oh := ConvTransposeOut(x.Shape[2], w.Shape[2], p.StrideH, p.PadH, p.DilationH, p.OutPadH)
	ow := ConvTransposeOut(x.Shape[3], w.Shape[3], p.StrideW, p.PadW, p.DilationW, p.OutPadW)
	if p.OutPadH >= max(p.StrideH, p.DilationH) || p.OutPadW >= max(p.StrideW, p.DilationW) || oh <= 0 || ow <= 0 {
		panic(fmt.Sprintf("tensor: ConvTranspose2D: x %v, w %v, params %+v: bad output padding or empty output", x.Shape, w.Shape, p))
	}
	if b != nil && !b.Shape.Equal(Shape{cout}) {
		panic(fmt.Sprintf("tensor: ConvTranspose2D: b %v for %d output channels", b.Shape, cout))
	}
	return Shape{x.Shape[0], cout, oh, ow}
}

// Conv2D checks shapes.
func (*Meta) Conv2D(y, x, w, b *Tensor, p ConvParams) {
	metaShape("Conv2D", "y", y, MetaConvShape(x, w, b, p))
}

// Conv2DBackward checks shapes.
func (*Meta) Conv2DBackward(dx, dw, db, dy, x, w *Tensor, p ConvParams) {
	metaShape("Conv2DBackward", "dy", dy, MetaConvShape(x, w, db, p))
	metaSame("Conv2DBackward", "dx", dx, x)
	metaSame("Conv2DBackward", "dw", dw, w)
}

// ConvTranspose2D checks shapes.
func (*Meta) ConvTranspose2D(y, x, w, b *Tensor, p ConvParams) {
	metaShape("ConvTranspose2D", "y", y, MetaConvTransposeShape(x, w, b, p))
}

// ConvTranspose2DBackward checks shapes.
func (*Meta) ConvTranspose2DBackward(dx, dw, db, dy, x, w *Tensor, p ConvParams) {
	metaShape("ConvTranspose2DBackward", "dy", dy, MetaConvTransposeShape(x, w, db, p))
	metaSame("ConvTranspose2DBackward", "dx", dx, x)
	metaSame("ConvTranspose2DBackward", "dw", dw, w)
}

// InstanceNorm checks shapes.
func (*Meta) InstanceNorm(y, mean, rstd, x, gamma, beta *Tensor, _ float32, _ Activation) {
	n, c := metaPlanes("InstanceNorm", x)
	metaSame("InstanceNorm", "y", y, x)
	metaLen("InstanceNorm mean", mean.Numel(), n*c)
	metaLen("InstanceNorm rstd", rstd.Numel(), n*c)
	metaChannel("InstanceNorm", "gamma", gamma, c)
	metaChannel("InstanceNorm", "beta", beta, c)
}

// InstanceNormBackward checks shapes.
func (*Meta) InstanceNormBackward(dx, dgamma, dbeta, dy, x, y, mean, rstd, gamma *Tensor, _ Activation) {
	n, c := metaPlanes("InstanceNormBackward", x)
	metaSame("InstanceNormBackward", "dy", dy, x)
	metaSame("InstanceNormBackward", "y", y, x)
	metaSame("InstanceNormBackward", "dx", dx, x)
	metaLen("InstanceNormBackward mean", mean.Numel(), n*c)
	metaLen("InstanceNormBackward rstd", rstd.Numel(), n*c)
	metaChannel("InstanceNormBackward", "gamma", gamma, c)
	metaChannel("InstanceNormBackward", "dgamma", dgamma, c)
	metaChannel("InstanceNormBackward", "dbeta", dbeta, c)
}

// ChannelSums checks shapes.
func (*Meta) ChannelSums(s1, s2, x, shift *Tensor) {
	_, c := metaPlanes("ChannelSums", x)
	metaLen("ChannelSums s1", s1.Numel(), c)
	if s2 != nil {
		metaLen("ChannelSums s2", s2.Numel(), c)
	}
	if shift != nil {
		metaLen("ChannelSums shift", shift.Numel(), c)
	}
}

// BatchNormApply checks shapes.
func (*Meta) BatchNormApply(y, x, mean, rstd, gamma, beta *Tensor, _ Activation) {
	_, c := metaPlanes("BatchNormApply", x)
	metaSame("BatchNormApply", "y", y, x)
	metaLen("BatchNormApply mean", mean.Numel(), c)
	metaLen("BatchNormApply rstd", rstd.Numel(), c)
	metaChannel("BatchNormApply", "gamma", gamma, c)
	metaChannel("BatchNormApply", "beta", beta, c)
}

// BatchNormBackwardSums checks shapes.
func (*Meta) BatchNormBackwardSums(sdy, sdyx, dy, x, y, mean, rstd *Tensor, _ Activation) {
	_, c := metaPlanes("BatchNormBackwardSums", x)
	metaSame("BatchNormBackwardSums", "dy", dy, x)
	metaSame("BatchNormBackwardSums", "y", y, x)
	for _, t := range []*Tensor{sdy, sdyx, mean, rstd} {
		metaLen("BatchNormBackwardSums per-channel operand", t.Numel(), c)
	}
}

// BatchNormBackward checks shapes.
func (*Meta) BatchNormBackward(dx, dy, x, y, mean, rstd, gamma, sdy, sdyx *Tensor, _ float32, _ Activation) {
	_, c := metaPlanes("BatchNormBackward", x)
	metaSame("BatchNormBackward", "dx", dx, x)
	metaSame("BatchNormBackward", "dy", dy, x)
	metaSame("BatchNormBackward", "y", y, x)
	metaChannel("BatchNormBackward", "gamma", gamma, c)
	for _, t := range []*Tensor{sdy, sdyx, mean, rstd} {
		metaLen("BatchNormBackward per-channel operand", t.Numel(), c)
	}
}

// MetaPadShape checks a padding of x and returns the padded shape.
func MetaPadShape(x *Tensor, p Padding) Shape {
	r := len(x.Shape)
	if r < 2 || p.Top < 0 || p.Bottom < 0 || p.Left < 0 || p.Right < 0 {
		panic(fmt.Sprintf("tensor: Pad2D: x %v, padding %+v", x.Shape, p))
	}
	h, w := x.Shape[r-2], x.Shape[r-1]
	if p.Mode == PadReflect && (max(p.Top, p.Bottom) >= h || max(p.Left, p.Right) >= w) {
		panic(fmt.Sprintf("tensor: Pad2D: reflection padding %+v of %v: must be smaller than the input", p, x.Shape))
	}
	s := x.Shape.Clone()
	s[r-2] += p.Top + p.Bottom
	s[r-1] += p.Left + p.Right
	return s
}

// Pad2D checks shapes.
func (*Meta) Pad2D(y, x *Tensor, p Padding) { metaShape("Pad2D", "y", y, MetaPadShape(x, p)) }

// Pad2DBackward checks shapes.
func (*Meta) Pad2DBackward(dx, dy *Tensor, p Padding) {
	metaShape("Pad2DBackward", "dy", dy, MetaPadShape(dx, p))
}

// Unary checks that y and x have the same number of elements.
func (*Meta) Unary(op UnaryOp, y, x *Tensor) {
	if y.Numel() != x.Numel() {
		panic(fmt.Sprintf("tensor: meta Unary %d: y %v, x %v", op.Kind, y.Shape, x.Shape))
	}
}

// UnaryBackward checks shapes.
func (*Meta) UnaryBackward(op UnaryOp, dx, dy, x, y *Tensor) {
	if dy.Numel() != x.Numel() || (dx != nil && dx.Numel() != x.Numel()) {
		panic(fmt.Sprintf("tensor: meta UnaryBackward %d: x %v, dy %v", op.Kind, x.Shape, dy.Shape))
	}
}

// Binary checks that y has the broadcast shape of a and b.
func (*Meta) Binary(op BinaryOp, y, a, b *Tensor) {
	s, ok := BroadcastShape(a.Shape, b.Shape)
	if !ok || !s.Equal(y.Shape) {
		panic(fmt.Sprintf("tensor: meta Binary %d: %v ∘ %v → %v", op, a.Shape, b.Shape, y.Shape))
	}
}

// BinaryBackward checks shapes.
func (*Meta) BinaryBackward(op BinaryOp, da, db, dy, a, b *Tensor) {
	s, ok := BroadcastShape(a.Shape, b.Shape)
	if !ok || !s.Equal(dy.Shape) {
		panic(fmt.Sprintf("tensor: meta BinaryBackward %d: %v ∘ %v → %v", op, a.Shape, b.Shape, dy.Shape))
	}
	metaSame("BinaryBackward", "da", da, a)
	metaSame("BinaryBackward", "db", db, b)
}

// ReduceSum checks that y is x reduced over some dimensions.
func (*Meta) ReduceSum(y, x *Tensor, _ float32, _ bool) {
	if s, ok := BroadcastShape(x.Shape, y.Shape); !ok || !s.Equal(x.Shape) {
		panic(fmt.Sprintf("tensor: meta ReduceSum: %v → %v", x.Shape, y.Shape))
	}
}

// BroadcastAdd checks that src broadcasts to dst.
func (*Meta) BroadcastAdd(dst, src *Tensor, _ float32) {
	if s, ok := BroadcastShape(dst.Shape, src.Shape); !ok || !s.Equal(dst.Shape) {
		// A gradient may arrive with the same elements in another shape
		// (Reshape's backward); the CPU kernel accepts equal counts too.
		if dst.Numel() != src.Numel() {
			panic(fmt.Sprintf("tensor: meta BroadcastAdd: %v into %v", src.Shape, dst.Shape))
		}
	}
}

// CopyAxis checks the slab bounds.
func (*Meta) CopyAxis(dst, src *Tensor, axis, dstStart, srcStart, n int, _ bool) {
	bad := len(dst.Shape) != len(src.Shape) || axis < 0 || axis >= len(dst.Shape)
	if !bad {
		for d := range dst.Shape {
			bad = bad || (d != axis && dst.Shape[d] != src.Shape[d])
		}
		bad = bad || n < 0 || srcStart < 0 || dstStart < 0 || srcStart+n > src.Shape[axis] || dstStart+n > dst.Shape[axis]
	}
	if bad {
		panic(fmt.Sprintf("tensor: meta CopyAxis: [%d,+%d) of %v into [%d,+%d) of %v along %d", srcStart, n, src.Shape, dstStart, n, dst.Shape, axis))
	}
}

// Permute checks that y is x with dimensions reordered by perm.
func (*Meta) Permute(y, x *Tensor, perm []int, _ bool) {
	r := len(x.Shape)
	bad := len(perm) != r || len(y.Shape) != r
	seen := make([]bool, r)
	for i, p := range perm {
		if bad || p < 0 || p >= r || seen[p] || y.Shape[i] != x.Shape[p] {
			bad = true
			break
		}
		seen[p] = true
	}
	if bad {
		panic(fmt.Sprintf("tensor: meta Permute: %v by %v → %v", x.Shape, perm, y.Shape))
	}
}

// MetaPoolShape checks a pooling window over x and returns the output shape
// (floor mode, as PyTorch's default).
func MetaPoolShape(x *Tensor, p PoolParams) Shape {
	q := p.Norm()
	r := len(x.Shape)
	if r < 2 || q.KH <= 0 || q.KW <= 0 || q.StrideH <= 0 || q.StrideW <= 0 || q.PadH < 0 || q.PadW < 0 ||
		2*q.PadH > q.KH || 2*q.PadW > q.KW {
		panic(fmt.Sprintf("tensor: pool: x %v with %+v", x.Shape, p))
	}
	s := x.Shape.Clone()
	s[r-2] = (s[r-2]+2*q.PadH-q.KH)/q.StrideH + 1
	s[r-1] = (s[r-1]+2*q.PadW-q.KW)/q.StrideW + 1
	if s[r-2] <= 0 || s[r-1] <= 0 {
		panic(fmt.Sprintf("tensor: pool: x %v with %+v: empty output", x.Shape, p))
	}
	return s
}

// MaxPool2D checks shapes.
func (*Meta) MaxPool2D(y, x *Tensor, p PoolParams) {
	metaShape("MaxPool2D", "y", y, MetaPoolShape(x, p))
}

// MaxPool2DBackward checks shapes.
func (*Meta) MaxPool2DBackward(dx, dy, x *Tensor, p PoolParams) {
	metaShape("MaxPool2DBackward", "dy", dy, MetaPoolShape(x, p))
	metaSame("MaxPool2DBackward", "dx", dx, x)
}

// AvgPool2D checks shapes.
func (*Meta) AvgPool2D(y, x *Tensor, p PoolParams) {
	metaShape("AvgPool2D", "y", y, MetaPoolShape(x, p))
}

// AvgPool2DBackward checks shapes.
func (*Meta) AvgPool2DBackward(dx, dy *Tensor, p PoolParams) {
	metaShape("AvgPool2DBackward", "dy", dy, MetaPoolShape(dx, p))
}

// AdaptiveAvgPool2D checks that y and x differ only in their last two dimensions.
func (*Meta) AdaptiveAvgPool2D(y, x *Tensor) { metaSpatial("AdaptiveAvgPool2D", y, x) }

// AdaptiveAvgPool2DBackward checks shapes.
func (*Meta) AdaptiveAvgPool2DBackward(dx, dy *Tensor) {
	metaSpatial("AdaptiveAvgPool2DBackward", dy, dx)
}

// ResizeBilinear checks that y and x differ only in their last two dimensions.
func (*Meta) ResizeBilinear(y, x *Tensor, _ bool) { metaSpatial("ResizeBilinear", y, x) }

// ResizeBilinearBackward checks shapes.
func (*Meta) ResizeBilinearBackward(dx, dy *Tensor, _ bool) {
	metaSpatial("ResizeBilinearBackward", dy, dx)
}

// Adam checks that the four operands have the same number of elements.
func (*Meta) Adam(param, grad, m, v *Tensor, p AdamParams) {
	n := param.Numel()
	metaLen("Adam grad", grad.Numel(), n)
	metaLen("Adam m", m.Numel(), n)
	metaLen("Adam v", v.Numel(), n)
	if p.Step < 1 {
		panic(fmt.Sprintf("tensor: meta Adam: step %d, want ≥ 1", p.Step))
	}
}

func metaLen(op string, got, want int) {
	if got != want {
		panic(fmt.Sprintf("tensor: meta %s: %d elements, want %d", op, got, want))
	}
}

func metaShape(op, name string, t *Tensor, want Shape) {
	if !t.Shape.Equal(want) {
		panic(fmt.Sprintf("tensor: meta %s: %s has shape %v, want %v", op, name, t.Shape, want))
	}
}

// metaSame checks that t (when not nil) has ref's shape.
func metaSame(op, name string, t, ref *Tensor) {
	if t != nil {
		metaShape(op, name, t, ref.Shape)
	}
}

func metaChannel(op, name string, t *Tensor, c int) {
	if t != nil {
		metaShape(op, name, t, Shape{c})
	}
}

func metaPlanes(op string, x *Tensor) (n, c int) {
	if len(x.Shape) != 4 {
		panic(fmt.Sprintf("tensor: meta %s: x %v: want (N,C,H,W)", op, x.Shape))
	}
	return x.Shape[0], x.Shape[1]
}

func metaSpatial(op string, y, x *Tensor) {
	r := len(x.Shape)
	if r < 2 || len(y.Shape) != r || !slices.Equal(y.Shape[:r-2], x.Shape[:r-2]) || y.Shape[r-2] <= 0 || y.Shape[r-1] <= 0 {
		panic(fmt.Sprintf("tensor: meta %s: %v → %v", op, x.Shape, y.Shape))
	}
}

var _ Backend = (*Meta)(nil)
