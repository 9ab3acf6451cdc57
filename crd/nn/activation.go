package nn

import "github.com/crdgo/crdgo/crd/tensor"

// Unary applies an elementwise function (tensor.UnaryOp) to x.
func Unary(tp *Tape, op tensor.UnaryOp, x *Var) *Var {
	y := tp.New(x.Value.Shape...)
	tp.be.Unary(op, y, x.Value)
	return tp.record(y, func(dy *tensor.Tensor) {
		tp.be.UnaryBackward(op, tp.grad(x), dy, x.Value, y)
	}, x)
}

// ReLU is max(x, 0).
func ReLU(tp *Tape, x *Var) *Var { return Unary(tp, tensor.UnaryOp{Kind: tensor.UReLU}, x) }

// LeakyReLU is x for x > 0, slope·x otherwise.
func LeakyReLU(tp *Tape, x *Var, slope float32) *Var {
	return Unary(tp, tensor.UnaryOp{Kind: tensor.ULeakyReLU, A: slope}, x)
}

// Tanh is the hyperbolic tangent.
func Tanh(tp *Tape, x *Var) *Var { return Unary(tp, tensor.UnaryOp{Kind: tensor.UTanh}, x) }

// Sigmoid is 1/(1+e⁻ˣ).
func Sigmoid(tp *Tape, x *Var) *Var { return Unary(tp, tensor.UnaryOp{Kind: tensor.USigmoid}, x) }

// Sqrt is the elementwise square root.
func Sqrt(tp *Tape, x *Var) *Var { return Unary(tp, tensor.UnaryOp{Kind: tensor.USqrt}, x) }

// Abs is |x| (gradient sign(x), 0 at 0).
func Abs(tp *Tape, x *Var) *Var { return Unary(tp, tensor.UnaryOp{Kind: tensor.UAbs}, x) }

// Square is x².
func Square(tp *Tape, x *Var) *Var { return Unary(tp, tensor.UnaryOp{Kind: tensor.USquare}, x) }

// Clamp is min(max(x, lo), hi); the gradient passes where lo ≤ x ≤ hi.
func Clamp(tp *Tape, x *Var, lo, hi float32) *Var {
	return Unary(tp, tensor.UnaryOp{Kind: tensor.UClamp, A: lo, B: hi}, x)
}

// Scale is a·x.
func Scale(tp *Tape, x *Var, a float32) *Var {
	return Unary(tp, tensor.UnaryOp{Kind: tensor.UAffine, A: a}, x)
}

// Affine is a·x + b.
func Affine(tp *Tape, x *Var, a, b float32) *Var {
	return Unary(tp, tensor.UnaryOp{Kind: tensor.UAffine, A: a, B: b}, x)
}

// Softplus is log(1 + eˣ).
func Softplus(tp *Tape, x *Var) *Var { return Unary(tp, tensor.UnaryOp{Kind: tensor.USoftplus}, x) }

// Exp is eˣ.
func Exp(tp *Tape, x *Var) *Var { return Unary(tp, tensor.UnaryOp{Kind: tensor.UExp}, x) }

// Log is the natural logarithm.
func Log(tp *Tape, x *Var) *Var { return Unary(tp, tensor.UnaryOp{Kind: tensor.ULog}, x) }
