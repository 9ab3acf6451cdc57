package metric

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

func mustStats(t testing.TB, acts []float64, n, dim int) Stats {
	t.Helper()
	s, err := ComputeStats(acts, n, dim)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func relErr(got, want float64) float64 {
	return math.Abs(got-want) / math.Max(math.Abs(want), 1e-300)
}

// TestComputeStatsMatchesNumPy compares mean and covariance with np.mean and
// np.cov(rowvar=False), for n > dim and n < dim.
func TestComputeStatsMatchesNumPy(t *testing.T) {
	ref := newRef(t)
	rng := rand.New(rand.NewPCG(1, 0))
	cases := []struct{ n, dim int }{{300, 17}, {40, 129}, {2, 5}}
	var spec refSpec
	acts := make([][]float64, len(cases))
	for i, c := range cases {
		acts[i] = reluFeatures(rng, c.n, c.dim, 0)
		spec.Stats = append(spec.Stats, refStatsCase{
			Feats: ref.write(fmt.Sprintf("s%d.f64", i), acts[i]), N: c.n, Dim: c.dim,
			MuOut: fmt.Sprintf("s%d.mu", i), SigmaOut: fmt.Sprintf("s%d.sigma", i),
		})
	}
	ref.run(spec)
	for i, c := range cases {
		s := mustStats(t, acts[i], c.n, c.dim)
		if s.N != c.n || s.Dim != c.dim {
			t.Errorf("ComputeStats(n=%d, dim=%d): N, Dim = %d, %d", c.n, c.dim, s.N, s.Dim)
		}
		mu := ref.readF64(spec.Stats[i].MuOut, c.dim)
		sigma := ref.readF64(spec.Stats[i].SigmaOut, c.dim*c.dim)
		for j := range mu {
			if math.Abs(s.Mu[j]-mu[j]) > 1e-13*(1+math.Abs(mu[j])) {
				t.Fatalf("ComputeStats(n=%d, dim=%d): mu[%d] = %.17g; numpy %.17g", c.n, c.dim, j, s.Mu[j], mu[j])
			}
		}
		for k := range sigma {
			i2, j2 := k/c.dim, k%c.dim
			scale := math.Sqrt(sigma[i2*c.dim+i2] * sigma[j2*c.dim+j2])
			if math.Abs(s.Sigma[k]-sigma[k]) > 1e-12*scale {
				t.Fatalf("ComputeStats(n=%d, dim=%d): sigma[%d,%d] = %.17g; numpy %.17g", c.n, c.dim, i2, j2, s.Sigma[k], sigma[k])
			}
			if s.Sigma[k] != s.Sigma[j2*c.dim+i2] {
				t.Fatalf("ComputeStats(n=%d, dim=%d): sigma[%d,%d] ≠ sigma[%d,%d]", c.n, c.dim, i2, j2, j2, i2)
			}
		}
	}
}

func TestComputeStatsErrors(t *testing.T) {
	for _, c := range []struct {
		name   string
		acts   []float64
		n, dim int
		want   string
	}{
		{"one image", make([]float64, 4), 1, 4, "at least 2 images"},
		{"zero dim", nil, 2, 0, "dimension"},
		{"short", make([]float64, 7), 2, 4, "not 2 images × 4 features"},
		{"long", make([]float64, 9), 2, 4, "not 2 images × 4 features"},
		{"nan", []float64{0, 1, 2, 3, 4, math.NaN(), 6, 7}, 2, 4, "image 1 feature 1 is NaN"},
		{"inf", []float64{0, 1, math.Inf(-1), 3}, 2, 2, "image 1 feature 0 is -Inf"},
	} {
		_, err := ComputeStats(c.acts, c.n, c.dim)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ComputeStats(%s) error = %v; want it to mention %q", c.name, err, c.want)
		}
	}
}

