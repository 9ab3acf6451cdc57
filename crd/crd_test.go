package crd

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

type comboCase struct {
	shape [4]int
	p     int
}

// comboCases: odd sizes, H and W not multiples of P, batches, and an official selection that
// runs past image 0's patches (N = 5 > L = 4).
var comboCases = []comboCase{
	{[4]int{1, 3, 4, 4}, 2},
	{[4]int{1, 3, 7, 5}, 2},
	{[4]int{2, 3, 6, 9}, 3},
	{[4]int{3, 3, 5, 6}, 2},
	{[4]int{5, 3, 4, 4}, 2},
	{[4]int{2, 1, 5, 4}, 2},
	{[4]int{1, 4, 3, 6}, 3},
}

// combos lists the combinations under test with their naive counterpart.
func combos(shape [4]int) []struct {
	name  string
	run   func(s, t, grad []float32, shape [4]int, p int) float64
	naive func(s, t []img, p int) float64
} {
	type entry = struct {
		name  string
		run   func(s, t, grad []float32, shape [4]int, p int) float64
		naive func(s, t []img, p int) float64
	}
	out := []entry{
		{"CycleGAN", func(s, t, g []float32, shape [4]int, p int) float64 {
			tot, _ := CycleGAN(s, t, shape, p, g, 1)
			return tot
		}, naiveCycleGAN},
		{"Pix2Pix/intended", func(s, t, g []float32, shape [4]int, p int) float64 {
			tot, _ := Pix2Pix(s, t, shape, p, Intended, g, 1)
			return tot
		}, func(s, t []img, p int) float64 { return naivePix2Pix(s, t, p, false) }},
	}
	if shape[1] == 3 {
		out = append(out, entry{"Pix2Pix/official", func(s, t, g []float32, shape [4]int, p int) float64 {
			tot, _ := Pix2Pix(s, t, shape, p, Official, g, 1)
			return tot
		}, func(s, t []img, p int) float64 { return naivePix2Pix(s, t, p, true) }})
	}
	return out
}

// TestCombinationsAgainstNaive checks each combination's loss against the naive evaluation
// and its gradient against central differences of the naive loss, on a random subset of
// pixels (the naive loss is O(n³d) per evaluation).
func TestCombinationsAgainstNaive(t *testing.T) {
	const seed = 20
	r := rand.New(rand.NewPCG(seed, 0))
	for _, cc := range comboCases {
		N, C, H, W := cc.shape[0], cc.shape[1], cc.shape[2], cc.shape[3]
		size := N * C * H * W
		s, tt := randSet(r, 1, size), randSet(r, 1, size)
		for _, cb := range combos(cc.shape) {
			label := fmt.Sprintf("seed %d %s %v P=%d", seed, cb.name, cc.shape, cc.p)
			grad := make([]float32, size)
			got := cb.run(s, tt, grad, cc.shape, cc.p)
			sImg, tImg := batch(s, cc.shape), batch(tt, cc.shape)
			want := cb.naive(sImg, tImg, cc.p)
			if math.Abs(got-want) > 1e-9*math.Abs(want) {
				t.Errorf("%s: total = %.15g; naive %.15g", label, got, want)
			}
			const h = 1e-5
			var worst, scale float64
			for _, q := range r.Perm(size)[:min(size, 24)] {
				b, e := q/(C*H*W), q%(C*H*W)
				old := sImg[b].v[e]
				sImg[b].v[e] = old + h
				fp := cb.naive(sImg, tImg, cc.p)
				sImg[b].v[e] = old - h
				fm := cb.naive(sImg, tImg, cc.p)
				sImg[b].v[e] = old
				fd := (fp - fm) / (2 * h)
				worst = max(worst, math.Abs(float64(grad[q])-fd))
				scale = max(scale, math.Abs(fd))
			}
			if worst > gradTol*scale {
				t.Errorf("%s: max |analytic − finite difference| = %.3g; want ≤ %.1g·%.3g", label, worst, gradTol, scale)
			}
		}
	}
}

// TestOfficialPatchSelection checks the released pix2pix patch term (docs/crd.md §1.3): only
// image 0 matters, only its patches k < B, each as its 3 channel planes of P².
func TestOfficialPatchSelection(t *testing.T) {
	r := rand.New(rand.NewPCG(21, 0))
	shape := [4]int{3, 3, 8, 12} // B = 3, P = 4: L = 2×3 = 6 patches per image
	const p = 4
	size := 3 * 3 * 8 * 12
	s, tt := randSet(r, 1, size), randSet(r, 1, size)
	official := func(s, tt []float32) (float64, []ImageTerms, []float32) {
		g := make([]float32, size)
		tot, per := Pix2Pix(s, tt, shape, p, Official, g, 1)
		_, rc := Pix2Pix(s, tt, shape, p, Intended, nil, 0)
		var rowsCols float64
		for b := range rc {
			rowsCols += rc[b].Row.RKD + rc[b].Column.RKD
		}
		return tot - 2.5*rowsCols, per, g
	}
	patchTot, per, _ := official(s, tt)

	// Each term k is RKD over the 3 channel vectors (P² each) of patch k of image 0: block row
	// 0, block column k.
	var sum float64
	for k := range 3 {
		xs, ys := make([]float32, 3*p*p), make([]float32, 3*p*p)
		for c := range 3 {
			for ki := range p {
				for kj := range p {
					xs[c*p*p+ki*p+kj] = s[(c*8+ki)*12+k*p+kj]
					ys[c*p*p+ki*p+kj] = tt[(c*8+ki)*12+k*p+kj]
				}
			}
		}
		want := RKD(xs, ys, 3, p*p, nil, 0)
		if per[k].Patch != want {
			t.Errorf("official term k=%d = %+v; want RKD of the channels of patch %d of image 0 = %+v", k, per[k].Patch, k, want)
		}
		sum += want.RKD
	}
	if math.Abs(patchTot-2.5*sum) > 1e-12 {
		t.Errorf("official patch part = %.15g; want 2.5·Σ_k = %.15g", patchTot, 2.5*sum)
	}

	// Changing a pixel outside those patches (image 0 outside its top 4×12 strip, images 1
	// and 2) leaves the official terms unchanged; changing one inside does not.
	inside := func(q int) bool { return q < 3*8*12 && q%(8*12)/12 < p }
	for _, q := range []int{0, 3*8*12 - 1, 12*p + 5, 8*12 + 11, 3*8*12 + 7, 2*3*8*12 + 40} {
		s2 := append([]float32(nil), s...)
		s2[q] += 0.5
		_, per2, _ := official(s2, tt)
		changed := false
		for k := range 3 {
			changed = changed || per2[k].Patch != per[k].Patch
		}
		if changed != inside(q) {
			t.Errorf("student pixel %d (inside the selection: %v): official terms changed = %v", q, inside(q), changed)
		}
	}
}

