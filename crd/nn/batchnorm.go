package nn

import (
	"math"

	"github.com/crdgo/crdgo/crd/tensor"
)

// BatchNorm2d is torch.nn.BatchNorm2d: in training mode it normalises with the
// batch's statistics over (N,H,W) and updates the running statistics (momentum,
// unbiased variance); in evaluation mode it uses the running statistics.
// The statistics are per-channel sums (Backend.ChannelSums) brought to the
// host. When the tape has a Collective, the ranks combine them (synchronised
// batch norm): forward normalises with the mean and variance of the global
// batch, backward with its sums, and the running statistics, computed from the
// same combined values, are identical on every rank.
type BatchNorm2d struct {
	Weight, Bias            *Var // (C), nil when not affine
	RunningMean, RunningVar *Var // buffers (C)
	NumBatchesTracked       *Var // buffer, shape (), an int64 in PyTorch files
	Eps, Momentum           float32
	Training                bool
}

// NewBatchNorm2d registers prefix.{weight,bias,running_mean,running_var,
// num_batches_tracked} in ps. Weight ~ N(1, 0.02) as the CycleGAN init does.
func NewBatchNorm2d(ps *ParamSet, prefix string, c int, affine bool) *BatchNorm2d {
	bn := &BatchNorm2d{Eps: 1e-5, Momentum: 0.1, Training: true}
	if affine {
		bn.Weight = ps.Add(prefix+".weight", Normal(1, 0.02), c)
		bn.Bias = ps.Add(prefix+".bias", Init{}, c)
	}
	bn.RunningMean = ps.AddBuffer(prefix+".running_mean", Init{}, false, c)
	bn.RunningVar = ps.AddBuffer(prefix+".running_var", Init{Kind: InitOnes}, false, c)
	bn.NumBatchesTracked = ps.AddBuffer(prefix+".num_batches_tracked", Init{}, true) // a scalar, shape ()
	return bn
}

// Forward normalises x (N,C,H,W) and applies the fused activation act.
func (bn *BatchNorm2d) Forward(tp *Tape, x *Var, act tensor.Activation) *Var {
	be := tp.be
	s := x.Value.Shape
	c := s[1]
	mean, rstd := tp.New(c), tp.New(c)
	count := float64(s[0] * s[2] * s[3])
	hm, hr := make([]float32, c), make([]float32, c)
	if bn.Training {
		var v, unbiased []float64
		if coll := tp.coll; coll != nil {
			hm, v, unbiased, count = bn.globalMoments(tp, x.Value, coll)
		} else {
			hm, v, unbiased = bn.localMoments(tp, x.Value, count)
		}
		rm, rv := make([]float32, c), make([]float32, c)
		be.Download(rm, bn.RunningMean.Value)
		be.Download(rv, bn.RunningVar.Value)
		mom := float64(bn.Momentum)
		for i := range hm {
			hr[i] = float32(1 / math.Sqrt(v[i]+float64(bn.Eps)))
			rm[i] = float32((1-mom)*float64(rm[i]) + mom*float64(hm[i]))
			rv[i] = float32((1-mom)*float64(rv[i]) + mom*unbiased[i])
		}
		be.Upload(mean, hm)
		be.Upload(rstd, hr)
		be.Upload(bn.RunningMean.Value, rm)
		be.Upload(bn.RunningVar.Value, rv)
		nb := make([]float32, 1)
		be.Download(nb, bn.NumBatchesTracked.Value)
		nb[0]++
		be.Upload(bn.NumBatchesTracked.Value, nb)
	} else {
		be.Download(hm, bn.RunningMean.Value)
		be.Upload(mean, hm)
		be.Download(hr, bn.RunningVar.Value)
		for i, v := range hr {
			hr[i] = float32(1 / math.Sqrt(float64(v)+float64(bn.Eps)))
		}
		be.Upload(rstd, hr)
		count = 0
	}
	y := tp.New(s...)
	be.BatchNormApply(y, x.Value, mean, rstd, valueOf(bn.Weight), valueOf(bn.Bias), act)
	return tp.record(y, func(dy *tensor.Tensor) {
		sdy, sdyx := tp.New(c), tp.New(c)
		be.BatchNormBackwardSums(sdy, sdyx, dy, x.Value, y, mean, rstd, act)
		coll := tp.coll
		if coll != nil && !coll.Contributes() {
			// A placeholder rank's dy is not zero here (the global sums of
			// later batch norms reach it): its sums must count as nothing.
			be.Fill(sdy, 0)
			be.Fill(sdyx, 0)
		}
		// γ and β take the local sums; data-parallel training sums those with
		// every other gradient afterwards.
		if g := tp.grad(bn.Weight); g != nil {
			be.BroadcastAdd(g, sdyx, 1)
		}
		if g := tp.grad(bn.Bias); g != nil {
			be.BroadcastAdd(g, sdy, 1)
		}
		dx := tp.grad(x)
		if dx == nil {
			return
		}
		if coll != nil && count > 0 {
			// dx needs the global sums: one Sum over [Σg, Σg·x̂] per layer.
			buf := make([]float32, 2*c)
			be.Download(buf[:c], sdy)
			be.Download(buf[c:], sdyx)
			coll.Sum(buf)
			sdy, sdyx = tp.New(c), tp.New(c)
			be.Upload(sdy, buf[:c])
			be.Upload(sdyx, buf[c:])
		}
		be.BatchNormBackward(dx, dy, x.Value, y, mean, rstd, valueOf(bn.Weight), sdy, sdyx, float32(count), act)
	}, x, bn.Weight, bn.Bias)
}