func TestStatsFromArrays(t *testing.T) {
	mu := []float64{1, 2}
	sigma := []float64{2, 0.5 + 1e-12, 0.5, 1}
	s, err := StatsFromArrays(mu, sigma, 2)
	if err != nil {
		t.Fatal(err)
	}
	if s.Sigma[1] != s.Sigma[2] || s.N != 0 || s.Dim != 2 {
		t.Errorf("StatsFromArrays: %+v; want sigma symmetrised, N 0, Dim 2", s)
	}
	sigma[0] = 7
	if s.Sigma[0] != 2 {
		t.Errorf("StatsFromArrays did not copy sigma")
	}
	for _, c := range []struct {
		name      string
		mu, sigma []float64
		dim       int
		want      string
	}{
		{"dim 0", nil, nil, 0, "dimension must be ≥ 1"},
		{"mu short", []float64{1}, []float64{1, 0, 0, 1}, 2, "mu has 1 entries; want dim 2"},
		{"sigma short", []float64{1, 2}, []float64{1, 0, 0}, 2, "sigma has 3 entries; want 2×2"},
		{"nan mu", []float64{1, math.NaN()}, []float64{1, 0, 0, 1}, 2, "mu[1] is NaN"},
		{"inf sigma", []float64{1, 2}, []float64{1, 0, math.Inf(1), 1}, 2, "sigma[1,0] is +Inf"},
		{"negative diag", []float64{1, 2}, []float64{1, 0, 0, -1e-3}, 2, "sigma[1,1] = -0.001 < 0"},
		{"asymmetric", []float64{1, 2}, []float64{1, 0.5, 0.4, 1}, 2, "not symmetric"},
	} {
		_, err := StatsFromArrays(c.mu, c.sigma, c.dim)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("StatsFromArrays(%s) error = %v; want it to mention %q", c.name, err, c.want)
		}
	}
}

// TestFrechetDistanceSelf: a set against itself is 0 up to rounding, full
// rank and rank-deficient.
func TestFrechetDistanceSelf(t *testing.T) {
	rng := rand.New(rand.NewPCG(2, 0))
	for _, c := range []struct{ n, dim int }{{400, 64}, {60, 256}, {2, 16}} {
		s := mustStats(t, reluFeatures(rng, c.n, c.dim, 0), c.n, c.dim)
		fid, warn, err := FrechetDistance(s, s)
		if err != nil || warn != "" {
			t.Fatalf("FrechetDistance(self, n=%d dim=%d): warn %q, err %v", c.n, c.dim, warn, err)
		}
		scale := 0.0
		for i := 0; i < c.dim; i++ {
			scale += 2 * s.Sigma[i*c.dim+i]
		}
		if math.Abs(fid) > 1e-6*scale {
			t.Errorf("FrechetDistance(self, n=%d dim=%d) = %g; want |fid| < 1e-6·%g", c.n, c.dim, fid, scale)
		}
		t.Logf("n=%d dim=%d: self fid %.3g (scale %.3g)", c.n, c.dim, fid, scale)
	}
}

