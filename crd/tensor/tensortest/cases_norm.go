package tensortest

import (
	"fmt"
	"math"

	"github.com/crdgo/crdgo/crd/tensor"
)

// normEps is the eps of most cases. The degenerate ones (one value per plane,
// two per channel) use a large eps: there the exact output or gradient is a
// difference of terms 1/√eps times larger, which float32 (like PyTorch's own
// fused x·(γ·rstd) + (β − mean·γ·rstd)) only resolves to u/√eps.
const normEps = 1e-5

// kinkMargin is how far from an activation's kink (0) every pre-activation
// must lie: a finite-difference step moves a normalised value by a few 1e-6
// (h·γ·rstd), float32 rounding by less than 1e-6. A wider margin makes large
// planes (8192 values) reject most draws.
const kinkMargin = 1e-5

func actName(a tensor.Activation) string {
	switch a.Kind {
	case tensor.ActReLU:
		return "relu"
	case tensor.ActLeakyReLU:
		return fmt.Sprintf("leaky%g", a.Slope)
	}
	return "none"
}

// awayFromKink accepts pre-activations z that are all at least kinkMargin from
// 0, or any z when there is no activation.
func awayFromKink(act tensor.Activation, z Array) bool {
	if act.Kind == tensor.ActNone {
		return true
	}
	for _, v := range z.Data {
		if math.Abs(v) < kinkMargin {
			return false
		}
	}
	return true
}

// optTensor returns ts[i] when i < len(ts), else nil (an absent γ or β).
func optTensor(ts []*tensor.Tensor, i int) *tensor.Tensor {
	if i < len(ts) {
		return ts[i]
	}
	return nil
}

func optArray(as []Array, i int) Array {
	if i < len(as) {
		return as[i]
	}
	return Array{}
}

// normTol is the tolerance of a normalisation over count elements: the
// statistics are summed in float64 (exact to float32), every output is a few
// float32 operations, but the backward pass subtracts means of count terms
// from g, which cancels: sumTol(count) covers the float32 sums of the
// gradient, the factor 4 the cancellation of g − mean(g) − x̂·mean(g·x̂).
func normTol(count int) float64 { return 4 * sumTol(count) }

// instanceNormCase is InstanceNorm and InstanceNormBackward of x (N,C,H,W),
// affine (γ, β) or not.
func instanceNormCase(x []int, affine bool, act tensor.Activation, eps float64) kcase {
	eps = f32(eps) // the kernel takes a float32
	in := []operand{{name: "x", shape: x, grad: true}}
	if affine {
		in = append(in,
			operand{name: "gamma", shape: []int{x[1]}, gen: genMagnitude(0.5, 1.5), grad: true},
			operand{name: "beta", shape: []int{x[1]}, gen: genUniform(-0.5, 0.5), grad: true})
	}
	name := fmt.Sprintf("x%s_%s_eps%g", shp(x), actName(act), float32(eps))
	if affine {
		name += "_affine"
	}
	hw := x[2] * x[3]
	// An output is x·(γ·rstd) + (β − mean·γ·rstd) in float32 (PyTorch's form
	// too): two products of size |x|·|γ|·rstd ≲ 4 rounded, for outputs of size
	// ≳ 1. A 1×1 plane's output is β (≲ 0.5) while the two products cancel.
	inTol := 16 * u32
	if hw == 1 {
		inTol = 16 * u32 * 4 / 0.5
	}
	return kcase{
		name: name,
		in:   in,
		out:  x,
		ref: func(a []Array) Array {
			return RefInstanceNorm(a[0], optArray(a, 1), optArray(a, 2), eps, act)
		},
		run: func(be tensor.Backend, y *tensor.Tensor, t []*tensor.Tensor) []*tensor.Tensor {
			mean, rstd := be.New(tensor.Shape{x[0] * x[1]}), be.New(tensor.Shape{x[0] * x[1]})
			be.InstanceNorm(y, mean, rstd, t[0], optTensor(t, 1), optTensor(t, 2), float32(eps), act)
			return []*tensor.Tensor{mean, rstd}
		},
		auxRef: func(a []Array) []Array {
			m, r := RefInstanceNormStats(a[0], eps)
			return []Array{m, r}
		},
		// The statistics are float64 sums rounded once to float32.
		auxTol: 4 * u32,
		back: func(be tensor.Backend, g []*tensor.Tensor, dy *tensor.Tensor, t []*tensor.Tensor, y *tensor.Tensor, aux []*tensor.Tensor) {
			be.InstanceNormBackward(g[0], optTensor(g, 1), optTensor(g, 2), dy, t[0], y, aux[0], aux[1], optTensor(t, 1), act)
		},
		multiGrad: affine,
		tol:       inTol,
		gradTol:   normTol(x[0] * hw),
		valid: func(a []Array) bool {
			return awayFromKink(act, RefInstanceNorm(a[0], optArray(a, 1), optArray(a, 2), eps, tensor.Activation{}))
		},
		// A 1×1 plane normalises to 0 whatever x is: y = β, dx = 0.
		zeroGrad: hw == 1,
	}
}

