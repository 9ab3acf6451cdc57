package nn

import "github.com/crdgo/crdgo/crd/tensor"

func poolOut(x *Var, p tensor.PoolParams) tensor.Shape {
	q := p.Norm()
	s := x.Value.Shape.Clone()
	r := len(s)
	s[r-2] = (s[r-2]+2*q.PadH-q.KH)/q.StrideH + 1
	s[r-1] = (s[r-1]+2*q.PadW-q.KW)/q.StrideW + 1
	return s
}

// MaxPool2D takes the maximum over each window (floor mode, padding is −∞).
func MaxPool2D(tp *Tape, x *Var, p tensor.PoolParams) *Var {
	y := tp.New(poolOut(x, p)...)
	tp.be.MaxPool2D(y, x.Value, p)
	return tp.record(y, func(dy *tensor.Tensor) {
		tp.be.MaxPool2DBackward(tp.grad(x), dy, x.Value, p)
	}, x)
}

// AvgPool2D averages each window (floor mode; p.CountIncludePad as PyTorch).
func AvgPool2D(tp *Tape, x *Var, p tensor.PoolParams) *Var {
	y := tp.New(poolOut(x, p)...)
	tp.be.AvgPool2D(y, x.Value, p)
	return tp.record(y, func(dy *tensor.Tensor) {
		tp.be.AvgPool2DBackward(tp.grad(x), dy, p)
	}, x)
}

// AdaptiveAvgPool2D averages x into an oh×ow grid (PyTorch's bins).
func AdaptiveAvgPool2D(tp *Tape, x *Var, oh, ow int) *Var {
	s := x.Value.Shape.Clone()
	s[len(s)-2], s[len(s)-1] = oh, ow
	y := tp.New(s...)
	tp.be.AdaptiveAvgPool2D(y, x.Value)
	return tp.record(y, func(dy *tensor.Tensor) {
		tp.be.AdaptiveAvgPool2DBackward(tp.grad(x), dy)
	}, x)
}

// ResizeBilinear resizes the last two dimensions to oh×ow (interpolate,
// mode="bilinear").
func ResizeBilinear(tp *Tape, x *Var, oh, ow int, alignCorners bool) *Var {
	s := x.Value.Shape.Clone()
	s[len(s)-2], s[len(s)-1] = oh, ow
	y := tp.New(s...)
	tp.be.ResizeBilinear(y, x.Value, alignCorners)
	return tp.record(y, func(dy *tensor.Tensor) {
		tp.be.ResizeBilinearBackward(tp.grad(x), dy, alignCorners)
	}, x)
}
