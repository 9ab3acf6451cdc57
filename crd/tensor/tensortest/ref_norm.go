package tensortest

import (
	"math"

	"github.com/crdgo/crdgo/crd/tensor"
)

// RefActivate applies a fused activation to v: identity, ReLU max(v, 0), or
// LeakyReLU (v if v > 0 else Slope·v).
func RefActivate(a tensor.Activation, v float64) float64 {
	switch a.Kind {
	case tensor.ActReLU:
		return math.Max(v, 0)
	case tensor.ActLeakyReLU:
		if v > 0 {
			return v
		}
		return float64(a.Slope) * v
	}
	return v
}

// RefInstanceNorm is torch.nn.functional.instance_norm followed by act: every
// (n,c) plane of x (N,C,H,W) is normalised with its own mean and biased
// variance over H×W,
//
//	y = act(γ_c · (x − mean) / √(var + eps) + β_c),
//
// gamma and beta (C) may be absent (1 and 0). The result has x's shape.
func RefInstanceNorm(x, gamma, beta Array, eps float64, act tensor.Activation) Array {
	n, c, h, w := must4D("RefInstanceNorm", "x", x)
	mustVec("RefInstanceNorm", "gamma", gamma, c)
	mustVec("RefInstanceNorm", "beta", beta, c)
	y := Zeros(x.Shape...)
	hw := h * w
	for p := 0; p < n*c; p++ {
		ch := p % c
		plane := x.Data[p*hw : (p+1)*hw]
		var mean float64
		for _, v := range plane {
			mean += v
		}
		mean /= float64(hw)
		var variance float64
		for _, v := range plane {
			variance += (v - mean) * (v - mean)
		}
		variance /= float64(hw)
		rstd := 1 / math.Sqrt(variance+eps)
		for i, v := range plane {
			y.Data[p*hw+i] = RefActivate(act, vecAt(gamma, ch, 1)*(v-mean)*rstd+vecAt(beta, ch, 0))
		}
	}
	return y
}

// RefInstanceNormStats returns the per-plane mean and 1/√(var + eps) (biased
// variance) of x (N,C,H,W), each of shape (N·C): what the InstanceNorm kernel
// stores for its backward pass.
func RefInstanceNormStats(x Array, eps float64) (mean, rstd Array) {
	n, c, h, w := must4D("RefInstanceNormStats", "x", x)
	hw := h * w
	mean, rstd = Zeros(n*c), Zeros(n*c)
	for p := 0; p < n*c; p++ {
		plane := x.Data[p*hw : (p+1)*hw]
		var m, v float64
		for _, e := range plane {
			m += e
		}
		m /= float64(hw)
		for _, e := range plane {
			v += (e - m) * (e - m)
		}
		mean.Data[p], rstd.Data[p] = m, 1/math.Sqrt(v/float64(hw)+eps)
	}
	return mean, rstd
}

// RefBatchNormTrain is torch.nn.functional.batch_norm in training mode followed
// by act: each channel of x (N,C,H,W) is normalised with the batch's mean and
// biased variance over (N,H,W),
//
//	y = act(γ_c · (x − mean_c) / √(var_c + eps) + β_c),
//
// gamma and beta (C) may be absent. It returns y and the statistics mean and
// variance (C), the variance biased (divided by the count N·H·W); PyTorch's
// running_var takes the unbiased one, variance·count/(count − 1).
func RefBatchNormTrain(x, gamma, beta Array, eps float64, act tensor.Activation) (y, mean, variance Array) {
	n, c, h, w := must4D("RefBatchNormTrain", "x", x)
	mean, variance = Zeros(c), Zeros(c)
	count := float64(n * h * w)
	for i, v := range x.Data {
		mean.Data[(i/(h*w))%c] += v
	}
	for k := range mean.Data {
		mean.Data[k] /= count
	}
	for i, v := range x.Data {
		d := v - mean.Data[(i/(h*w))%c]
		variance.Data[(i/(h*w))%c] += d * d
	}
	for k := range variance.Data {
		variance.Data[k] /= count
	}
	return RefBatchNormEval(x, mean, variance, gamma, beta, eps, act), mean, variance
}

// RefBatchNormEval is torch.nn.functional.batch_norm in evaluation mode
// followed by act: y = act(γ_c · (x − mean_c) / √(variance_c + eps) + β_c) with
// the given statistics mean and variance (C); x is (N,C,H,W); gamma and beta
// (C) may be absent.
func RefBatchNormEval(x, mean, variance, gamma, beta Array, eps float64, act tensor.Activation) Array {
	_, c, h, w := must4D("RefBatchNormEval", "x", x)
	mustVec("RefBatchNormEval", "mean", mean, c)
	mustVec("RefBatchNormEval", "variance", variance, c)
	mustVec("RefBatchNormEval", "gamma", gamma, c)
	mustVec("RefBatchNormEval", "beta", beta, c)
	y := Zeros(x.Shape...)
	for i, v := range x.Data {
		k := (i / (h * w)) % c
		y.Data[i] = RefActivate(act, vecAt(gamma, k, 1)*(v-mean.Data[k])/math.Sqrt(variance.Data[k]+eps)+vecAt(beta, k, 0))
	}
	return y
}
