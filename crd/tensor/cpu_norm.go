package tensor

import (
	"fmt"
	"math"
)

// actForward applies a fused activation.
func actForward(a Activation, v float32) float32 {
	switch a.Kind {
	case ActReLU:
		if v > 0 {
			return v
		}
		return 0
	case ActLeakyReLU:
		if v > 0 {
			return v
		}
		return a.Slope * v
	}
	return v
}

// actGrad is the activation's derivative, read from its output y (the slope is
// positive, so the sign of y is the sign of the input; 0 counts as negative, as
// in PyTorch).
func actGrad(a Activation, y float32) float32 {
	switch a.Kind {
	case ActReLU:
		if y > 0 {
			return 1
		}
		return 0
	case ActLeakyReLU:
		if y > 0 {
			return 1
		}
		return a.Slope
	}
	return 1
}

func planeGeom(op string, x *Tensor) (n, ch, hw int) {
	if len(x.Shape) != 4 {
		panic(fmt.Sprintf("tensor: %s: x %v: want (N,C,H,W)", op, x.Shape))
	}
	return x.Shape[0], x.Shape[1], x.Shape[2] * x.Shape[3]
}

// InstanceNorm normalises each (n,c) plane over H×W (biased variance).
func (c *CPU) InstanceNorm(y, mean, rstd, x, gamma, beta *Tensor, eps float32, act Activation) {
	n, ch, hw := planeGeom("InstanceNorm", x)
	mustShape("InstanceNorm", "y", y, x.Shape...)
	mustLen("InstanceNorm mean", mean.Numel(), n*ch)
	mustLen("InstanceNorm rstd", rstd.Numel(), n*ch)
	if gamma != nil {
		mustShape("InstanceNorm", "gamma", gamma, ch)
	}
	if beta != nil {
		mustShape("InstanceNorm", "beta", beta, ch)
	}
	c.parallelFor(n*ch, max(1, 16384/max(hw, 1)), func(lo, hi int) {
		for p := lo; p < hi; p++ {
			xs := x.Data[p*hw : (p+1)*hw]
			m := sum64(xs) / float64(hw)
			var v float64
			for _, e := range xs {
				d := float64(e) - m
				v += d * d
			}
			v /= float64(hw)
			r := 1 / math.Sqrt(v+float64(eps))
			mean.Data[p], rstd.Data[p] = float32(m), float32(r)
			scale, shift := float32(r), float32(-m*r)
			if gamma != nil {
				scale *= gamma.Data[p%ch]
				shift *= gamma.Data[p%ch]
			}
			if beta != nil {
				shift += beta.Data[p%ch]
			}
			ys := y.Data[p*hw : (p+1)*hw]
			switch act.Kind {
			case ActNone:
				for i, e := range xs {
					ys[i] = e*scale + shift
				}
			case ActReLU:
				for i, e := range xs {
					ys[i] = max(e*scale+shift, 0)
				}
			default:
				for i, e := range xs {
					ys[i] = actForward(act, e*scale+shift)
				}
			}
		}
	})
}

// InstanceNormBackward adds the gradients of InstanceNorm. Per plane, with
// g = dy·act′(y)·γ and x̂ = (x − mean)·rstd:
// dx += rstd·(g − mean(g) − x̂·mean(g·x̂)); dγ += Σ dy·act′·x̂; dβ += Σ dy·act′.
func (c *CPU) InstanceNormBackward(dx, dgamma, dbeta, dy, x, y, mean, rstd, gamma *Tensor, act Activation) {
	n, ch, hw := planeGeom("InstanceNormBackward", x)
	mustShape("InstanceNormBackward", "dy", dy, x.Shape...)
	if dx != nil {
		mustShape("InstanceNormBackward", "dx", dx, x.Shape...)
	}
	// Per channel (all samples inside), so that dγ and dβ sum in a fixed order.
	c.parallelFor(ch, 1, func(lo, hi int) {
		gbuf := c.getScratch(hw)
		defer c.putScratch(gbuf)
		for k := lo; k < hi; k++ {
			var sg, sgx float64 // Σ dy·act′ and Σ dy·act′·x̂ over all samples
			for s := 0; s < n; s++ {
				p := s*ch + k
				xs, dys := x.Data[p*hw:(p+1)*hw], dy.Data[p*hw:(p+1)*hw]
				m, r := mean.Data[p], rstd.Data[p]
				var ys []float32
				if act.Kind != ActNone {
					ys = y.Data[p*hw : (p+1)*hw]
				}
				var pg, pgx float64
				for i := range xs {
					gv := dys[i]
					if ys != nil {
						gv *= actGrad(act, ys[i])
					}
					gbuf[i] = gv
					xh := (xs[i] - m) * r
					pg += float64(gv)
					pgx += float64(gv * xh)
				}
				sg += pg
				sgx += pgx
				if dx == nil {
					continue
				}
				gm := float32(1)
				if gamma != nil {
					gm = gamma.Data[k]
				}
				mg := float32(pg / float64(hw))
				mgx := float32(pgx / float64(hw))
				dxs := dx.Data[p*hw : (p+1)*hw]
				f := gm * r
				for i := range xs {
					xh := (xs[i] - m) * r
					dxs[i] += f * (gbuf[i] - mg - xh*mgx)
				}
			}
			if dgamma != nil {
				dgamma.Data[k] += float32(sgx)
			}
			if dbeta != nil {
				dbeta.Data[k] += float32(sg)
			}
		}
	})
}