// TestFrechetDistanceMatchesSciPy: FID from features, against pytorch-fid's
// formula with scipy.linalg.sqrtm on the same features, for full-rank and
// rank-deficient covariances (n < dim, as with 119 test images).
func TestFrechetDistanceMatchesSciPy(t *testing.T) {
	ref := newRef(t)
	rng := rand.New(rand.NewPCG(3, 0))
	type fcase struct{ n1, n2, dim int }
	cases := []fcase{
		{500, 400, 64},  // both full rank
		{60, 80, 256},   // both rank-deficient
		{119, 119, 512}, // the CycleGAN test set size, both rank 118
		{1000, 119, 256},
		{3, 2, 40}, // ranks 2 and 1
	}
	if !testing.Short() {
		// Real statistics full rank, fake ones from 119 images. (At dim 2048
		// scipy's sqrtm alone takes 6–50 s on this 2-core machine; the same
		// check there gave rel err 1.3e-7.)
		cases = append(cases, fcase{1000, 119, 768})
	}
	var spec refSpec
	stats := make([][2]Stats, len(cases))
	for i, c := range cases {
		a := reluFeatures(rng, c.n1, c.dim, 0)
		b := reluFeatures(rng, c.n2, c.dim, 0.5)
		stats[i] = [2]Stats{mustStats(t, a, c.n1, c.dim), mustStats(t, b, c.n2, c.dim)}
		spec.FID = append(spec.FID, refFIDCase{Dim: c.dim,
			Feats1: ref.write(fmt.Sprintf("a%d.f64", i), a), N1: c.n1,
			Feats2: ref.write(fmt.Sprintf("b%d.f64", i), b), N2: c.n2})
	}
	res := ref.run(spec)
	for i, c := range cases {
		want := res.FID[i]
		got, warn, err := FrechetDistance(stats[i][0], stats[i][1])
		if err != nil {
			t.Fatalf("FrechetDistance(n=%d,%d dim=%d): %v", c.n1, c.n2, c.dim, err)
		}
		if warn != "" {
			t.Errorf("FrechetDistance(n=%d,%d dim=%d): warn %q; want none (scipy: warned %v, max |imag diag| %.2g)", c.n1, c.n2, c.dim, warn, want.Warned, want.ImagMax)
		}
		if e := relErr(got, want.FIDEig); e > 1e-6 {
			t.Errorf("FrechetDistance(n=%d,%d dim=%d) = %.12g; numpy eigvals route %.12g (rel err %.2g)", c.n1, c.n2, c.dim, got, want.FIDEig, e)
		}
		if !want.Retried {
			if e := relErr(got, want.FID); e > 1e-6 {
				t.Errorf("FrechetDistance(n=%d,%d dim=%d) = %.12g; scipy sqrtm %.12g (rel err %.2g)", c.n1, c.n2, c.dim, got, want.FID, e)
			}
		} else {
			// scipy's recurrence divided by an exact zero and retried with
			// 1e-6·I added: its trace moves by O(sqrt(eps)) per null
			// direction, which this implementation does not reproduce (see
			// FrechetDistance). Check the documented bound.
			bound := 0.0
			for k := 0; k < c.dim; k++ {
				bound += 2 * math.Sqrt(fidEps*(stats[i][0].Sigma[k*c.dim+k]+stats[i][1].Sigma[k*c.dim+k]+fidEps))
			}
			if d := math.Abs(got - want.FID); d > bound {
				t.Errorf("FrechetDistance(n=%d,%d dim=%d) = %.12g; scipy after its eps retry %.12g: |diff| %.3g > bound %.3g", c.n1, c.n2, c.dim, got, want.FID, d, bound)
			}
		}
		// Symmetric in its arguments, as tr sqrtm(AB) = tr sqrtm(BA).
		rev, _, err := FrechetDistance(stats[i][1], stats[i][0])
		if err != nil || relErr(rev, got) > 1e-10 {
			t.Errorf("FrechetDistance(n=%d,%d dim=%d) swapped = %.12g, %v; want %.12g", c.n1, c.n2, c.dim, rev, err, got)
		}
		t.Logf("n=%d,%d dim=%d: fid %.10g; scipy %.10g (rel %.2g, retried %v, max |imag diag| %.2g); eigvals %.10g (rel %.2g)",
			c.n1, c.n2, c.dim, got, want.FID, relErr(got, want.FID), want.Retried, want.ImagMax, want.FIDEig, relErr(got, want.FIDEig))
	}
}

