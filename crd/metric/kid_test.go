package metric

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

func flatIdx(sub [][]int) []int64 {
	var out []int64
	for _, s := range sub {
		for _, v := range s {
			out = append(out, int64(v))
		}
	}
	return out
}

// TestKIDMatchesNumPy: per-subset MMD² on the same subsets as torch-fidelity's
// formula in numpy, both strategies; KID's mean and std from them; and the
// whole-set case.
func TestKIDMatchesNumPy(t *testing.T) {
	ref := newRef(t)
	rng := rand.New(rand.NewPCG(6, 0))
	type kcase struct {
		nx, ny, dim int
		opt         KIDOptions
	}
	cases := []kcase{
		{150, 120, 64, KIDOptions{Subsets: 7, SubsetSize: 50, Seed: 1}},
		{90, 200, 33, KIDOptions{Subsets: 5, SubsetSize: 1000, Seed: 2}}, // capped at 90
		{119, 119, 48, DefaultKIDOptions()},                              // whole sets: one subset
	}
	var spec refSpec
	type prepared struct {
		x, y       []float64
		subR, subF [][]int
	}
	prep := make([]prepared, len(cases))
	for i, c := range cases {
		x := reluFeatures(rng, c.nx, c.dim, 0)
		y := reluFeatures(rng, c.ny, c.dim, 0.4)
		subR, subF, err := kidSubsets(c.nx, c.ny, c.opt)
		if err != nil {
			t.Fatal(err)
		}
		prep[i] = prepared{x, y, subR, subF}
		spec.KID = append(spec.KID, refKIDCase{
			X: ref.write(fmt.Sprintf("x%d", i), x), NX: c.nx,
			Y: ref.write(fmt.Sprintf("y%d", i), y), NY: c.ny, Dim: c.dim,
			IdxX:    ref.write(fmt.Sprintf("ix%d", i), flatIdx(subR)),
			IdxY:    ref.write(fmt.Sprintf("iy%d", i), flatIdx(subF)),
			Subsets: len(subR), M: len(subR[0]),
		})
	}
	res := ref.run(spec)
	for i, c := range cases {
		p, want := prep[i], res.KID[i]
		for _, pre := range []bool{true, false} {
			got := kidMMDs(p.x, c.nx, p.y, c.ny, c.dim, p.subR, p.subF, pre)
			for s := range got {
				if math.Abs(got[s]-want.MMDs[s]) > 1e-10 {
					t.Errorf("kidMMDs(case %d, precompute %v): subset %d = %.15g; numpy %.15g", i, pre, s, got[s], want.MMDs[s])
				}
			}
		}
		mean, std, err := KID(p.x, c.nx, p.y, c.ny, c.dim, c.opt)
		if err != nil {
			t.Fatal(err)
		}
		if math.Abs(mean-want.Mean) > 1e-10 || math.Abs(std-want.Std) > 1e-10 {
			t.Errorf("KID(case %d) = %.12g ± %.12g; numpy %.12g ± %.12g", i, mean, std, want.Mean, want.Std)
		}
		if mean < 0.01 {
			t.Errorf("KID(case %d) = %g: the sets differ, the case should not be near 0", i, mean)
		}
		t.Logf("case %d (%d vs %d, m %d, %d subsets): KID %.6g ± %.3g; numpy %.6g ± %.3g",
			i, c.nx, c.ny, len(p.subR[0]), len(p.subR), mean, std, want.Mean, want.Std)
	}
	if last := res.KID[len(cases)-1]; len(last.MMDs) != 1 {
		t.Errorf("whole-set case: %d subsets; want 1", len(last.MMDs))
	}
}

// TestKIDSameDistribution: two samples of one distribution give a KID near 0
// (the estimator is unbiased), a shifted one a clearly larger KID.
func TestKIDSameDistribution(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 0))
	const n, dim = 400, 16
	all := make([]float64, 3*n*dim)
	for i := range all {
		all[i] = rng.NormFloat64()
	}
	a, b, c := all[:n*dim], all[n*dim:2*n*dim], all[2*n*dim:]
	for i := range c {
		c[i] += 0.5
	}
	opt := KIDOptions{Subsets: 20, SubsetSize: 200, Seed: 3}
	same, sameStd, err := KID(a, n, b, n, dim, opt)
	if err != nil {
		t.Fatal(err)
	}
	diff, _, err := KID(a, n, c, n, dim, opt)
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(same) > 3*sameStd+1e-3 || diff < 10*math.Abs(same) || diff < 0.05 {
		t.Errorf("KID(same) = %g ± %g, KID(shifted) = %g; want same ≈ 0 and shifted ≫ same", same, sameStd, diff)
	}
}

func TestKIDSubsets(t *testing.T) {
	opt := KIDOptions{Subsets: 30, SubsetSize: 17, Seed: 9}
	r1, f1, err := kidSubsets(40, 23, opt)
	if err != nil {
		t.Fatal(err)
	}
	r2, f2, _ := kidSubsets(40, 23, opt)
	if len(r1) != 30 || !slices.EqualFunc(r1, r2, slices.Equal) || !slices.EqualFunc(f1, f2, slices.Equal) {
		t.Fatalf("kidSubsets(seed 9) twice: not the same 30 subsets")
	}
	for s := range r1 {
		for _, sub := range []struct {
			idx []int
			n   int
		}{{r1[s], 40}, {f1[s], 23}} {
			seen := map[int]bool{}
			for _, v := range sub.idx {
				if v < 0 || v >= sub.n || seen[v] {
					t.Fatalf("kidSubsets: subset %d = %v: index %d out of [0,%d) or repeated", s, sub.idx, v, sub.n)
				}
				seen[v] = true
			}
			if len(sub.idx) != 17 {
				t.Fatalf("kidSubsets: subset %d has %d indices; want 17", s, len(sub.idx))
			}
		}
	}
	opt.Seed = 10
	r3, _, _ := kidSubsets(40, 23, opt)
	if slices.EqualFunc(r1, r3, slices.Equal) {
		t.Errorf("kidSubsets: seeds 9 and 10 gave the same subsets")
	}
	// Every image shows up across 30 subsets of 17 from 23.
	count := make([]int, 23)
	for _, s := range f1 {
		for _, v := range s {
			count[v]++
		}
	}
	if slices.Contains(count, 0) {
		t.Errorf("kidSubsets: some fake image never sampled: %v", count)
	}
}

func TestKIDErrors(t *testing.T) {
	x := make([]float64, 10*4)
	for _, c := range []struct {
		name string
		y    []float64
		ny   int
		dim  int
		opt  KIDOptions
		want string
	}{
		{"zero subsets", x, 10, 4, KIDOptions{Subsets: 0, SubsetSize: 5}, "subsets must be ≥ 1"},
		{"subset size 1", x, 10, 4, KIDOptions{Subsets: 3, SubsetSize: 1}, "subset size must be ≥ 2"},
		{"one fake image", x[:4], 1, 4, DefaultKIDOptions(), "at least 2 images in each set"},
		{"shape", x[:7], 2, 4, DefaultKIDOptions(), "kid: fake: 7 activations are not 2 images × 4 features"},
		{"nan", append(make([]float64, 5), math.NaN(), 0, 0), 2, 4, DefaultKIDOptions(), "kid: fake: image 1 feature 1 is NaN"},
		{"dim", x, 10, 0, DefaultKIDOptions(), "feature dimension must be ≥ 1"},
	} {
		_, _, err := KID(x, len(x)/max(c.dim, 1), c.y, c.ny, c.dim, c.opt)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("KID(%s) error = %v; want it to mention %q", c.name, err, c.want)
		}
	}
}
