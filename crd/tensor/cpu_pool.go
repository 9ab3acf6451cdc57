package tensor

import (
	"fmt"
	"math"
)

func poolGeom(op string, y, x *Tensor, p PoolParams) (planes, h, w, oh, ow int, q PoolParams) {
	q = p.Norm()
	r := len(x.Shape)
	if r < 2 || len(y.Shape) != r || q.KH <= 0 || q.KW <= 0 || q.StrideH <= 0 || q.StrideW <= 0 || q.PadH < 0 || q.PadW < 0 ||
		2*q.PadH > q.KH || 2*q.PadW > q.KW {
		panic(fmt.Sprintf("tensor: %s: %v → %v with %+v", op, x.Shape, y.Shape, p))
	}
	h, w = x.Shape[r-2], x.Shape[r-1]
	oh = (h+2*q.PadH-q.KH)/q.StrideH + 1
	ow = (w+2*q.PadW-q.KW)/q.StrideW + 1
	if oh <= 0 || ow <= 0 || y.Shape[r-2] != oh || y.Shape[r-1] != ow {
		panic(fmt.Sprintf("tensor: %s: %v → %v with %+v (want %d×%d)", op, x.Shape, y.Shape, p, oh, ow))
	}
	for d := 0; d < r-2; d++ {
		if x.Shape[d] != y.Shape[d] {
			panic(fmt.Sprintf("tensor: %s: %v → %v", op, x.Shape, y.Shape))
		}
	}
	return Shape(x.Shape[:r-2]).Numel(), h, w, oh, ow, q
}

// maxIndex returns the input offset (within the plane) of the first maximum of
// the window of output (oy, ox), or −1 when the window lies in the padding.
func maxIndex(src []float32, h, w, oy, ox int, q PoolParams) int {
	best, bi := float32(math.Inf(-1)), -1
	for i := 0; i < q.KH; i++ {
		iy := oy*q.StrideH - q.PadH + i
		if iy < 0 || iy >= h {
			continue
		}
		for j := 0; j < q.KW; j++ {
			ix := ox*q.StrideW - q.PadW + j
			if ix < 0 || ix >= w {
				continue
			}
			v := src[iy*w+ix]
			if bi < 0 || v > best || v != v { // NaN propagates, as in PyTorch
				best, bi = v, iy*w+ix
				if v != v {
					return bi
				}
			}
		}
	}
	return bi
}

// MaxPool2D takes the maximum of each window (padding counts as −∞).
func (c *CPU) MaxPool2D(y, x *Tensor, p PoolParams) {
	planes, h, w, oh, ow, q := poolGeom("MaxPool2D", y, x, p)
	c.parallelFor(planes, 1, func(lo, hi int) {
		for pl := lo; pl < hi; pl++ {
			src := x.Data[pl*h*w : (pl+1)*h*w]
			dst := y.Data[pl*oh*ow : (pl+1)*oh*ow]
			for oy := 0; oy < oh; oy++ {
				for ox := 0; ox < ow; ox++ {
					i := maxIndex(src, h, w, oy, ox, q)
					dst[oy*ow+ox] = src[i]
				}
			}
		}
	})
}

// MaxPool2DBackward sends each output gradient to the first maximum of its window.
func (c *CPU) MaxPool2DBackward(dx, dy, x *Tensor, p PoolParams) {
	planes, h, w, oh, ow, q := poolGeom("MaxPool2DBackward", dy, x, p)
	mustShape("MaxPool2DBackward", "dx", dx, x.Shape...)
	c.parallelFor(planes, 1, func(lo, hi int) {
		for pl := lo; pl < hi; pl++ {
			src := x.Data[pl*h*w : (pl+1)*h*w]
			g := dy.Data[pl*oh*ow : (pl+1)*oh*ow]
			d := dx.Data[pl*h*w : (pl+1)*h*w]
			for oy := 0; oy < oh; oy++ {
				for ox := 0; ox < ow; ox++ {
					d[maxIndex(src, h, w, oy, ox, q)] += g[oy*ow+ox]
				}
			}
		}
	})
}

// avgWindow is PyTorch's avg_pool2d window: the clipped bounds and the divisor.
func avgWindow(h, w, oy, ox int, q PoolParams) (y0, y1, x0, x1 int, div float32) {
	y0, x0 = oy*q.StrideH-q.PadH, ox*q.StrideW-q.PadW
	y1, x1 = min(y0+q.KH, h+q.PadH), min(x0+q.KW, w+q.PadW)
	size := (y1 - y0) * (x1 - x0)
	y0, x0 = max(y0, 0), max(x0, 0)
	y1, x1 = min(y1, h), min(x1, w)
	if !q.CountIncludePad {
		size = (y1 - y0) * (x1 - x0)
	}
	return y0, y1, x0, x1, float32(size)
}