// bnStats computes the training statistics of x as package nn does, from the
// backend's ChannelSums: mean = Σx / count, then the centred sums about the
// rounded mean give var = (Σ(x−m)² − (Σ(x−m))²/count) / count, and
// rstd = 1/√(var + eps).
func bnStats(be tensor.Backend, x *tensor.Tensor, eps float64) (mean, rstd *tensor.Tensor, count int) {
	c := x.Shape[1]
	count = x.Shape[0] * x.Shape[2] * x.Shape[3]
	s1, s2 := be.New(tensor.Shape{c}), be.New(tensor.Shape{c})
	be.ChannelSums(s1, nil, x, nil)
	h1 := download(be, s1)
	hm := make([]float32, c)
	for k := range hm {
		hm[k] = float32(float64(h1[k]) / float64(count))
	}
	mean = be.New(tensor.Shape{c})
	be.Upload(mean, hm)
	be.ChannelSums(s1, s2, x, mean)
	d, ss := download(be, s1), download(be, s2)
	hr := make([]float32, c)
	for k := range hr {
		v := (float64(ss[k]) - float64(d[k])*float64(d[k])/float64(count)) / float64(count)
		hr[k] = float32(1 / math.Sqrt(math.Max(v, 0)+eps))
	}
	rstd = be.New(tensor.Shape{c})
	be.Upload(rstd, hr)
	return mean, rstd, count
}

// bnBackward is the training- or evaluation-mode backward pass of batch norm
// from the backend's kernels: per-channel sums of g = dy·act′ and g·x̂, which
// are dβ and dγ, then dx with the sums (count 0: fixed statistics).
func bnBackward(be tensor.Backend, dx, dgamma, dbeta, dy, x, y, mean, rstd, gamma *tensor.Tensor, count int, act tensor.Activation) {
	c := x.Shape[1]
	sdy, sdyx := be.New(tensor.Shape{c}), be.New(tensor.Shape{c})
	be.BatchNormBackwardSums(sdy, sdyx, dy, x, y, mean, rstd, act)
	if dgamma != nil {
		be.BroadcastAdd(dgamma, sdyx, 1)
	}
	if dbeta != nil {
		be.BroadcastAdd(dbeta, sdy, 1)
	}
	if dx != nil {
		be.BatchNormBackward(dx, dy, x, y, mean, rstd, gamma, sdy, sdyx, float32(count), act)
	}
}