// ChannelSums computes per-channel Σ(x − shift) and Σ(x − shift)² in float64.
func (c *CPU) ChannelSums(s1, s2, x, shift *Tensor) {
	n, ch, hw := planeGeom("ChannelSums", x)
	mustLen("ChannelSums s1", s1.Numel(), ch)
	c.parallelFor(ch, 1, func(lo, hi int) {
		for k := lo; k < hi; k++ {
			var sh float64
			if shift != nil {
				sh = float64(shift.Data[k])
			}
			var a, b float64
			for s := 0; s < n; s++ {
				for _, e := range x.Data[(s*ch+k)*hw : (s*ch+k+1)*hw] {
					d := float64(e) - sh
					a += d
					b += d * d
				}
			}
			s1.Data[k] = float32(a)
			if s2 != nil {
				s2.Data[k] = float32(b)
			}
		}
	})
}

// BatchNormApply sets y = act(γ_c·(x − mean_c)·rstd_c + β_c).
func (c *CPU) BatchNormApply(y, x, mean, rstd, gamma, beta *Tensor, act Activation) {
	n, ch, hw := planeGeom("BatchNormApply", x)
	mustShape("BatchNormApply", "y", y, x.Shape...)
	c.parallelFor(n*ch, max(1, 16384/max(hw, 1)), func(lo, hi int) {
		for p := lo; p < hi; p++ {
			k := p % ch
			scale := rstd.Data[k]
			shift := -mean.Data[k] * scale
			if gamma != nil {
				scale *= gamma.Data[k]
				shift *= gamma.Data[k]
			}
			if beta != nil {
				shift += beta.Data[k]
			}
			xs, ys := x.Data[p*hw:(p+1)*hw], y.Data[p*hw:(p+1)*hw]
			for i, e := range xs {
				ys[i] = actForward(act, e*scale+shift)
			}
		}
	})
}

// BatchNormBackwardSums computes per channel Σ g and Σ g·x̂, g = dy·act′(y).
func (c *CPU) BatchNormBackwardSums(sdy, sdyx, dy, x, y, mean, rstd *Tensor, act Activation) {
	n, ch, hw := planeGeom("BatchNormBackwardSums", x)
	c.parallelFor(ch, 1, func(lo, hi int) {
		for k := lo; k < hi; k++ {
			m, r := mean.Data[k], rstd.Data[k]
			var a, b float64
			for s := 0; s < n; s++ {
				p := s*ch + k
				xs, dys := x.Data[p*hw:(p+1)*hw], dy.Data[p*hw:(p+1)*hw]
				for i := range xs {
					gv := dys[i]
					if act.Kind != ActNone {
						gv *= actGrad(act, y.Data[p*hw+i])
					}
					a += float64(gv)
					b += float64(gv * (xs[i] - m) * r)
				}
			}
			sdy.Data[k] = float32(a)
			sdyx.Data[k] = float32(b)
		}
	})
}

// BatchNormBackward adds dx += γ·rstd·(g − sdy/count − x̂·sdyx/count).
func (c *CPU) BatchNormBackward(dx, dy, x, y, mean, rstd, gamma, sdy, sdyx *Tensor, count float32, act Activation) {
	n, ch, hw := planeGeom("BatchNormBackward", x)
	c.parallelFor(n*ch, max(1, 16384/max(hw, 1)), func(lo, hi int) {
		for p := lo; p < hi; p++ {
			k := p % ch
			m, r := mean.Data[k], rstd.Data[k]
			f := r
			if gamma != nil {
				f *= gamma.Data[k]
			}
			var mg, mgx float32
			if count > 0 {
				mg, mgx = sdy.Data[k]/count, sdyx.Data[k]/count
			}
			xs, dys, dxs := x.Data[p*hw:(p+1)*hw], dy.Data[p*hw:(p+1)*hw], dx.Data[p*hw:(p+1)*hw]
			for i := range xs {
				gv := dys[i]
				if act.Kind != ActNone {
					gv *= actGrad(act, y.Data[p*hw+i])
				}
				dxs[i] += f * (gv - mg - (xs[i]-m)*r*mgx)
			}
		}
	})
}
