package nn

import "github.com/crdgo/crdgo/crd/tensor"

// Conv2d is a convolution layer: weight (Cout,Cin/groups,kh,kw) and optional
// bias (Cout), registered as prefix.weight and prefix.bias.
type Conv2d struct {
	Weight, Bias *Var
	Params       tensor.ConvParams
}

// NewConv2d registers a conv layer in ps with weights ~ N(0, std²) (CycleGAN's
// "normal" init uses 0.02) and zero bias.
func NewConv2d(ps *ParamSet, prefix string, cin, cout, kh, kw int, p tensor.ConvParams, bias bool, std float64) *Conv2d {
	p = p.Norm()
	l := &Conv2d{Params: p}
	l.Weight = ps.Add(prefix+".weight", Normal(0, std), cout, cin/p.Groups, kh, kw)
	if bias {
		l.Bias = ps.Add(prefix+".bias", Init{}, cout)
	}
	return l
}

// Forward applies the convolution.
func (l *Conv2d) Forward(tp *Tape, x *Var) *Var { return Conv2D(tp, x, l.Weight, l.Bias, l.Params) }

// ConvTranspose2d is a transposed-convolution layer: weight
// (Cin,Cout/groups,kh,kw) and optional bias (Cout).
type ConvTranspose2d struct {
	Weight, Bias *Var
	Params       tensor.ConvParams
}

// NewConvTranspose2d registers a transposed-conv layer in ps.
func NewConvTranspose2d(ps *ParamSet, prefix string, cin, cout, kh, kw int, p tensor.ConvParams, bias bool, std float64) *ConvTranspose2d {
	p = p.Norm()
	l := &ConvTranspose2d{Params: p}
	l.Weight = ps.Add(prefix+".weight", Normal(0, std), cin, cout/p.Groups, kh, kw)
	if bias {
		l.Bias = ps.Add(prefix+".bias", Init{}, cout)
	}
	return l
}

// Forward applies the transposed convolution.
func (l *ConvTranspose2d) Forward(tp *Tape, x *Var) *Var {
	return ConvTranspose2D(tp, x, l.Weight, l.Bias, l.Params)
}

// Linear is y = x·Wᵀ + b with W (out,in), as torch.nn.Linear.
type Linear struct {
	Weight, Bias *Var
}

// NewLinear registers prefix.weight (out,in) and prefix.bias (out).
func NewLinear(ps *ParamSet, prefix string, in, out int, bias bool, std float64) *Linear {
	l := &Linear{Weight: ps.Add(prefix+".weight", Normal(0, std), out, in)}
	if bias {
		l.Bias = ps.Add(prefix+".bias", Init{}, out)
	}
	return l
}

// Forward maps x (N,in) to (N,out).
func (l *Linear) Forward(tp *Tape, x *Var) *Var {
	y := MatMul(tp, x, l.Weight, false, true)
	if l.Bias != nil {
		y = Add(tp, y, l.Bias)
	}
	return y
}
