package crd

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestTermsSelectSets checks that a CRD term restricted to some slice sets is
// the sum of those sets' relations and nothing else: the selected terms of
// two disjoint selections add up to the full term, loss and gradient; a set
// not selected has a zero Relation; AllTerms is the full term bit for bit.
func TestTermsSelectSets(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 18))
	for _, c := range comboCases {
		N, C, H, W := c.shape[0], c.shape[1], c.shape[2], c.shape[3]
		n := N * C * H * W
		s, tt := make([]float32, n), make([]float32, n)
		for i := range s {
			s[i], tt[i] = float32(rng.Float64()*2-1), float32(rng.Float64()*2-1)
		}
		compats := []Compat{Intended}
		if C == 3 {
			compats = append(compats, Official)
		}
		for _, compat := range compats {
			type call func(ws *Workspace, terms Terms, g []float32) (float64, []ImageTerms)
			calls := map[string]call{
				"Pix2Pix/" + compat.String(): func(ws *Workspace, terms Terms, g []float32) (float64, []ImageTerms) {
					return ws.Pix2PixTerms(s, tt, c.shape, c.p, compat, terms, g, 1)
				},
			}
			if compat == Intended {
				calls["CycleGAN"] = func(ws *Workspace, terms Terms, g []float32) (float64, []ImageTerms) {
					return ws.CycleGANTerms(s, tt, c.shape, c.p, terms, g, 1)
				}
			}
			for name, f := range calls {
				var ws Workspace
				gAll, gRC, gP := make([]float32, n), make([]float32, n), make([]float32, n)
				all, perAll := f(&ws, AllTerms, gAll)
				rc, perRC := f(&ws, TermRows|TermColumns, gRC)
				p, perP := f(&ws, TermPatches, gP)
				none, _ := f(&ws, 0, nil)
				var ref float64
				if name == "CycleGAN" {
					ref, _ = ws.CycleGAN(s, tt, c.shape, c.p, nil, 0)
				} else {
					ref, _ = ws.Pix2Pix(s, tt, c.shape, c.p, compat, nil, 0)
				}
				if all != ref {
					t.Errorf("%s %v: AllTerms = %v; the full term is %v", name, c.shape, all, ref)
				}
				if none != 0 {
					t.Errorf("%s %v: no terms = %v; want 0", name, c.shape, none)
				}
				if math.Abs(rc+p-all) > 1e-12*math.Max(1, math.Abs(all)) || !(rc > 0) || !(p > 0) {
					t.Errorf("%s %v: rows+columns %v + patches %v = %v; want the full %v, both > 0", name, c.shape, rc, p, rc+p, all)
				}
				for b := range perRC {
					if perRC[b].Patch != (Relation{}) {
						t.Errorf("%s %v: rows+columns: image %d patch relation %+v; want zero", name, c.shape, b, perRC[b].Patch)
					}
					if perRC[b].Row != perAll[b].Row || perRC[b].Column != perAll[b].Column {
						t.Errorf("%s %v: rows+columns: image %d rows/columns differ from the full term's", name, c.shape, b)
					}
					if perP[b].Row != (Relation{}) || perP[b].Column != (Relation{}) {
						t.Errorf("%s %v: patches only: image %d has rows or columns %+v", name, c.shape, b, perP[b])
					}
				}
				var scale float64
				for _, g := range gAll {
					scale = math.Max(scale, math.Abs(float64(g)))
				}
				for i := range gAll {
					if d := float64(gRC[i]) + float64(gP[i]) - float64(gAll[i]); math.Abs(d) > 1e-5*scale {
						t.Fatalf("%s %v: gradient element %d: rows+columns %v + patches %v; full %v", name, c.shape, i, gRC[i], gP[i], gAll[i])
					}
				}
			}
		}
	}
}

func TestTermsString(t *testing.T) {
	for _, c := range []struct {
		t    Terms
		want string
	}{{AllTerms, "rows+columns+patches"}, {TermRows | TermColumns, "rows+columns"}, {TermPatches, "patches"}, {0, "none"}} {
		if got := c.t.String(); got != c.want {
			t.Errorf("Terms(%d).String() = %q; want %q", c.t, got, c.want)
		}
	}
}
