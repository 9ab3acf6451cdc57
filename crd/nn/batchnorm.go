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

// globalMoments is localMoments over the global batch of coll's ranks. Each
// rank computes its count n_r, mean m_r and centred sum of squares M2_r; one
// AllGather brings every rank's [n_r, m_r, M2_r]; every rank combines them in
// rank order (Chan et al.'s pairwise update: n = Σn_r, m = Σn_r·m_r/n,
// M2 = Σ(M2_r + n_r·(m_r − m)²)), in float64, so every rank gets the same bits
// and no sum of squares cancels. A rank that does not contribute sends n_r = 0.
func (bn *BatchNorm2d) globalMoments(tp *Tape, x *tensor.Tensor, coll Collective) (mean []float32, v, unbiased []float64, count float64) {
	be := tp.be
	s := x.Shape
	c := s[1]
	local := make([]float32, 1+2*c)
	if coll.Contributes() {
		n := float64(s[0] * s[2] * s[3])
		s1, s2 := tp.New(c), tp.New(c)
		buf := make([]float32, 2*c)
		be.ChannelSums(s1, nil, x, nil)
		be.Download(buf[:c], s1)
		shift := make([]float32, c)
		for i := range shift {
			shift[i] = float32(float64(buf[i]) / n)
		}
		m := tp.New(c)
		be.Upload(m, shift)
		be.ChannelSums(s1, s2, x, m)
		be.Download(buf[:c], s1)
		be.Download(buf[c:], s2)
		local[0] = float32(n)
		for i := range c {
			d := float64(buf[i])
			local[1+i] = float32(float64(shift[i]) + d/n)
			local[1+c+i] = float32(max(float64(buf[c+i])-d*d/n, 0))
		}
	}
	all := coll.AllGather(local)
	w := len(all) / len(local)
	for r := range w {
		count += float64(all[r*len(local)])
	}
	mean = make([]float32, c)
	v, unbiased = make([]float64, c), make([]float64, c)
	if count == 0 {
		return mean, v, unbiased, 0
	}
	for i := range c {
		var m float64
		for r := range w {
			p := all[r*len(local):]
			m += float64(p[0]) * float64(p[1+i])
		}
		m /= count
		var m2 float64
		for r := range w {
			p := all[r*len(local):]
			d := float64(p[1+i]) - m
			m2 += float64(p[1+c+i]) + float64(p[0])*d*d
		}
		mean[i] = float32(m)
		v[i] = m2 / count
		unbiased[i] = v[i]
		if count > 1 {
			unbiased[i] = m2 / (count - 1)
		}
	}
	return mean, v, unbiased, count
}