// TestFrechetDistanceIndefinite: covariances that are not PSD beyond rounding
// (damaged statistics) take the eigenvalue routes; the result is scipy's real
// part and both warn.
func TestFrechetDistanceIndefinite(t *testing.T) {
	ref := newRef(t)
	rng := rand.New(rand.NewPCG(4, 0))
	const dim = 48
	psd := mustStats(t, reluFeatures(rng, 300, dim, 0), 300, dim)
	// Rank 19 covariances minus 0.05·I: 29 eigenvalues at −0.05 each.
	indef := func(shift float64) Stats {
		s := mustStats(t, reluFeatures(rng, 20, dim, shift), 20, dim)
		for i := 0; i < dim; i++ {
			s.Sigma[i*dim+i] -= 0.05
		}
		return s
	}
	i1, i2 := indef(0.3), indef(0.6)
	cases := []struct {
		name   string
		s1, s2 Stats
	}{
		{"sigma1 indefinite", i1, psd},
		{"sigma2 indefinite", psd, i2},
		{"both indefinite", i1, i2},
	}
	var spec refSpec
	for i, c := range cases {
		spec.FID = append(spec.FID, refFIDCase{Dim: dim,
			Mu1: ref.write(fmt.Sprintf("mu1_%d", i), c.s1.Mu), Sigma1: ref.write(fmt.Sprintf("sigma1_%d", i), c.s1.Sigma),
			Mu2: ref.write(fmt.Sprintf("mu2_%d", i), c.s2.Mu), Sigma2: ref.write(fmt.Sprintf("sigma2_%d", i), c.s2.Sigma)})
	}
	res := ref.run(spec)
	for i, c := range cases {
		want := res.FID[i]
		got, warn, err := FrechetDistance(c.s1, c.s2)
		if err != nil {
			t.Fatalf("FrechetDistance(%s): %v", c.name, err)
		}
		if !want.Warned {
			t.Fatalf("scipy did not warn on %s: the case does not test what it should", c.name)
		}
		if !strings.HasPrefix(warn, "fid may be incorrect") {
			t.Errorf("FrechetDistance(%s): warn %q; want \"fid may be incorrect…\"", c.name, warn)
		}
		if e := relErr(got, want.FID); e > 1e-6 {
			t.Errorf("FrechetDistance(%s) = %.12g; scipy %.12g (rel err %.2g)", c.name, got, want.FID, e)
		}
		t.Logf("%s: fid %.10g scipy %.10g; warn %q", c.name, got, want.FID, warn)
	}
}

// TestFrechetDistanceHand checks cases with a closed form.
func TestFrechetDistanceHand(t *testing.T) {
	diag := func(v ...float64) []float64 {
		s := make([]float64, len(v)*len(v))
		for i, x := range v {
			s[i*len(v)+i] = x
		}
		return s
	}
	for _, c := range []struct {
		name   string
		s1, s2 Stats
		want   float64
	}{
		// Diagonal: Σ (sqrt a_i − sqrt b_i)² + |Δμ|².
		{"diagonal", Stats{Mu: []float64{0, 1, 2}, Sigma: diag(4, 9, 1), Dim: 3},
			Stats{Mu: []float64{1, 1, 0}, Sigma: diag(1, 16, 0), Dim: 3}, 1 + 4 + 1 + 1 + 1},
		// All images identical in set 2: Σ2 = 0, FID = |Δμ|² + tr Σ1.
		{"zero covariance", Stats{Mu: []float64{1, 2}, Sigma: []float64{2, 1, 1, 3}, Dim: 2},
			Stats{Mu: []float64{0, 0}, Sigma: diag(0, 0), Dim: 2}, 5 + 5},
		{"both zero", Stats{Mu: []float64{3}, Sigma: diag(0), Dim: 1},
			Stats{Mu: []float64{1}, Sigma: diag(0), Dim: 1}, 4},
	} {
		got, warn, err := FrechetDistance(c.s1, c.s2)
		if err != nil || warn != "" || math.Abs(got-c.want) > 1e-12*(1+c.want) {
			t.Errorf("FrechetDistance(%s) = %.15g, %q, %v; want %g", c.name, got, warn, err, c.want)
		}
	}
}