// AvgPool2D averages each window.
func (c *CPU) AvgPool2D(y, x *Tensor, p PoolParams) {
	planes, h, w, oh, ow, q := poolGeom("AvgPool2D", y, x, p)
	c.parallelFor(planes, 1, func(lo, hi int) {
		for pl := lo; pl < hi; pl++ {
			src := x.Data[pl*h*w : (pl+1)*h*w]
			dst := y.Data[pl*oh*ow : (pl+1)*oh*ow]
			for oy := 0; oy < oh; oy++ {
				for ox := 0; ox < ow; ox++ {
					y0, y1, x0, x1, div := avgWindow(h, w, oy, ox, q)
					var s float32
					for iy := y0; iy < y1; iy++ {
						for ix := x0; ix < x1; ix++ {
							s += src[iy*w+ix]
						}
					}
					dst[oy*ow+ox] = s / div
				}
			}
		}
	})
}

// AvgPool2DBackward spreads each output gradient over its window.
func (c *CPU) AvgPool2DBackward(dx, dy *Tensor, p PoolParams) {
	planes, h, w, oh, ow, q := poolGeom("AvgPool2DBackward", dy, dx, p)
	c.parallelFor(planes, 1, func(lo, hi int) {
		for pl := lo; pl < hi; pl++ {
			g := dy.Data[pl*oh*ow : (pl+1)*oh*ow]
			d := dx.Data[pl*h*w : (pl+1)*h*w]
			for oy := 0; oy < oh; oy++ {
				for ox := 0; ox < ow; ox++ {
					y0, y1, x0, x1, div := avgWindow(h, w, oy, ox, q)
					v := g[oy*ow+ox] / div
					for iy := y0; iy < y1; iy++ {
						for ix := x0; ix < x1; ix++ {
							d[iy*w+ix] += v
						}
					}
				}
			}
		}
	})
}

func spatialPlanes(op string, y, x *Tensor) (planes, h, w, oh, ow int) {
	r := len(x.Shape)
	if r < 2 || len(y.Shape) != r {
		panic(fmt.Sprintf("tensor: %s: %v → %v", op, x.Shape, y.Shape))
	}
	for d := 0; d < r-2; d++ {
		if x.Shape[d] != y.Shape[d] {
			panic(fmt.Sprintf("tensor: %s: %v → %v", op, x.Shape, y.Shape))
		}
	}
	return Shape(x.Shape[:r-2]).Numel(), x.Shape[r-2], x.Shape[r-1], y.Shape[r-2], y.Shape[r-1]
}

// adaptiveBin is PyTorch's adaptive pooling bin [floor(i·n/o), ceil((i+1)·n/o)).
func adaptiveBin(i, n, o int) (int, int) {
	return i * n / o, ((i+1)*n + o - 1) / o
}

// AdaptiveAvgPool2D averages x into y's spatial size.
func (c *CPU) AdaptiveAvgPool2D(y, x *Tensor) {
	planes, h, w, oh, ow := spatialPlanes("AdaptiveAvgPool2D", y, x)
	c.parallelFor(planes, 1, func(lo, hi int) {
		for pl := lo; pl < hi; pl++ {
			src := x.Data[pl*h*w : (pl+1)*h*w]
			dst := y.Data[pl*oh*ow : (pl+1)*oh*ow]
			for oy := 0; oy < oh; oy++ {
				y0, y1 := adaptiveBin(oy, h, oh)
				for ox := 0; ox < ow; ox++ {
					x0, x1 := adaptiveBin(ox, w, ow)
					var s float64
					for iy := y0; iy < y1; iy++ {
						for ix := x0; ix < x1; ix++ {
							s += float64(src[iy*w+ix])
						}
					}
					dst[oy*ow+ox] = float32(s / float64((y1-y0)*(x1-x0)))
				}
			}
		}
	})
}

// AdaptiveAvgPool2DBackward spreads each output gradient over its bin.
func (c *CPU) AdaptiveAvgPool2DBackward(dx, dy *Tensor) {
	planes, h, w, oh, ow := spatialPlanes("AdaptiveAvgPool2DBackward", dy, dx)
	c.parallelFor(planes, 1, func(lo, hi int) {
		for pl := lo; pl < hi; pl++ {
			g := dy.Data[pl*oh*ow : (pl+1)*oh*ow]
			d := dx.Data[pl*h*w : (pl+1)*h*w]
			for oy := 0; oy < oh; oy++ {
				y0, y1 := adaptiveBin(oy, h, oh)
				for ox := 0; ox < ow; ox++ {
					x0, x1 := adaptiveBin(ox, w, ow)
					v := g[oy*ow+ox] / float32((y1-y0)*(x1-x0))
					for iy := y0; iy < y1; iy++ {
						for ix := x0; ix < x1; ix++ {
							d[iy*w+ix] += v
						}
					}
				}
			}
		}
	})
}

