package tensortest

import (
	"fmt"
	"math"

	"github.com/crdgo/crdgo/crd/tensor"
)

// planes splits x (rank ≥ 2) into its number of (H,W) planes, H and W.
func planes(op string, x Array) (int, int, int) {
	r := len(x.Shape)
	if r < 2 || len(x.Data) != numel(x.Shape) {
		panic(fmt.Sprintf("tensortest: %s: x %v", op, x.Shape))
	}
	return numel(x.Shape[:r-2]), x.Shape[r-2], x.Shape[r-1]
}

// withHW is shape with its last two dimensions replaced by h and w.
func withHW(shape []int, h, w int) []int {
	r := len(shape)
	return append(append([]int(nil), shape[:r-2]...), h, w)
}

// poolOut is PyTorch's pooling output size (no dilation, ceil_mode=False).
func poolOut(op string, h, w int, p tensor.PoolParams) (int, int, tensor.PoolParams) {
	p = p.Norm()
	if p.KH <= 0 || p.KW <= 0 || p.StrideH <= 0 || p.StrideW <= 0 || p.PadH < 0 || p.PadW < 0 || 2*p.PadH > p.KH || 2*p.PadW > p.KW {
		panic(fmt.Sprintf("tensortest: %s: %+v (pad must be at most half the kernel)", op, p))
	}
	oh, ow := (h+2*p.PadH-p.KH)/p.StrideH+1, (w+2*p.PadW-p.KW)/p.StrideW+1
	if oh <= 0 || ow <= 0 {
		panic(fmt.Sprintf("tensortest: %s: %d×%d with %+v: empty output", op, h, w, p))
	}
	return oh, ow, p
}

// RefMaxPool2D is torch.nn.functional.max_pool2d over the last two dimensions
// of x (rank ≥ 2): the maximum of each KH×KW window at stride (SH, SW) with
// implicit −∞ padding PadH/PadW; OH = ⌊(H + 2·PadH − KH)/SH⌋ + 1 (OW likewise).
// Zero strides mean the kernel size.
func RefMaxPool2D(x Array, p tensor.PoolParams) Array {
	np, h, w := planes("RefMaxPool2D", x)
	oh, ow, p := poolOut("RefMaxPool2D", h, w, p)
	y := Zeros(withHW(x.Shape, oh, ow)...)
	for pl := 0; pl < np; pl++ {
		for oy := 0; oy < oh; oy++ {
			for ox := 0; ox < ow; ox++ {
				best := math.Inf(-1)
				for i := 0; i < p.KH; i++ {
					for j := 0; j < p.KW; j++ {
						iy, ix := oy*p.StrideH-p.PadH+i, ox*p.StrideW-p.PadW+j
						if iy >= 0 && iy < h && ix >= 0 && ix < w {
							best = math.Max(best, x.Data[(pl*h+iy)*w+ix])
						}
					}
				}
				y.Data[(pl*oh+oy)*ow+ox] = best
			}
		}
	}
	return y
}

// RefAvgPool2D is torch.nn.functional.avg_pool2d (ceil_mode=False) over the last
// two dimensions of x: the sum of each window's in-image elements divided by
// the window's size counted with its padding (CountIncludePad, PyTorch's
// default: the window clipped to [−Pad, size+Pad)) or without it (the number
// of in-image elements). Output size as RefMaxPool2D.
func RefAvgPool2D(x Array, p tensor.PoolParams) Array {
	np, h, w := planes("RefAvgPool2D", x)
	oh, ow, p := poolOut("RefAvgPool2D", h, w, p)
	y := Zeros(withHW(x.Shape, oh, ow)...)
	for pl := 0; pl < np; pl++ {
		for oy := 0; oy < oh; oy++ {
			for ox := 0; ox < ow; ox++ {
				var sum float64
				inImage, inPadded := 0, 0
				for i := 0; i < p.KH; i++ {
					for j := 0; j < p.KW; j++ {
						iy, ix := oy*p.StrideH-p.PadH+i, ox*p.StrideW-p.PadW+j
						if iy < h+p.PadH && ix < w+p.PadW { // always so without ceil_mode
							inPadded++
						}
						if iy >= 0 && iy < h && ix >= 0 && ix < w {
							sum += x.Data[(pl*h+iy)*w+ix]
							inImage++
						}
					}
				}
				div := inImage
				if p.CountIncludePad {
					div = inPadded
				}
				y.Data[(pl*oh+oy)*ow+ox] = sum / float64(div)
			}
		}
	}
	return y
}