func TestFrechetDistanceErrors(t *testing.T) {
	ok := Stats{Mu: []float64{0, 0}, Sigma: []float64{1, 0, 0, 1}, Dim: 2}
	huge := Stats{Mu: make([]float64, 4), Sigma: make([]float64, 16), Dim: 4}
	for i := range huge.Sigma {
		huge.Sigma[i] = 1e308 // rank 1; tr sqrtm(Σ·Σ) = 4e308 overflows
	}
	for _, c := range []struct {
		name   string
		s1, s2 Stats
		want   string
	}{
		{"dims differ", ok, Stats{Mu: []float64{0}, Sigma: []float64{1}, Dim: 1}, "stats 1 has dimension 2, stats 2 has 1"},
		{"bad stats 2", ok, Stats{Mu: []float64{0, math.NaN()}, Sigma: []float64{1, 0, 0, 1}, Dim: 2}, "stats 2: mu[1] is NaN"},
		{"asymmetric stats 1", Stats{Mu: []float64{0, 0}, Sigma: []float64{1, 0, 0.5, 1}, Dim: 2}, ok, "stats 1: sigma is not symmetric"},
		// Overflow: the root cannot be computed, the eps retry cannot help, and
		// the error says both.
		{"overflow", huge, huge, "with 1e-06 added to the diagonals"},
		{"mean overflow", Stats{Mu: []float64{1e200, 0}, Sigma: []float64{1, 0, 0, 1}, Dim: 2}, ok, "result is +Inf"},
	} {
		_, _, err := FrechetDistance(c.s1, c.s2)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("FrechetDistance(%s) error = %v; want it to mention %q", c.name, err, c.want)
		}
	}
}

// TestFactorPSD checks the pivoted Cholesky factor and its residual test on
// exact low-rank matrices.
func TestFactorPSD(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 0))
	for _, c := range []struct{ n, rank int }{{1, 1}, {7, 7}, {70, 70}, {70, 13}, {130, 129}, {130, 0}} {
		g := make([]float64, c.n*c.rank)
		for i := range g {
			g[i] = rng.NormFloat64()
		}
		a := make([]float64, c.n*c.n)
		for i := 0; i < c.n; i++ {
			for j := 0; j < c.n; j++ {
				for k := 0; k < c.rank; k++ {
					a[i*c.n+j] += g[i*c.rank+k] * g[j*c.rank+k]
				}
			}
		}
		p, err := factorPSD(a, c.n)
		if err != nil {
			t.Fatalf("factorPSD(n=%d rank=%d): %v", c.n, c.rank, err)
		}
		if p.r != c.rank || !p.psd() {
			t.Errorf("factorPSD(n=%d rank=%d): rank %d, psd %v (neg %.3g)", c.n, c.rank, p.r, p.psd(), p.neg)
		}
		worst := 0.0
		for i := 0; i < c.n; i++ {
			for j := 0; j < c.n; j++ {
				s := 0.0
				for k := 0; k < p.r; k++ {
					s += p.f[i*p.r+k] * p.f[j*p.r+k]
				}
				worst = math.Max(worst, math.Abs(s-a[i*c.n+j]))
			}
		}
		if worst > 1e-10*math.Max(p.maxDiag, 1) {
			t.Errorf("factorPSD(n=%d rank=%d): |F Fᵀ − A| = %.3g", c.n, c.rank, worst)
		}
	}
	// [[1 2] [2 1]] has eigenvalues 3 and −1: the pivot takes one column, the
	// residual 1 − 4 = −3 is the evidence.
	p, err := factorPSD([]float64{1, 2, 2, 1}, 2)
	if err != nil || p.r != 1 || p.psd() || p.neg != 3 {
		t.Errorf("factorPSD([[1 2] [2 1]]) = rank %d, neg %g, err %v; want rank 1, neg 3", p.r, p.neg, err)
	}
}
