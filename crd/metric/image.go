package metric

import (
	"fmt"
	"math"
)

// ToUint8Truncate converts generator outputs in [−1, 1] to uint8 exactly as
// the reference's tensor2im (docs/crd.md §7): v = (x + 1)/2·255 in float32, clipped
// to [0, 255], then truncated (not rounded). It works elementwise, so the
// layout of x (NCHW or HWC) is kept; the reference's HWC transpose is not
// needed when the result goes back through Uint8ToUnit. NaN becomes 0.
// len(dst) must equal len(x).
func ToUint8Truncate(dst []uint8, x []float32) {
	if len(dst) != len(x) {
		panic(fmt.Sprintf("metric: ToUint8Truncate: dst has %d elements, x has %d", len(dst), len(x)))
	}
	for i, v := range x {
		// float32 at every step, as numpy computes on a float32 array.
		u := float32(float32(float32(v+1)/2) * 255)
		switch {
		case u >= 255:
			dst[i] = 255
		case u > 0:
			dst[i] = uint8(u) // truncates toward zero
		default: // ≤ 0 or NaN
			dst[i] = 0
		}
	}
}

// Uint8ToUnit converts uint8 pixels to float32 in [0, 1]: u/255, the
// reference's `astype(float32) / 255`. len(dst) must equal len(u).
func Uint8ToUnit(dst []float32, u []uint8) {
	if len(dst) != len(u) {
		panic(fmt.Sprintf("metric: Uint8ToUnit: dst has %d elements, u has %d", len(dst), len(u)))
	}
	for i, v := range u {
		dst[i] = float32(v) / 255
	}
}

// PSNR returns the peak signal-to-noise ratio of a against b in dB,
// 10·log10(maxVal² / MSE), with the MSE over all elements in float64
// (skimage.metrics.peak_signal_noise_ratio with data_range = maxVal). maxVal is
// the data range of the images: 1 for images in [0, 1] (Uint8ToUnit's output,
// what crdgo evaluates on), 255 for images on the uint8 scale. Identical images
// give +Inf. a and b must have the same, non-zero length and maxVal must be > 0.
func PSNR(a, b []float32, maxVal float64) float64 {
	if len(a) != len(b) || len(a) == 0 {
		panic(fmt.Sprintf("metric: PSNR: images have %d and %d elements", len(a), len(b)))
	}
	if !(maxVal > 0) {
		panic(fmt.Sprintf("metric: PSNR: maxVal must be > 0, got %v", maxVal))
	}
	var sum float64
	for i := range a {
		d := float64(a[i]) - float64(b[i])
		sum += d * d
	}
	mse := sum / float64(len(a))
	if mse == 0 {
		return math.Inf(1)
	}
	return 10 * math.Log10(maxVal*maxVal/mse)
}

// MeanAbs returns the mean absolute difference (L1) of a and b, in float64.
// a and b must have the same, non-zero length.
func MeanAbs(a, b []float32) float64 {
	if len(a) != len(b) || len(a) == 0 {
		panic(fmt.Sprintf("metric: MeanAbs: images have %d and %d elements", len(a), len(b)))
	}
	var sum float64
	for i := range a {
		sum += math.Abs(float64(a[i]) - float64(b[i]))
	}
	return sum / float64(len(a))
}

// SSIM constants of Wang et al. 2004 for images in [0, 1] (data range L = 1).
const (
	// SSIMWindow is the side of the Gaussian window; images must be at least
	// this large in both dimensions.
	SSIMWindow = 11
	ssimSigma  = 1.5
	ssimC1     = 0.01 * 0.01 // (K1·L)²
	ssimC2     = 0.03 * 0.03 // (K2·L)²
)

// SSIM returns the structural similarity of the images a and b, each (c, h, w)
// row-major with values in [0, 1] (data range 1; convert uint8 images with
// Uint8ToUnit): Wang et al. 2004 with an 11×11 Gaussian window of σ = 1.5
// (normalised to sum 1), K1 = 0.01, K2 = 0.03, population (not sample)
// variances, the SSIM map over the positions where the window fits inside the
// image ((h−10)×(w−10), MATLAB's 'valid'), averaged, then averaged over
// channels. This equals skimage's structural_similarity(gaussian_weights=True,
// sigma=1.5, use_sample_covariance=False, data_range=1, channel_axis=0), which
// filters the whole image and then crops the 5-pixel border. Identical images
// give 1. Computed in float64.
//
// h and w must be ≥ SSIMWindow and len(a) = len(b) = c·h·w, c ≥ 1.
func SSIM(a, b []float32, c, h, w int) float64 {
	if c < 1 || h < SSIMWindow || w < SSIMWindow || len(a) != c*h*w || len(b) != c*h*w {
		panic(fmt.Sprintf("metric: SSIM: images of %d and %d elements as %d×%d×%d; need c ≥ 1 and h, w ≥ %d",
			len(a), len(b), c, h, w, SSIMWindow))
	}
	g := gaussianWindow()
	const r = SSIMWindow / 2
	ow, oh := w-2*r, h-2*r
	// Horizontal pass: five (h, ow) maps of the window-weighted x, y, x², y²,
	// xy; the vertical pass then reduces each column of 11 to one value.
	hz := make([]float64, 5*h*ow)
	hx, hy, hxx, hyy, hxy := hz[0:h*ow], hz[h*ow:2*h*ow], hz[2*h*ow:3*h*ow], hz[3*h*ow:4*h*ow], hz[4*h*ow:]
	total := 0.0
	for ch := 0; ch < c; ch++ {
		pa, pb := a[ch*h*w:(ch+1)*h*w], b[ch*h*w:(ch+1)*h*w]
		for y := 0; y < h; y++ {
			ra, rb := pa[y*w:(y+1)*w], pb[y*w:(y+1)*w]
			for x := 0; x < ow; x++ {
				var sx, sy, sxx, syy, sxy float64
				for k, gk := range g {
					va, vb := float64(ra[x+k]), float64(rb[x+k])
					sx += gk * va
					sy += gk * vb
					sxx += gk * va * va
					syy += gk * vb * vb
					sxy += gk * va * vb
				}
				o := y*ow + x
				hx[o], hy[o], hxx[o], hyy[o], hxy[o] = sx, sy, sxx, syy, sxy
			}
		}
		sum := 0.0
		for y := 0; y < oh; y++ {
			for x := 0; x < ow; x++ {
				var mx, my, exx, eyy, exy float64
				for k, gk := range g {
					o := (y+k)*ow + x
					mx += gk * hx[o]
					my += gk * hy[o]
					exx += gk * hxx[o]
					eyy += gk * hyy[o]
					exy += gk * hxy[o]
				}
				vx, vy, cxy := exx-mx*mx, eyy-my*my, exy-mx*my
				sum += (2*mx*my + ssimC1) * (2*cxy + ssimC2) /
					((mx*mx + my*my + ssimC1) * (vx + vy + ssimC2))
			}
		}
		total += sum / float64(oh*ow)
	}
	return total / float64(c)
}

// gaussianWindow returns the normalised 1-D Gaussian of σ = 1.5 over
// −5…5; the 2-D window is its outer product.
func gaussianWindow() [SSIMWindow]float64 {
	var g [SSIMWindow]float64
	sum := 0.0
	for k := range g {
		d := float64(k - SSIMWindow/2)
		g[k] = math.Exp(-d * d / (2 * ssimSigma * ssimSigma))
		sum += g[k]
	}
	for k := range g {
		g[k] /= sum
	}
	return g
}
