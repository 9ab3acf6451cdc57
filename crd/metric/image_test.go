package metric

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

// noisyPair returns a (c,h,w) image in [0,1] and a noisy, clipped copy.
func noisyPair(rng *rand.Rand, c, h, w int, noise float64) (a, b []float32) {
	a, b = make([]float32, c*h*w), make([]float32, c*h*w)
	for i := range a {
		// Smooth-ish content plus texture, so SSIM is far from both 0 and 1.
		y, x := (i/w)%h, i%w
		v := 0.5 + 0.3*math.Sin(float64(x)/5+float64(i/(h*w)))*math.Cos(float64(y)/7) + 0.1*rng.Float64()
		a[i] = float32(v)
		b[i] = float32(math.Min(1, math.Max(0, v+noise*rng.NormFloat64())))
	}
	return a, b
}

// TestImageMetricsMatchNumPy: SSIM against a direct 2-D window sum and
// skimage's filter-then-crop route, PSNR and L1 against numpy.
func TestImageMetricsMatchNumPy(t *testing.T) {
	ref := newRef(t)
	rng := rand.New(rand.NewPCG(8, 0))
	type icase struct {
		c, h, w   int
		noise     float64
		dataRange float64
	}
	cases := []icase{
		{3, 64, 80, 0.05, 1},
		{1, 11, 11, 0.2, 1}, // the window exactly: one SSIM position
		{3, 37, 12, 0.01, 1},
		{3, 40, 40, 0.1, 255}, // uint8 scale for PSNR
	}
	var spec refSpec
	pairs := make([][2][]float32, len(cases))
	for i, c := range cases {
		a, b := noisyPair(rng, c.c, c.h, c.w, c.noise)
		if c.dataRange == 255 {
			for k := range a {
				a[k], b[k] = 255*a[k], 255*b[k]
			}
		}
		pairs[i] = [2][]float32{a, b}
		spec.Image = append(spec.Image, refImageCase{
			A: ref.write(fmt.Sprintf("a%d.f32", i), a), B: ref.write(fmt.Sprintf("b%d.f32", i), b),
			C: c.c, H: c.h, W: c.w, DataRange: c.dataRange})
	}
	// Identical images.
	same, _ := noisyPair(rng, 2, 16, 16, 0)
	spec.Image = append(spec.Image, refImageCase{A: ref.write("same.f32", same), B: "same.f32", C: 2, H: 16, W: 16, DataRange: 1})
	res := ref.run(spec)

	for i, c := range cases {
		a, b, want := pairs[i][0], pairs[i][1], res.Image[i]
		if got := PSNR(a, b, c.dataRange); math.Abs(got-want.PSNR) > 1e-10*math.Abs(want.PSNR) {
			t.Errorf("PSNR(case %d) = %.15g; numpy %.15g", i, got, want.PSNR)
		}
		if got := MeanAbs(a, b); math.Abs(got-want.MAE) > 1e-12*want.MAE {
			t.Errorf("MeanAbs(case %d) = %.15g; numpy %.15g", i, got, want.MAE)
		}
		if c.dataRange != 1 {
			continue // SSIM takes [0,1] images
		}
		got := SSIM(a, b, c.c, c.h, c.w)
		if math.Abs(got-want.SSIM) > 1e-12 || math.Abs(got-want.SSIMFiltered) > 1e-12 {
			t.Errorf("SSIM(case %d, %d×%d×%d) = %.15g; numpy 2-D window %.15g, skimage route %.15g", i, c.c, c.h, c.w, got, want.SSIM, want.SSIMFiltered)
		}
		if got < 0.005 || got > 0.995 {
			t.Errorf("SSIM(case %d) = %g: the case should be far from 0 and 1", i, got)
		}
		t.Logf("case %d: SSIM %.10f (numpy %.10f, skimage route %.10f), PSNR %.6f", i, got, want.SSIM, want.SSIMFiltered, PSNR(a, b, c.dataRange))
	}
	last := res.Image[len(res.Image)-1]
	if !last.PSNRInf || last.SSIM != 1 {
		t.Errorf("numpy on identical images: PSNR inf %v, SSIM %v", last.PSNRInf, last.SSIM)
	}
}

