package data

import "math"

// resize resamples p to w×h with PIL's BICUBIC filter, bit for bit as Pillow (9.x)
// computes Image.resize(size, Image.BICUBIC), which is what the reference's
// transforms.Resize does to a PIL image:
//
//   - Catmull-Rom cubic (a = −0.5), support 2, stretched by the scale factor when
//     shrinking (antialiasing: every source pixel under the output pixel contributes);
//   - pixel centres at (x + 0.5)·scale, window [⌊centre − support + 0.5⌋, ⌊centre +
//     support + 0.5⌋) clipped to the image, weights normalised to sum 1;
//   - weights rounded to 22-bit fixed point, accumulated in int32 from 2²¹ (rounding),
//     clipped to [0, 255] after each pass;
//   - horizontal pass first, into an 8-bit intermediate image of the source rows the
//     vertical pass needs, then the vertical pass.
//
// golang.org/x/image/draw.CatmullRom is the same filter but keeps the intermediate in
// float64 and truncates 16-bit results to 8 bits, so it differs from PIL by a level
// here and there; porting Pillow's Resample.c keeps crdgo's inputs identical to the
// reference's. A resize to the same size returns p unchanged, as PIL returns a copy.
func resize(p pixels, w, h int) pixels {
	if p.w == w && p.h == h {
		return p
	}
	hBounds, hWeights, hK := resampleCoeffs(p.w, w)
	vBounds, vWeights, vK := resampleCoeffs(p.h, h)
	src := p
	if w != p.w {
		// Rows of the source that the vertical pass reads.
		first := vBounds[0]
		last := vBounds[2*(h-1)] + vBounds[2*(h-1)+1]
		src = resampleH(p, first, last, w, hBounds, hWeights, hK)
		for y := 0; y < h; y++ {
			vBounds[2*y] -= first
		}
	}
	if h != p.h {
		src = resampleV(src, h, vBounds, vWeights, vK)
	}
	return src
}

const resamplePrecision = 32 - 8 - 2 // fixed-point bits of a weight (Pillow's PRECISION_BITS)

// bicubic is Pillow's bicubic_filter with a = −0.5. The explicit float64 conversions stop
// the compiler from fusing multiply-adds, so the weights round as Pillow's do.
func bicubic(x float64) float64 {
	const a = -0.5
	if x < 0 {
		x = -x
	}
	if x < 1 {
		t := float64((a + 2) * x)
		t = float64(float64(t-(a+3)) * x)
		return float64(t*x) + 1 // ((a+2)x − (a+3))·x·x + 1
	}
	if x < 2 {
		t := float64(float64(x-5) * x)
		t = float64(float64(t+8) * x)
		return float64(t-4) * a // (((x−5)·x + 8)·x − 4)·a
	}
	return 0
}

// resampleCoeffs is Pillow's precompute_coeffs followed by normalize_coeffs_8bpc for
// one axis of length in resampled to out: for output pixel i, bounds[2i] is the first
// source pixel, bounds[2i+1] the number of source pixels, and weights[i·k : i·k+k] their
// fixed-point weights (zero beyond the count).
func resampleCoeffs(in, out int) (bounds []int, weights []int32, k int) {
	scale := float64(in) / float64(out)
	filterScale := max(scale, 1)
	support := 2 * filterScale
	k = int(math.Ceil(support))*2 + 1
	bounds = make([]int, 2*out)
	weights = make([]int32, out*k)
	ww := make([]float64, k)
	ss := 1 / filterScale
	for i := range out {
		center := float64(float64(i)+0.5) * scale
		lo := int(center - support + 0.5)
		lo = max(lo, 0)
		hi := int(center + support + 0.5)
		hi = min(hi, in)
		n := hi - lo
		total := 0.0
		for x := range n {
			ww[x] = bicubic(float64(float64(x+lo)-center+0.5) * ss)
			total += ww[x]
		}
		for x := range n {
			if total != 0 {
				ww[x] /= total
			}
			v := ww[x] * (1 << resamplePrecision)
			if v < 0 {
				weights[i*k+x] = int32(-0.5 + v)
			} else {
				weights[i*k+x] = int32(0.5 + v)
			}
		}
		bounds[2*i], bounds[2*i+1] = lo, n
	}
	return bounds, weights, k
}

func clip8(v int32) uint8 {
	if v >= 1<<resamplePrecision<<8 {
		return 255
	}
	if v <= 0 {
		return 0
	}
	return uint8(v >> resamplePrecision)
}

// resampleH resamples rows [first, last) of p to width w.
func resampleH(p pixels, first, last, w int, bounds []int, weights []int32, k int) pixels {
	c := p.c
	q := pixels{w: w, h: last - first, c: c, pix: make([]uint8, w*(last-first)*c)}
	acc := make([]int32, c)
	o := 0
	for y := first; y < last; y++ {
		row := p.pix[y*p.w*c : (y+1)*p.w*c]
		for x := range w {
			lo, n := bounds[2*x], bounds[2*x+1]
			kw := weights[x*k : x*k+n]
			for ch := range acc {
				acc[ch] = 1 << (resamplePrecision - 1)
			}
			for j, wt := range kw {
				s := row[(lo+j)*c:]
				for ch := range acc {
					acc[ch] += int32(s[ch]) * wt
				}
			}
			for ch, v := range acc {
				q.pix[o+ch] = clip8(v)
			}
			o += c
		}
	}
	return q
}

// resampleV resamples p to height h; bounds index p's rows.
func resampleV(p pixels, h int, bounds []int, weights []int32, k int) pixels {
	c := p.c
	stride := p.w * c
	q := pixels{w: p.w, h: h, c: c, pix: make([]uint8, stride*h)}
	acc := make([]int32, stride)
	for y := range h {
		lo, n := bounds[2*y], bounds[2*y+1]
		for i := range acc {
			acc[i] = 1 << (resamplePrecision - 1)
		}
		for j, wt := range weights[y*k : y*k+n] {
			row := p.pix[(lo+j)*stride : (lo+j+1)*stride]
			for i, v := range row {
				acc[i] += int32(v) * wt
			}
		}
		out := q.pix[y*stride : (y+1)*stride]
		for i, v := range acc {
			out[i] = clip8(v)
		}
	}
	return q
}