// bilinearTaps lists, for each output coordinate along one axis, the two input
// coordinates and their weights (PyTorch's upsample_bilinear2d).
func bilinearTaps(in, out int, alignCorners bool) (i0, i1 []int, w0, w1 []float32) {
	i0, i1 = make([]int, out), make([]int, out)
	w0, w1 = make([]float32, out), make([]float32, out)
	var scale float32
	switch {
	case alignCorners && out > 1:
		scale = float32(in-1) / float32(out-1)
	case !alignCorners:
		scale = float32(in) / float32(out)
	}
	for o := 0; o < out; o++ {
		var src float32
		if alignCorners {
			src = scale * float32(o)
		} else {
			src = max(scale*(float32(o)+0.5)-0.5, 0)
		}
		a := int(src)
		b := a
		if a < in-1 {
			b = a + 1
		}
		l1 := src - float32(a)
		i0[o], i1[o], w0[o], w1[o] = a, b, 1-l1, l1
	}
	return
}

// ResizeBilinear resizes the last two dimensions with bilinear interpolation.
func (c *CPU) ResizeBilinear(y, x *Tensor, alignCorners bool) {
	planes, h, w, oh, ow := spatialPlanes("ResizeBilinear", y, x)
	ya, yb, yw0, yw1 := bilinearTaps(h, oh, alignCorners)
	xa, xb, xw0, xw1 := bilinearTaps(w, ow, alignCorners)
	c.parallelFor(planes, 1, func(lo, hi int) {
		for pl := lo; pl < hi; pl++ {
			src := x.Data[pl*h*w : (pl+1)*h*w]
			dst := y.Data[pl*oh*ow : (pl+1)*oh*ow]
			for oy := 0; oy < oh; oy++ {
				r0, r1 := src[ya[oy]*w:], src[yb[oy]*w:]
				for ox := 0; ox < ow; ox++ {
					dst[oy*ow+ox] = yw0[oy]*(xw0[ox]*r0[xa[ox]]+xw1[ox]*r0[xb[ox]]) +
						yw1[oy]*(xw0[ox]*r1[xa[ox]]+xw1[ox]*r1[xb[ox]])
				}
			}
		}
	})
}

// ResizeBilinearBackward adds the adjoint of ResizeBilinear into dx.
func (c *CPU) ResizeBilinearBackward(dx, dy *Tensor, alignCorners bool) {
	planes, h, w, oh, ow := spatialPlanes("ResizeBilinearBackward", dy, dx)
	ya, yb, yw0, yw1 := bilinearTaps(h, oh, alignCorners)
	xa, xb, xw0, xw1 := bilinearTaps(w, ow, alignCorners)
	c.parallelFor(planes, 1, func(lo, hi int) {
		for pl := lo; pl < hi; pl++ {
			g := dy.Data[pl*oh*ow : (pl+1)*oh*ow]
			d := dx.Data[pl*h*w : (pl+1)*h*w]
			for oy := 0; oy < oh; oy++ {
				r0, r1 := d[ya[oy]*w:], d[yb[oy]*w:]
				for ox := 0; ox < ow; ox++ {
					v := g[oy*ow+ox]
					r0[xa[ox]] += yw0[oy] * xw0[ox] * v
					r0[xb[ox]] += yw0[oy] * xw1[ox] * v
					r1[xa[ox]] += yw1[oy] * xw0[ox] * v
					r1[xb[ox]] += yw1[oy] * xw1[ox] * v
				}
			}
		}
	})
}

// Adam applies one step of Adam (PyTorch's torch.optim.Adam, L2 weight decay
// added to the gradient):
// m ← β1·m + (1−β1)·g; v ← β2·v + (1−β2)·g²;
// p ← p − lr/(1−β1ᵗ) · m / (√v/√(1−β2ᵗ) + eps).
func (c *CPU) Adam(param, grad, m, v *Tensor, p AdamParams) {
	n := param.Numel()
	mustLen("Adam grad", grad.Numel(), n)
	mustLen("Adam m", m.Numel(), n)
	mustLen("Adam v", v.Numel(), n)
	if p.Step < 1 {
		panic(fmt.Sprintf("tensor: Adam: step %d, want ≥ 1", p.Step))
	}
	bc1 := 1 - math.Pow(float64(p.Beta1), float64(p.Step))
	bc2 := 1 - math.Pow(float64(p.Beta2), float64(p.Step))
	stepSize := float32(float64(p.LR) / bc1)
	invSqrtBC2 := float32(1 / math.Sqrt(bc2))
	b1, b2, eps, wd := p.Beta1, p.Beta2, p.Eps, p.WeightDecay
	c.parallelFor(n, elemGrain, func(lo, hi int) {
		ps, gs, ms, vs := param.Data[lo:hi], grad.Data[lo:hi], m.Data[lo:hi], v.Data[lo:hi]
		for i := range ps {
			g := gs[i]
			if wd != 0 {
				g += wd * ps[i]
			}
			mi := b1*ms[i] + (1-b1)*g
			vi := b2*vs[i] + (1-b2)*g*g
			ms[i], vs[i] = mi, vi
			ps[i] -= stepSize * mi / (float32(math.Sqrt(float64(vi)))*invSqrtBC2 + eps)
		}
	})
}