func TestImageMetricsHand(t *testing.T) {
	const c, h, w = 3, 12, 14
	n := c * h * w
	fill := func(v float32) []float32 {
		x := make([]float32, n)
		for i := range x {
			x[i] = v
		}
		return x
	}
	rng := rand.New(rand.NewPCG(9, 0))
	a, _ := noisyPair(rng, c, h, w, 0)
	if got := PSNR(a, a, 1); !math.IsInf(got, 1) {
		t.Errorf("PSNR(identical) = %g; want +Inf", got)
	}
	if got := SSIM(a, a, c, h, w); got != 1 {
		t.Errorf("SSIM(identical) = %.17g; want 1", got)
	}
	if got := MeanAbs(a, a); got != 0 {
		t.Errorf("MeanAbs(identical) = %g; want 0", got)
	}
	// MSE 0.01 → 20 dB at range 1; 0.01·255² at range 255 is the same ratio.
	if got := PSNR(fill(0), fill(0.1), 1); math.Abs(got-20) > 1e-5 {
		t.Errorf("PSNR(0 vs 0.1) = %g; want 20", got)
	}
	if got := PSNR(fill(0), fill(25.5), 255); math.Abs(got-20) > 1e-9 {
		t.Errorf("PSNR(0 vs 25.5, range 255) = %g; want 20", got)
	}
	if got := MeanAbs(fill(0.25), fill(0.75)); got != 0.5 {
		t.Errorf("MeanAbs(0.25 vs 0.75) = %g; want 0.5", got)
	}
	// Constant images: no variance, SSIM is the luminance term only.
	x, y := 0.2, 0.6
	want := (2*x*y + 1e-4) / (x*x + y*y + 1e-4)
	if got := SSIM(fill(float32(x)), fill(float32(y)), c, h, w); math.Abs(got-want) > 1e-7 {
		t.Errorf("SSIM(const 0.2 vs 0.6) = %.10g; want %.10g", got, want)
	}
	// Negated contrast: SSIM of a and 1−a is negative.
	b := make([]float32, n)
	for i := range a {
		b[i] = 1 - a[i]
	}
	if got := SSIM(a, b, c, h, w); got >= 0 {
		t.Errorf("SSIM(a, 1−a) = %g; want < 0", got)
	}
}

func TestImageMetricsPanics(t *testing.T) {
	x := make([]float32, 3*10*20)
	for _, c := range []struct {
		name string
		f    func()
		want string
	}{
		{"SSIM small", func() { SSIM(x, x, 3, 10, 20) }, "need c ≥ 1 and h, w ≥ 11"},
		{"SSIM shape", func() { SSIM(x, x[:10], 3, 10, 20) }, "images of 600 and 10 elements"},
		{"PSNR lengths", func() { PSNR(x, x[:1], 1) }, "images have 600 and 1 elements"},
		{"PSNR empty", func() { PSNR(nil, nil, 1) }, "images have 0 and 0 elements"},
		{"PSNR range", func() { PSNR(x, x, 0) }, "maxVal must be > 0"},
		{"MeanAbs lengths", func() { MeanAbs(x[:2], x) }, "images have 2 and 600 elements"},
		{"ToUint8Truncate", func() { ToUint8Truncate(make([]uint8, 2), x) }, "dst has 2 elements, x has 600"},
		{"Uint8ToUnit", func() { Uint8ToUnit(x, make([]uint8, 2)) }, "dst has 600 elements, u has 2"},
	} {
		func() {
			defer func() {
				r := recover()
				if s, _ := r.(string); !strings.Contains(s, c.want) {
					t.Errorf("%s: panic %v; want it to mention %q", c.name, r, c.want)
				}
			}()
			c.f()
		}()
	}
}

// TestToUint8TruncateMatchesNumPy runs the reference's tensor2im on edge values
// and many random ones, and checks Uint8ToUnit against float32 u/255.
func TestToUint8TruncateMatchesNumPy(t *testing.T) {
	ref := newRef(t)
	rng := rand.New(rand.NewPCG(10, 0))
	x := []float32{-1, 1, 0, -2, 2, 0.999999, -0.999999, 1 - 2.0/255, 2.0/255 - 1, float32(math.Inf(1)), float32(math.Inf(-1))}
	for k := 0; k <= 255; k++ {
		// Exactly on and around every integer level.
		v := float32(2*float64(k)/255 - 1)
		x = append(x, v, math.Nextafter32(v, 2), math.Nextafter32(v, -2))
	}
	for len(x) < 50000 {
		x = append(x, float32(rng.Float64()*2.2-1.1))
	}
	res := ref.run(refSpec{Tensor2im: []refT2ICase{{X: ref.write("x.f32", x), N: len(x)}}})
	got := make([]uint8, len(x))
	ToUint8Truncate(got, x)
	for i, want := range res.Tensor2im[0].U8 {
		if int(got[i]) != want {
			t.Fatalf("ToUint8Truncate(%.9g) = %d; numpy tensor2im %d", x[i], got[i], want)
		}
	}
	nan := []uint8{7}
	ToUint8Truncate(nan, []float32{float32(math.NaN())})
	if nan[0] != 0 {
		t.Errorf("ToUint8Truncate(NaN) = %d; want 0", nan[0])
	}

	u := make([]uint8, 256)
	for i := range u {
		u[i] = uint8(i)
	}
	f := make([]float32, 256)
	Uint8ToUnit(f, u)
	for i, v := range f {
		if want := float32(i) / 255; v != want || v < 0 || v > 1 {
			t.Fatalf("Uint8ToUnit(%d) = %.9g; want %.9g", i, v, want)
		}
	}
	if f[255] != 1 || f[0] != 0 {
		t.Errorf("Uint8ToUnit: 0 → %g, 255 → %g; want 0 and 1", f[0], f[255])
	}
}