// bnTrainCase is training-mode batch norm composed from ChannelSums,
// BatchNormApply, BatchNormBackwardSums and BatchNormBackward, against
// RefBatchNormTrain.
func bnTrainCase(x []int, affine bool, act tensor.Activation, eps float64) kcase {
	in := []operand{{name: "x", shape: x, grad: true}}
	if affine {
		in = append(in,
			operand{name: "gamma", shape: []int{x[1]}, gen: genMagnitude(0.5, 1.5), grad: true},
			operand{name: "beta", shape: []int{x[1]}, gen: genUniform(-0.5, 0.5), grad: true})
	}
	name := fmt.Sprintf("train_x%s_%s_eps%g", shp(x), actName(act), eps)
	if affine {
		name += "_affine"
	}
	count := x[0] * x[2] * x[3]
	return kcase{
		name: name,
		in:   in,
		out:  x,
		ref: func(a []Array) Array {
			y, _, _ := RefBatchNormTrain(a[0], optArray(a, 1), optArray(a, 2), eps, act)
			return y
		},
		run: func(be tensor.Backend, y *tensor.Tensor, t []*tensor.Tensor) []*tensor.Tensor {
			mean, rstd, _ := bnStats(be, t[0], eps)
			be.BatchNormApply(y, t[0], mean, rstd, optTensor(t, 1), optTensor(t, 2), act)
			return []*tensor.Tensor{mean, rstd}
		},
		auxRef: func(a []Array) []Array {
			_, m, v := RefBatchNormTrain(a[0], Array{}, Array{}, eps, act)
			r := Zeros(len(v.Data))
			for k, e := range v.Data {
				r.Data[k] = 1 / math.Sqrt(e+eps)
			}
			return []Array{m, r}
		},
		// mean: a float64 sum rounded once; rstd from float32 sums of
		// squares: a few roundings.
		auxTol: 16 * u32,
		back: func(be tensor.Backend, g []*tensor.Tensor, dy *tensor.Tensor, t []*tensor.Tensor, y *tensor.Tensor, aux []*tensor.Tensor) {
			bnBackward(be, g[0], optTensor(g, 1), optTensor(g, 2), dy, t[0], y, aux[0], aux[1], optTensor(t, 1), count, act)
		},
		multiGrad: affine,
		// The statistics carry the rounding of float32 sums (mean, s2) into
		// every output: a few u.
		tol:     16 * u32,
		gradTol: normTol(count),
		valid: func(a []Array) bool {
			z, _, _ := RefBatchNormTrain(a[0], optArray(a, 1), optArray(a, 2), eps, tensor.Activation{})
			return awayFromKink(act, z)
		},
	}
}

// bnEvalCase is evaluation-mode batch norm with fixed statistics (mean and
// variance are inputs without gradient): BatchNormApply with
// rstd = 1/√(var + eps), and BatchNormBackward with count 0.
func bnEvalCase(x []int, affine bool, act tensor.Activation) kcase {
	c := x[1]
	in := []operand{
		{name: "x", shape: x, grad: true},
		{name: "mean", shape: []int{c}, gen: genUniform(-0.3, 0.3)},
		{name: "var", shape: []int{c}, gen: genUniform(0.2, 2)},
	}
	if affine {
		in = append(in,
			operand{name: "gamma", shape: []int{c}, gen: genMagnitude(0.5, 1.5), grad: true},
			operand{name: "beta", shape: []int{c}, gen: genUniform(-0.5, 0.5), grad: true})
	}
	name := fmt.Sprintf("eval_x%s_%s", shp(x), actName(act))
	if affine {
		name += "_affine"
	}
	return kcase{
		name: name,
		in:   in,
		out:  x,
		ref: func(a []Array) Array {
			return RefBatchNormEval(a[0], a[1], a[2], optArray(a, 3), optArray(a, 4), normEps, act)
		},
		run: func(be tensor.Backend, y *tensor.Tensor, t []*tensor.Tensor) []*tensor.Tensor {
			v := download(be, t[2])
			for k := range v {
				v[k] = float32(1 / math.Sqrt(float64(v[k])+normEps))
			}
			rstd := be.New(tensor.Shape{c})
			be.Upload(rstd, v)
			be.BatchNormApply(y, t[0], t[1], rstd, optTensor(t, 3), optTensor(t, 4), act)
			return []*tensor.Tensor{rstd}
		},
		back: func(be tensor.Backend, g []*tensor.Tensor, dy *tensor.Tensor, t []*tensor.Tensor, y *tensor.Tensor, aux []*tensor.Tensor) {
			bnBackward(be, g[0], optTensor(g, 3), optTensor(g, 4), dy, t[0], y, t[1], aux[0], optTensor(t, 3), 0, act)
		},
		multiGrad: affine,
		tol:       8 * u32,
		// dx is one product per element; dγ and dβ sum N·H·W terms.
		gradTol: sumTol(x[0] * x[2] * x[3]),
		valid: func(a []Array) bool {
			return awayFromKink(act, RefBatchNormEval(a[0], a[1], a[2], optArray(a, 3), optArray(a, 4), normEps, tensor.Activation{}))
		},
	}
}