// localMoments returns the per-channel mean, biased and unbiased variance of x
// (N,C,H,W) over (N,H,W), count = N·H·W values per channel: the mean first,
// then the centred sum of squares (no cancellation).
func (bn *BatchNorm2d) localMoments(tp *Tape, x *tensor.Tensor, count float64) (mean []float32, v, unbiased []float64) {
	be := tp.be
	c := x.Shape[1]
	s1, s2 := tp.New(c), tp.New(c)
	buf := make([]float32, 2*c)
	be.ChannelSums(s1, nil, x, nil)
	be.Download(buf[:c], s1)
	mean = make([]float32, c)
	for i := range mean {
		mean[i] = float32(float64(buf[i]) / count)
	}
	m := tp.New(c)
	be.Upload(m, mean)
	be.ChannelSums(s1, s2, x, m)
	be.Download(buf[:c], s1)
	be.Download(buf[c:], s2)
	v, unbiased = make([]float64, c), make([]float64, c)
	for i := range mean {
		// Σ(x−m)² − (Σ(x−m))²/n corrects for m being the rounded mean.
		d := float64(buf[i])
		ss := float64(buf[c+i]) - d*d/count
		v[i] = max(ss/count, 0)
		unbiased[i] = v[i]
		if count > 1 {
			unbiased[i] = ss / (count - 1)
		}
	}
	return mean, v, unbiased
}

// globalMoments is localMoments over the global batch of coll's ranks,
// computed so that it equals what one process computes on the global batch,
// not merely to within rounding: a BatchNorm output that differs by one ulp
// can flip a ReLU downstream and change the gradient by far more than
// rounding. So every rank sums its own samples in float64 in the order the
// CPU kernel does, the ranks gather those float64 partial sums exactly (each
// as Float64Words float32s), and every rank adds them in rank order and rounds at the
// points localMoments rounds: the mean of pass 1, then the centred sums of
// pass 2. Two AllGathers per layer. A rank that does not contribute sends
// count 0 and zero sums.
func (bn *BatchNorm2d) globalMoments(tp *Tape, x *tensor.Tensor, coll Collective) (mean []float32, v, unbiased []float64, count float64) {
	s := x.Shape
	n, c, hw := s[0], s[1], s[2]*s[3]
	host := x.Data
	if host == nil {
		host = make([]float32, x.Numel())
		tp.be.Download(host, x)
	}
	contributes := coll.Contributes()
	sums := func(shift []float32, squares bool) (s1, s2 []float64) {
		s1, s2 = make([]float64, c), make([]float64, c)
		if !contributes {
			return s1, s2
		}
		for k := range c {
			var sh float64
			if shift != nil {
				sh = float64(shift[k])
			}
			var a, b float64
			for i := range n {
				for _, e := range host[(i*c+k)*hw : (i*c+k+1)*hw] {
					d := float64(e) - sh
					a += d
					if squares {
						b += d * d
					}
				}
			}
			s1[k], s2[k] = a, b
		}
		return s1, s2
	}
	local := 0.0
	if contributes {
		local = float64(n * hw)
	}
	// Pass 1: the count and Σx.
	s1, _ := sums(nil, false)
	g := gather64(coll, append([]float64{local}, s1...))
	count = g[0]
	mean = make([]float32, c)
	v, unbiased = make([]float64, c), make([]float64, c)
	if count == 0 {
		return mean, v, unbiased, 0
	}
	for k := range c {
		mean[k] = float32(float64(float32(g[1+k])) / count)
	}
	// Pass 2: Σ(x − m) and Σ(x − m)², centred on the global mean.
	d1, d2 := sums(mean, true)
	g = gather64(coll, append(d1, d2...))
	for k := range c {
		d := float64(float32(g[k]))
		ss := float64(float32(g[c+k])) - d*d/count
		v[k] = max(ss/count, 0)
		unbiased[k] = v[k]
		if count > 1 {
			unbiased[k] = ss / (count - 1)
		}
	}
	return mean, v, unbiased, count
}

// gather64 sums float64 values across the ranks, exactly as far as float64
// goes: each value travels exactly (PutFloat64), is put together again on
// every rank, and the ranks' values are added in rank order, so every rank
// gets the same bits.
func gather64(coll Collective, local []float64) []float64 {
	enc := make([]float32, Float64Words*len(local))
	for i, x := range local {
		PutFloat64(enc[Float64Words*i:], x)
	}
	all := coll.AllGather(enc)
	out := make([]float64, len(local))
	for r := range len(all) / len(enc) {
		p := all[r*len(enc):]
		for i := range out {
			out[i] += Float64(p[Float64Words*i:])
		}
	}
	return out
}

// Float64Words is how many float32s PutFloat64 writes.
const Float64Words = 4

// PutFloat64 writes the 64 bits of x into dst[0:4] as four float32s holding
// the integers 0…65535, 16 bits each: values a float32 collective moves
// exactly (a sum with zeros, as a gather built on a sum is, leaves them as
// they are), whatever x is — subnormal, beyond float32's range, −0 or NaN.
func PutFloat64(dst []float32, x float64) {
	b := math.Float64bits(x)
	for i := range Float64Words {
		dst[i] = float32(b >> (16 * i) & 0xffff)
	}
}

// Float64 is the value PutFloat64 wrote into src[0:4].
func Float64(src []float32) float64 {
	var b uint64
	for i := range Float64Words {
		b |= uint64(src[i]) << (16 * i)
	}
	return math.Float64frombits(b)
}
