package crd

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestSliceLayouts checks every gather against the naive slicing (written from docs/crd.md §1.1
// and crd_reference.py) on odd sizes, remainders included.
func TestSliceLayouts(t *testing.T) {
	r := rand.New(rand.NewPCG(10, 0))
	for _, sz := range [][4]int{{3, 4, 4, 2}, {1, 5, 7, 2}, {2, 6, 9, 3}, {3, 7, 5, 1}, {4, 8, 8, 4}, {3, 11, 10, 5}} {
		c, h, w, p := sz[0], sz[1], sz[2], sz[3]
		x := randSet(r, 1, c*h*w)
		m := batch(x, [4]int{1, c, h, w})[0]
		check := func(name string, got []float32, want [][]float64) {
			t.Helper()
			d := len(want[0])
			if len(got) != len(want)*d {
				t.Fatalf("%s %v: length %d; want %d×%d", name, sz, len(got), len(want), d)
			}
			for i := range want {
				for k := range d {
					if float64(got[i*d+k]) != want[i][k] {
						t.Fatalf("%s %v: [%d,%d] = %v; want %v", name, sz, i, k, got[i*d+k], want[i][k])
					}
				}
			}
		}
		n, d := RowsSize(c, h, w)
		got := make([]float32, n*d)
		Rows(got, x, c, h, w)
		check("Rows", got, naiveRows(m))
		n, d = ColumnsSize(c, h, w)
		got = make([]float32, n*d)
		Columns(got, x, c, h, w)
		check("Columns", got, naiveCols(m))
		n, d = PatchesSize(c, h, w, p)
		got = make([]float32, n*d)
		Patches(got, x, c, h, w, p)
		check("Patches", got, naivePatches(m, p))
		for l := range n {
			got = make([]float32, c*p*p)
			PatchChannels(got, x, c, h, w, p, l)
			check("PatchChannels", got, naiveChannelsOfPatch(m, p, l))
		}
	}
}

// TestSliceAdjoints checks ⟨gather(x), g⟩ = ⟨x, scatter(g)⟩ for random x and g, and that a
// scatter adds into its destination.
func TestSliceAdjoints(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 0))
	c, h, w, p := 3, 7, 10, 3
	x := randSet(r, 1, c*h*w)
	type pair struct {
		name    string
		size    int
		gather  func(dst []float32)
		scatter func(dx, g []float32)
	}
	nPatch, dPatch := PatchesSize(c, h, w, p)
	pairs := []pair{
		{"Rows", c * h * w, func(dst []float32) { Rows(dst, x, c, h, w) }, func(dx, g []float32) { AddRows(dx, g, c, h, w) }},
		{"Columns", c * h * w, func(dst []float32) { Columns(dst, x, c, h, w) }, func(dx, g []float32) { AddColumns(dx, g, c, h, w) }},
		{"Patches", nPatch * dPatch, func(dst []float32) { Patches(dst, x, c, h, w, p) }, func(dx, g []float32) { AddPatches(dx, g, c, h, w, p) }},
		{"PatchChannels", c * p * p, func(dst []float32) { PatchChannels(dst, x, c, h, w, p, 4) }, func(dx, g []float32) { AddPatchChannels(dx, g, c, h, w, p, 4) }},
	}
	for _, pr := range pairs {
		set := make([]float32, pr.size)
		pr.gather(set)
		g := randSet(r, 1, pr.size)
		base := randSet(r, 1, c*h*w)
		dx := append([]float32(nil), base...)
		pr.scatter(dx, g)
		var lhs, rhs float64
		for q := range set {
			lhs += float64(set[q]) * float64(g[q])
		}
		for q := range dx {
			rhs += float64(x[q]) * float64(dx[q]-base[q])
		}
		if math.Abs(lhs-rhs) > 1e-5*math.Abs(lhs) {
			t.Errorf("%s: ⟨gather x, g⟩ = %.9g; ⟨x, scatter g⟩ = %.9g", pr.name, lhs, rhs)
		}
	}
}

func TestSlicePanicsOnBadLengths(t *testing.T) {
	for name, f := range map[string]func(){
		"Rows short dst":      func() { Rows(make([]float32, 5), make([]float32, 12), 1, 3, 4) },
		"Columns short image": func() { Columns(make([]float32, 12), make([]float32, 11), 1, 3, 4) },
		"Patches p > H":       func() { Patches(make([]float32, 12), make([]float32, 12), 1, 3, 4, 4) },
		"PatchChannels l":     func() { PatchChannels(make([]float32, 4), make([]float32, 16), 1, 4, 4, 2, 4) },
		"AddRows zero C":      func() { AddRows(nil, nil, 0, 3, 4) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", name)
				}
			}()
			f()
		}()
	}
}