// channelSumsCase checks ChannelSums alone: s1 = Σ(x − shift_c) and
// s2 = Σ(x − shift_c)² per channel, against plain float64 loops.
func channelSumsCase(x []int, shift, squares bool) kcase {
	c := x[1]
	in := []operand{{name: "x", shape: x}}
	if shift {
		in = append(in, operand{name: "shift", shape: []int{c}})
	}
	name := fmt.Sprintf("ChannelSums_x%s_shift%v_squares%v", shp(x), shift, squares)
	sums := func(a []Array) (s1, s2 Array) {
		s1, s2 = Zeros(c), Zeros(c)
		hw := x[2] * x[3]
		for i, v := range a[0].Data {
			k := (i / hw) % c
			d := v - vecAt(optArray(a, 1), k, 0)
			s1.Data[k] += d
			s2.Data[k] += d * d
		}
		return s1, s2
	}
	kc := kcase{
		name: name,
		in:   in,
		out:  []int{c},
		ref: func(a []Array) Array {
			s1, _ := sums(a)
			return s1
		},
		run: func(be tensor.Backend, y *tensor.Tensor, t []*tensor.Tensor) []*tensor.Tensor {
			if !squares {
				be.ChannelSums(y, nil, t[0], optTensor(t, 1))
				return nil
			}
			s2 := be.New(tensor.Shape{c})
			be.ChannelSums(y, s2, t[0], optTensor(t, 1))
			return []*tensor.Tensor{s2}
		},
		// Summed in float64 and rounded once.
		tol:    4 * u32,
		auxTol: 4 * u32,
	}
	if squares {
		kc.auxRef = func(a []Array) []Array {
			_, s2 := sums(a)
			return []Array{s2}
		}
	}
	return kc
}

// bnSumsCase checks BatchNormBackwardSums alone: sdy = Σ g and
// sdyx = Σ g·(x − mean)·rstd per channel with g = dy·act′(y). y is any array
// here: the kernel reads only its sign.
func bnSumsCase(x []int, act tensor.Activation) kcase {
	c := x[1]
	in := []operand{
		{name: "dy", shape: x},
		{name: "x", shape: x},
		{name: "y", shape: x, gen: genAway(0.01, 0)},
		{name: "mean", shape: []int{c}, gen: genUniform(-0.3, 0.3)},
		{name: "rstd", shape: []int{c}, gen: genUniform(0.5, 2)},
	}
	sums := func(a []Array) (sdy, sdyx Array) {
		sdy, sdyx = Zeros(c), Zeros(c)
		hw := x[2] * x[3]
		for i := range a[0].Data {
			k := (i / hw) % c
			g := a[0].Data[i] * actSlope(act, a[2].Data[i])
			sdy.Data[k] += g
			sdyx.Data[k] += g * (a[1].Data[i] - a[3].Data[k]) * a[4].Data[k]
		}
		return sdy, sdyx
	}
	return kcase{
		name: fmt.Sprintf("BackwardSums_x%s_%s", shp(x), actName(act)),
		in:   in,
		out:  []int{c},
		ref: func(a []Array) Array {
			s, _ := sums(a)
			return s
		},
		run: func(be tensor.Backend, y *tensor.Tensor, t []*tensor.Tensor) []*tensor.Tensor {
			sdyx := be.New(tensor.Shape{c})
			be.BatchNormBackwardSums(y, sdyx, t[0], t[1], t[2], t[3], t[4], act)
			return []*tensor.Tensor{sdyx}
		},
		auxRef: func(a []Array) []Array {
			_, s := sums(a)
			return []Array{s}
		},
		// Each term is up to three float32 products, summed in float64.
		tol:    16 * u32,
		auxTol: 16 * u32,
	}
}

// actSlope is an activation's derivative read from its output's sign.
func actSlope(act tensor.Activation, y float64) float64 {
	switch {
	case act.Kind == tensor.ActNone || y > 0:
		return 1
	case act.Kind == tensor.ActReLU:
		return 0
	}
	return float64(act.Slope)
}

