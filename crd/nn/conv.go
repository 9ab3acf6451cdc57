package nn

import "github.com/crdgo/crdgo/crd/tensor"

// Conv2D is y = conv(x, w) + b: x (N,Cin,H,W), w (Cout,Cin/groups,kh,kw),
// b (Cout) or nil, y (N,Cout,OH,OW). Backward skips the weight and bias
// gradients of frozen parameters but still passes the gradient to x.
func Conv2D(tp *Tape, x, w, b *Var, p tensor.ConvParams) *Var {
	q := p.Norm()
	xs, ws := x.Value.Shape, w.Value.Shape
	oh := tensor.ConvOut(xs[2], ws[2], q.StrideH, q.PadH, q.DilationH)
	ow := tensor.ConvOut(xs[3], ws[3], q.StrideW, q.PadW, q.DilationW)
	y := tp.New(xs[0], ws[0], oh, ow)
	var bt *tensor.Tensor
	if b != nil {
		bt = b.Value
	}
	tp.be.Conv2D(y, x.Value, w.Value, bt, q)
	return tp.record(y, func(dy *tensor.Tensor) {
		tp.be.Conv2DBackward(tp.grad(x), tp.grad(w), tp.grad(b), dy, x.Value, w.Value, q)
	}, x, w, b)
}

// ConvTranspose2D is PyTorch's conv_transpose2d: w (Cin,Cout/groups,kh,kw),
// y (N,Cout,OH,OW) with OH = (H−1)·stride − 2·pad + dil·(kh−1) + outpad + 1.
func ConvTranspose2D(tp *Tape, x, w, b *Var, p tensor.ConvParams) *Var {
	q := p.Norm()
	xs, ws := x.Value.Shape, w.Value.Shape
	oh := tensor.ConvTransposeOut(xs[2], ws[2], q.StrideH, q.PadH, q.DilationH, q.OutPadH)
	ow := tensor.ConvTransposeOut(xs[3], ws[3], q.StrideW, q.PadW, q.DilationW, q.OutPadW)
	y := tp.New(xs[0], ws[1]*q.Groups, oh, ow)
	var bt *tensor.Tensor
	if b != nil {
		bt = b.Value
	}
	tp.be.ConvTranspose2D(y, x.Value, w.Value, bt, q)
	return tp.record(y, func(dy *tensor.Tensor) {
		tp.be.ConvTranspose2DBackward(tp.grad(x), tp.grad(w), tp.grad(b), dy, x.Value, w.Value, q)
	}, x, w, b)
}
