package nn

import "github.com/crdgo/crdgo/crd/tensor"

// Pad2D pads the last two dimensions of x with zeros or by reflection
// (PyTorch's ReflectionPad2d: the border row is not repeated).
func Pad2D(tp *Tape, x *Var, p tensor.Padding) *Var {
	s := x.Value.Shape.Clone()
	r := len(s)
	s[r-2] += p.Top + p.Bottom
	s[r-1] += p.Left + p.Right
	y := tp.New(s...)
	tp.be.Pad2D(y, x.Value, p)
	return tp.record(y, func(dy *tensor.Tensor) {
		tp.be.Pad2DBackward(tp.grad(x), dy, p)
	}, x)
}

// ReflectPad2D pads all four sides of x by n with reflection.
func ReflectPad2D(tp *Tape, x *Var, n int) *Var {
	return Pad2D(tp, x, tensor.Padding{Top: n, Bottom: n, Left: n, Right: n, Mode: tensor.PadReflect})
}