// bnBackwardCase checks BatchNormBackward alone, with arbitrary sums, against
// its formula dx = γ·rstd·(g − sdy/count − x̂·sdyx/count), g = dy·act′(y).
func bnBackwardCase(x []int, affine bool, act tensor.Activation) kcase {
	c := x[1]
	count := x[0] * x[2] * x[3]
	in := []operand{
		{name: "dy", shape: x},
		{name: "x", shape: x},
		{name: "y", shape: x, gen: genAway(0.01, 0)},
		{name: "mean", shape: []int{c}, gen: genUniform(-0.3, 0.3)},
		{name: "rstd", shape: []int{c}, gen: genUniform(0.5, 2)},
		{name: "sdy", shape: []int{c}, gen: genUniform(-3, 3)},
		{name: "sdyx", shape: []int{c}, gen: genUniform(-3, 3)},
	}
	if affine {
		in = append(in, operand{name: "gamma", shape: []int{c}, gen: genMagnitude(0.5, 1.5)})
	}
	return kcase{
		name: fmt.Sprintf("Backward_x%s_%s_affine%v", shp(x), actName(act), affine),
		in:   in,
		out:  x,
		ref: func(a []Array) Array {
			dx := Zeros(x...)
			hw := x[2] * x[3]
			n := float64(count)
			for i := range dx.Data {
				k := (i / hw) % c
				g := a[0].Data[i] * actSlope(act, a[2].Data[i])
				xh := (a[1].Data[i] - a[3].Data[k]) * a[4].Data[k]
				dx.Data[i] = vecAt(optArray(a, 7), k, 1) * a[4].Data[k] * (g - a[5].Data[k]/n - xh*a[6].Data[k]/n)
			}
			return dx
		},
		run: func(be tensor.Backend, y *tensor.Tensor, t []*tensor.Tensor) []*tensor.Tensor {
			be.Fill(y, 0) // the kernel adds
			be.BatchNormBackward(y, t[0], t[1], t[2], t[3], t[4], optTensor(t, 7), t[5], t[6], float32(count), act)
			return nil
		},
		// A handful of float32 operations per element; g − sdy/n − x̂·sdyx/n
		// cancels by up to a factor of a few.
		tol: 64 * u32,
	}
}

func normGroups(short bool) []group {
	relu := tensor.Activation{Kind: tensor.ActReLU}
	leaky := tensor.Activation{Kind: tensor.ActLeakyReLU, Slope: 0.2}
	none := tensor.Activation{}
	in := []kcase{
		instanceNormCase([]int{2, 3, 5, 7}, true, none, normEps),
		instanceNormCase([]int{2, 3, 5, 7}, true, relu, normEps),
		instanceNormCase([]int{2, 3, 5, 7}, true, leaky, normEps),
		instanceNormCase([]int{2, 3, 5, 7}, false, relu, normEps),
		instanceNormCase([]int{1, 4, 9, 8}, false, none, normEps),
		instanceNormCase([]int{3, 2, 1, 1}, true, none, 0.1),
		instanceNormCase([]int{1, 2, 33, 31}, true, relu, normEps),
	}
	if !short {
		in = append(in, instanceNormCase([]int{2, 16, 16, 16}, true, relu, normEps))
	}
	bn := []kcase{
		bnTrainCase([]int{3, 4, 5, 6}, true, none, normEps),
		bnTrainCase([]int{3, 4, 5, 6}, true, relu, normEps),
		bnTrainCase([]int{3, 4, 5, 6}, true, leaky, normEps),
		bnTrainCase([]int{2, 3, 4, 5}, false, none, normEps),
		bnTrainCase([]int{2, 3, 1, 1}, true, none, 0.1),
		bnTrainCase([]int{4, 2, 17, 15}, true, relu, normEps),
		bnEvalCase([]int{2, 5, 4, 3}, true, none),
		bnEvalCase([]int{2, 5, 4, 3}, true, relu),
		bnEvalCase([]int{1, 3, 5, 5}, false, leaky),
		channelSumsCase([]int{3, 4, 5, 6}, false, false),
		channelSumsCase([]int{3, 4, 5, 6}, true, true),
		channelSumsCase([]int{2, 3, 1, 1}, true, true),
		bnSumsCase([]int{3, 4, 5, 6}, none),
		bnSumsCase([]int{3, 4, 5, 6}, relu),
		bnSumsCase([]int{2, 3, 7, 1}, leaky),
		bnBackwardCase([]int{3, 4, 5, 6}, true, none),
		bnBackwardCase([]int{3, 4, 5, 6}, true, leaky),
		bnBackwardCase([]int{2, 3, 4, 1}, false, relu),
	}
	return []group{{"InstanceNorm", in}, {"BatchNorm", bn}}
}
