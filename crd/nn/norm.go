package nn

import "github.com/crdgo/crdgo/crd/tensor"

// InstanceNorm normalises every (n,c) plane of x (N,C,H,W) over H×W with the
// biased variance, optionally scales by gamma and shifts by beta (C, or nil),
// and applies the fused activation act. Forward keeps mean and rstd (N·C) for
// the backward pass, nothing more.
func InstanceNorm(tp *Tape, x, gamma, beta *Var, eps float32, act tensor.Activation) *Var {
	s := x.Value.Shape
	y := tp.New(s...)
	mean, rstd := tp.New(s[0]*s[1]), tp.New(s[0]*s[1])
	tp.be.InstanceNorm(y, mean, rstd, x.Value, valueOf(gamma), valueOf(beta), eps, act)
	return tp.record(y, func(dy *tensor.Tensor) {
		tp.be.InstanceNormBackward(tp.grad(x), tp.grad(gamma), tp.grad(beta), dy, x.Value, y, mean, rstd, valueOf(gamma), act)
	}, x, gamma, beta)
}

func valueOf(v *Var) *tensor.Tensor {
	if v == nil {
		return nil
	}
	return v.Value
}
