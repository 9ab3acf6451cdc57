package nn

import (
	"math"

	"github.com/crdgo/crdgo/crd/tensor"
)

// BatchNorm2d is torch.nn.BatchNorm2d: in training mode it normalises with the
// batch's statistics over (N,H,W) and updates the running statistics (momentum,
// unbiased variance); in evaluation mode it uses the running statistics.
// The statistics are per-channel sums (Backend.ChannelSums) brought to the
// host, where data-parallel ranks could sum them (synchronised batch norm, not
// wired yet: batch norm runs in one process).
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
		s1, s2 := tp.New(c), tp.New(c)
		// Pass 1: the mean; pass 2: centred sum of squares (no cancellation).
		be.ChannelSums(s1, nil, x.Value, nil)
		buf := make([]float32, 2*c)
		be.Download(buf[:c], s1)
		for i := range hm {
			hm[i] = float32(float64(buf[i]) / count)
		}
		be.Upload(mean, hm)
		be.ChannelSums(s1, s2, x.Value, mean)
		be.Download(buf[:c], s1)
		be.Download(buf[c:], s2)
		rm, rv := make([]float32, c), make([]float32, c)
		be.Download(rm, bn.RunningMean.Value)
		be.Download(rv, bn.RunningVar.Value)
		mom := float64(bn.Momentum)
		for i := range hm {
			// Σ(x−m)² − (Σ(x−m))²/n corrects for m being the rounded mean.
			d := float64(buf[i])
			ss := float64(buf[c+i]) - d*d/count
			v := max(ss/count, 0)
			hr[i] = float32(1 / math.Sqrt(v+float64(bn.Eps)))
			unbiased := v
			if count > 1 {
				unbiased = ss / (count - 1)
			}
			rm[i] = float32((1-mom)*float64(rm[i]) + mom*float64(hm[i]))
			rv[i] = float32((1-mom)*float64(rv[i]) + mom*unbiased)
		}
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
		be.BatchNormBackward(dx, dy, x.Value, y, mean, rstd, valueOf(bn.Weight), sdy, sdyx, float32(count), act)
	}, x, bn.Weight, bn.Bias)
}