// RefAdaptiveAvgPool2D is torch.nn.functional.adaptive_avg_pool2d to oh×ow over
// the last two dimensions of x: output (i, j) averages input rows
// [⌊i·H/oh⌋, ⌈(i+1)·H/oh⌉) and columns [⌊j·W/ow⌋, ⌈(j+1)·W/ow⌉).
func RefAdaptiveAvgPool2D(x Array, oh, ow int) Array {
	np, h, w := planes("RefAdaptiveAvgPool2D", x)
	if oh <= 0 || ow <= 0 {
		panic(fmt.Sprintf("tensortest: RefAdaptiveAvgPool2D: output %d×%d", oh, ow))
	}
	y := Zeros(withHW(x.Shape, oh, ow)...)
	for pl := 0; pl < np; pl++ {
		for i := 0; i < oh; i++ {
			y0, y1 := int(math.Floor(float64(i*h)/float64(oh))), int(math.Ceil(float64((i+1)*h)/float64(oh)))
			for j := 0; j < ow; j++ {
				x0, x1 := int(math.Floor(float64(j*w)/float64(ow))), int(math.Ceil(float64((j+1)*w)/float64(ow)))
				var sum float64
				for iy := y0; iy < y1; iy++ {
					for ix := x0; ix < x1; ix++ {
						sum += x.Data[(pl*h+iy)*w+ix]
					}
				}
				y.Data[(pl*oh+i)*ow+j] = sum / float64((y1-y0)*(x1-x0))
			}
		}
	}
	return y
}

// RefResizeBilinear is torch.nn.functional.interpolate(x, size=(oh, ow),
// mode="bilinear", align_corners=alignCorners) over the last two dimensions of
// x (upsample_bilinear2d). Output coordinate o maps to the source coordinate
//
//	align_corners:  s = o·(in−1)/(out−1)   (0 when out = 1)
//	otherwise:      s = max((o + ½)·in/out − ½, 0)
//
// and interpolates linearly between ⌊s⌋ and min(⌊s⌋+1, in−1), per axis.
func RefResizeBilinear(x Array, oh, ow int, alignCorners bool) Array {
	np, h, w := planes("RefResizeBilinear", x)
	if oh <= 0 || ow <= 0 {
		panic(fmt.Sprintf("tensortest: RefResizeBilinear: output %d×%d", oh, ow))
	}
	source := func(o, in, out int) (int, int, float64) {
		var s float64
		switch {
		case alignCorners && out > 1:
			s = float64(o) * float64(in-1) / float64(out-1)
		case alignCorners:
			s = 0
		default:
			s = math.Max((float64(o)+0.5)*float64(in)/float64(out)-0.5, 0)
		}
		i0 := int(math.Floor(s))
		return i0, min(i0+1, in-1), s - float64(i0)
	}
	y := Zeros(withHW(x.Shape, oh, ow)...)
	for pl := 0; pl < np; pl++ {
		at := func(iy, ix int) float64 { return x.Data[(pl*h+iy)*w+ix] }
		for oy := 0; oy < oh; oy++ {
			y0, y1, ly := source(oy, h, oh)
			for ox := 0; ox < ow; ox++ {
				x0, x1, lx := source(ox, w, ow)
				y.Data[(pl*oh+oy)*ow+ox] = (1-ly)*((1-lx)*at(y0, x0)+lx*at(y0, x1)) +
					ly*((1-lx)*at(y1, x0)+lx*at(y1, x1))
			}
		}
	}
	return y
}