// TestCheckShape covers the accepted and refused shapes.
func TestCheckShape(t *testing.T) {
	for _, c := range []struct {
		shape  [4]int
		p      int
		compat Compat
		want   string // "" for nil, otherwise a substring of the error
	}{
		{[4]int{1, 3, 256, 256}, 32, Intended, ""},
		{[4]int{4, 3, 256, 256}, 32, Official, ""},
		{[4]int{1, 3, 250, 260}, 32, Intended, ""}, // remainders dropped
		{[4]int{1, 1, 4, 4}, 2, Intended, ""},
		{[4]int{1, 1, 4, 4}, 2, Official, "needs C = 3"},
		{[4]int{0, 3, 4, 4}, 2, Intended, "≥ 1"},
		{[4]int{1, 3, 1, 4}, 1, Intended, "H ≥ 2"},
		{[4]int{1, 3, 4, 1}, 1, Intended, "W ≥ 2"},
		{[4]int{1, 3, 4, 4}, 5, Intended, "1 ≤ P ≤ min(H, W) = 4"},
		{[4]int{1, 3, 4, 4}, 0, Intended, "1 ≤ P"},
		{[4]int{1, 3, 4, 7}, 4, Intended, "gives 1 whole patches"},
		{[4]int{1, 3, 4096, 4}, 2, Intended, "too large"},
		{[4]int{1 << 40, 1 << 40, 4, 4}, 2, Intended, "too large"},
		{[4]int{1, 3, 2048, 2048}, 1, Intended, "want 2 to 2048"},
		{[4]int{1, 3, 4, 4}, 2, Compat(7), "compat 7"},
	} {
		err := CheckShape(c.shape, c.p, c.compat)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("CheckShape(%v, %d, %v) = %v; want nil", c.shape, c.p, c.compat, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("CheckShape(%v, %d, %v) = %v; want an error containing %q", c.shape, c.p, c.compat, err, c.want)
		}
	}
}

func TestParseCompat(t *testing.T) {
	for s, want := range map[string]Compat{"intended": Intended, "official": Official, "Official": Official} {
		if got, err := ParseCompat(s); err != nil || got != want {
			t.Errorf("ParseCompat(%q) = %v, %v; want %v", s, got, err, want)
		}
		if want.String() != strings.ToLower(s) {
			t.Errorf("%v.String() = %q; want %q", want, want.String(), strings.ToLower(s))
		}
	}
	if _, err := ParseCompat("offical"); err == nil {
		t.Errorf("ParseCompat(\"offical\") = nil error")
	}
}

func TestCombinationsPanicOnBadInput(t *testing.T) {
	for name, f := range map[string]func(){
		"CycleGAN bad shape": func() { CycleGAN(make([]float32, 16), make([]float32, 16), [4]int{1, 1, 4, 4}, 3, nil, 0) },
		"CycleGAN short s":   func() { CycleGAN(make([]float32, 15), make([]float32, 16), [4]int{1, 1, 4, 4}, 2, nil, 0) },
		"Pix2Pix short grad": func() {
			Pix2Pix(make([]float32, 16), make([]float32, 16), [4]int{1, 1, 4, 4}, 2, Intended, make([]float32, 3), 1)
		},
		"Pix2Pix official C=1":   func() { Pix2Pix(make([]float32, 16), make([]float32, 16), [4]int{1, 1, 4, 4}, 2, Official, nil, 0) },
		"Pix2Pix unknown compat": func() { Pix2Pix(make([]float32, 16), make([]float32, 16), [4]int{1, 1, 4, 4}, 2, Compat(2), nil, 0) },
	} {
		func() {
			defer func() {
				if r := recover(); r == nil {
					t.Errorf("%s: no panic", name)
				} else if msg := fmt.Sprint(r); !strings.HasPrefix(msg, "crd: CycleGAN: ") && !strings.HasPrefix(msg, "crd: Pix2Pix: ") {
					t.Errorf("%s: panic %q does not name the function", name, msg)
				}
			}()
			f()
		}()
	}
}
