package metric

import (
	"errors"
	"fmt"
	"math"
	"math/cmplx"
	"strings"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas64"
	"gonum.org/v1/gonum/lapack"
	"gonum.org/v1/gonum/lapack/lapack64"
)

const (
	// fidEps is pytorch-fid's offset, added to both covariance diagonals when
	// the square root of the product cannot be computed.
	fidEps = 1e-6
	// imagTol is pytorch-fid's bound on the imaginary part of the root above
	// which it says "fid may be incorrect".
	imagTol = 1e-3
	// psdTol decides when a covariance counts as indefinite: when its pivoted
	// Cholesky residual has an eigenvalue below −psdTol·max_i σ_ii. Rounding in
	// a float64 covariance of 2048 features stays below ~2048·ε ≈ 2e-13 of
	// that scale; a covariance rounded to float32 or otherwise damaged shows
	// 1e-7 and more.
	psdTol = 1e-9
)

// FrechetDistance returns the Fréchet distance between the Gaussians s1 and s2,
//
//	FID = |μ1 − μ2|² + tr Σ1 + tr Σ2 − 2 tr sqrtm(Σ1 Σ2),
//
// in float64: pytorch-fid's calculate_frechet_distance (docs/crd.md §7, §9 D14).
// warn is empty, or pytorch-fid's message for the same condition: "fid
// calculation produces singular product; adding 1e-06 to diagonal of cov
// estimates" when the root had to be retried with eps·I added to both
// covariances, and "fid may be incorrect: …" when the root has an imaginary
// part above 1e-3. Either way fid is returned. The result is not clamped: for
// nearly equal statistics it may be a rounding-sized negative number, as in
// pytorch-fid. Both statistics are validated (shapes, finiteness, symmetry).
//
// # How tr sqrtm(Σ1 Σ2) is computed, and how it matches scipy
//
// pytorch-fid forms covmean = scipy.linalg.sqrtm(Σ1 Σ2), the principal square
// root by a Schur method, and takes tr(real(covmean)). The trace of the
// principal root is Σ_i sqrt(λ_i) over the eigenvalues λ_i of Σ1 Σ2 (principal
// complex sqrt), so the real part of the trace is Σ_i Re sqrt(λ_i): a negative
// eigenvalue gives a purely imaginary root and drops out of the real part. Only
// that trace is needed, and it is computed from the eigenvalues, by one of
// three routes chosen by whether the covariances are positive semi-definite:
//
//   - Both PSD (any covariance np.cov or ComputeStats produces, whatever its
//     rank). Each is factored by Cholesky with complete pivoting, Σ = F Fᵀ with
//     F of size dim×rank (LAPACK dpstrf; the rank comes out of it, e.g. 118 for
//     119 images). Then Σ1 Σ2 = F1 (F1ᵀ F2) F2ᵀ has the same non-zero
//     eigenvalues as (F1ᵀF2)(F1ᵀF2)ᵀ, i.e. the squared singular values of
//     K = F1ᵀ F2, so tr sqrtm(Σ1 Σ2) = Σ σ_i(K), the nuclear norm of K, all real
//     and ≥ 0. An SVD gives small singular values to an absolute error of
//     ε·σ_max, so the ~2000 exact zeros of a rank-deficient product stay ~0.
//     scipy instead sees them as rounding-sized eigenvalues ±ε·|Σ1||Σ2|, some
//     negative or complex, whose roots (~1e-8 of the scale) add to its real
//     part and give it tiny imaginary parts: on random rank-deficient
//     statistics the two agree to 3e-8–1.3e-7 relative (dim 256–2048, see the
//     tests), which is scipy's own rounding. No imaginary part can arise on
//     this route.
//   - One PSD, say Σ2 = F2 F2ᵀ, the other indefinite beyond rounding (the
//     residual of its pivoted Cholesky has an eigenvalue below
//     −1e-9·max_i σ_ii; rounding stays below ~1e-13; a damaged file). Σ1 Σ2 has the eigenvalues of the symmetric F2ᵀ Σ1 F2 (plus
//     zeros); they are real, the negative ones contribute the imaginary roots
//     that scipy's real part drops, and they are dropped here too.
//   - Neither PSD. The eigenvalues of the product Σ1 Σ2 itself (LAPACK dgeev,
//     Hessenberg QR), then Σ Re sqrt(λ_i) exactly as above. Slow at 2048
//     (tens of seconds), and only reached for statistics that are not
//     covariances.
//
// The warning "fid may be incorrect" is given when some eigenvalue's root has
// |Im sqrt(λ_i)| > 1e-3. pytorch-fid checks the imaginary parts of covmean's
// diagonal instead, which in the rank-deficient case mostly measure how much
// the Schur recurrence amplifies rounding (it divides by sums of tiny roots);
// that noise does not exist here, so the warning fires only for indefinite
// inputs whose negative eigenvalues are large enough to matter.
//
// The eps retry is pytorch-fid's too: scipy's sqrtm returns non-finite entries
// when its recurrence divides by an exact zero, which the eigenvalue route
// cannot do; here the retry is taken when the factorisation, product or
// eigen/singular-value solver yields a non-finite value or does not converge
// (overflow in practice), and if the retry fails as well, FrechetDistance
// returns the error. Where scipy itself takes the retry (its Schur form has
// exactly zero diagonal entries, seen with products of very low rank such as
// statistics of 3 and 2 images) its result carries the eps perturbation and
// this one does not: the difference is O(sqrt(eps)) per null direction, 6.5e-5
// relative in that test, within 2·Σ_i sqrt(eps·(σ1_ii + σ2_ii + eps)), while
// the sum over numpy's eigenvalues of the product agrees to 1e-8.
//
// Cost at dim 2048, both full rank: two pivoted Cholesky factorisations, one
// GEMM and one SVD of a 2048×2048 matrix: 8.4 s on 2 pinned cores of a Xeon
// (BenchmarkFrechetDistance), about 70% of it in the bidiagonalisation of the
// SVD (gonum's serial, memory-bound Dgemv); scipy's sqrtm alone takes ~6 s on
// 2 cores here. With one side from 119 images (the CycleGAN evaluation) the
// SVD is 2048×118 and the call takes 1.7 s, mostly the factorisation of the
// full-rank side.
func FrechetDistance(s1, s2 Stats) (fid float64, warn string, err error) {
	if err := s1.validate("fid: stats 1"); err != nil {
		return 0, "", err
	}
	if err := s2.validate("fid: stats 2"); err != nil {
		return 0, "", err
	}
	if s1.Dim != s2.Dim {
		return 0, "", fmt.Errorf("metric: fid: stats 1 has dimension %d, stats 2 has %d", s1.Dim, s2.Dim)
	}
	d := s1.Dim
	var diff2, tr1, tr2 float64
	for i := 0; i < d; i++ {
		diff := s1.Mu[i] - s2.Mu[i]
		diff2 += diff * diff
		tr1 += s1.Sigma[i*d+i]
		tr2 += s2.Sigma[i*d+i]
	}

	var warns []string
	trc, im, err := traceSqrtProduct(s1.Sigma, s2.Sigma, d)
	if err != nil {
		warns = append(warns, fmt.Sprintf("fid calculation produces singular product; adding %g to diagonal of cov estimates", fidEps))
		var err2 error
		trc, im, err2 = traceSqrtProduct(addDiag(s1.Sigma, d, fidEps), addDiag(s2.Sigma, d, fidEps), d)
		if err2 != nil {
			return 0, "", fmt.Errorf("metric: fid: dim %d: %w; with %g added to the diagonals: %w", d, err, fidEps, err2)
		}
	}
	if im > imagTol {
		warns = append(warns, fmt.Sprintf("fid may be incorrect: imaginary component %g in the square root of sigma1·sigma2 (a covariance is not positive semi-definite)", im))
	}
	fid = diff2 + tr1 + tr2 - 2*trc
	if math.IsNaN(fid) || math.IsInf(fid, 0) {
		return 0, "", fmt.Errorf("metric: fid: dim %d: result is %v (|mu1−mu2|² = %g, tr sigma1 = %g, tr sigma2 = %g, tr sqrt = %g)", d, fid, diff2, tr1, tr2, trc)
	}
	return fid, strings.Join(warns, "; "), nil
}

// addDiag returns a copy of the n×n a with eps added to its diagonal.
func addDiag(a []float64, n int, eps float64) []float64 {
	b := append([]float64(nil), a...)
	for i := 0; i < n; i++ {
		b[i*n+i] += eps
	}
	return b
}

// errNonFinite reports an overflow inside the computation of the root.
var errNonFinite = errors.New("non-finite value in the square root of sigma1·sigma2")

// traceSqrtProduct returns Re tr sqrtm(a·b) and the largest |Im sqrt(λ)| over
// the eigenvalues λ of a·b, for symmetric n×n a and b (only their lower
// triangles are read when they are positive semi-definite). See
// FrechetDistance for the method.
func traceSqrtProduct(a, b []float64, n int) (tr, im float64, err error) {
	fa, err := factorPSD(a, n)
	if err != nil {
		return 0, 0, fmt.Errorf("sigma1: %w", err)
	}
	fb, err := factorPSD(b, n)
	if err != nil {
		return 0, 0, fmt.Errorf("sigma2: %w", err)
	}
	switch psdA, psdB := fa.psd(), fb.psd(); {
	case psdA && psdB:
		tr, err = nuclearNormProduct(fa, fb, n)
		return tr, 0, err
	case psdB:
		return congruentEigen(a, fb, n)
	case psdA:
		return congruentEigen(b, fa, n)
	default:
		return productEigen(a, b, n)
	}
}

// psdFactor is a pivoted Cholesky factor of a symmetric n×n matrix A:
// A ≈ F Fᵀ, F of size n×r.
type psdFactor struct {
	f       []float64 // (n, r) row-major, rows in A's index order
	r       int       // numerical rank
	neg     float64   // evidence of indefiniteness: −λmin of the worst 2×2 principal block of the residual, ≥ 0
	maxDiag float64   // max_i A_ii, the scale neg is judged against
}

// psd says whether the factored matrix is positive semi-definite up to rounding.
func (p psdFactor) psd() bool { return p.neg <= psdTol*p.maxDiag }

// factorPSD factors the symmetric n×n a (lower triangle read) by Cholesky
// with complete pivoting, stopping at rank r when every remaining pivot is
// ≤ n·ε·max_i a_ii (LAPACK's default). For a PSD matrix the residual
// S = A − F Fᵀ is then PSD with a diagonal ≤ that tolerance, so each of its
// entries is at most that size too, and dropping it changes the eigenvalues
// by rounding only. If A is indefinite the negative part of its spectrum is
// in S (Sylvester's inertia); neg measures it.
func factorPSD(a []float64, n int) (psdFactor, error) {
	p := psdFactor{}
	for i := 0; i < n; i++ {
		p.maxDiag = math.Max(p.maxDiag, a[i*n+i])
	}
	l := append([]float64(nil), a...)
	piv := make([]int, n)
	work := make([]float64, 2*n)
	_, r, _ := lapack64.Pstrf(blas64.Symmetric{Uplo: blas.Lower, N: n, Stride: n, Data: l}, piv, -1, work)
	p.r = r
	// Pᵀ A P = L Lᵀ with P[piv[k], k] = 1, so A = (P L)(P L)ᵀ: row k of L is
	// row piv[k] of F.
	p.f = make([]float64, n*r)
	for k := 0; k < n; k++ {
		c := min(k+1, r)
		copy(p.f[piv[k]*r:piv[k]*r+c], l[k*n:k*n+c])
	}
	for _, v := range p.f {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return p, fmt.Errorf("pivoted cholesky: %w", errNonFinite)
		}
	}
	if m := n - r; m > 0 {
		// S = A[piv[r:], piv[r:]] − L21 L21ᵀ, L21 = L[r:, :r].
		s := make([]float64, m*m)
		for i := 0; i < m; i++ {
			for j := 0; j <= i; j++ {
				s[i*m+j] = a[max(piv[r+i], piv[r+j])*n+min(piv[r+i], piv[r+j])]
			}
		}
		if r > 0 {
			blas64.Syrk(blas.NoTrans, -1, blas64.General{Rows: m, Cols: r, Stride: n, Data: l[r*n:]},
				1, blas64.Symmetric{Uplo: blas.Lower, N: m, Stride: m, Data: s})
		}
		p.neg = worstMinor(s, m)
	}
	return p, nil
}

// worstMinor returns max(0, −λmin) over the 1×1 and 2×2 principal blocks of
// the symmetric m×m s (lower triangle read). By interlacing, s has an
// eigenvalue ≤ −worstMinor(s).
func worstMinor(s []float64, m int) float64 {
	neg := 0.0
	for i := 0; i < m; i++ {
		a := s[i*m+i]
		neg = math.Max(neg, -a)
		for j := 0; j < i; j++ {
			b, c := s[j*m+j], s[i*m+j]
			lmin := (a+b)/2 - math.Hypot((a-b)/2, c)
			neg = math.Max(neg, -lmin)
		}
	}
	return neg
}

// nuclearNormProduct returns Σ σ_i(Faᵀ Fb) = tr sqrtm(A B) for A = Fa Faᵀ and
// B = Fb Fbᵀ.
func nuclearNormProduct(fa, fb psdFactor, n int) (float64, error) {
	if fa.r == 0 || fb.r == 0 {
		return 0, nil
	}
	// K with at least as many rows as columns: Dgesvd's direct path.
	x, y := fa, fb
	if x.r < y.r {
		x, y = y, x
	}
	k := blas64.General{Rows: x.r, Cols: y.r, Stride: y.r, Data: make([]float64, x.r*y.r)}
	blas64.Gemm(blas.Trans, blas.NoTrans, 1,
		blas64.General{Rows: n, Cols: x.r, Stride: x.r, Data: x.f},
		blas64.General{Rows: n, Cols: y.r, Stride: y.r, Data: y.f}, 0, k)
	if !allFinite(k.Data) {
		return 0, fmt.Errorf("F1ᵀF2: %w", errNonFinite)
	}
	sv := make([]float64, y.r)
	none := blas64.General{Stride: 1}
	query := make([]float64, 1)
	lapack64.Gesvd(lapack.SVDNone, lapack.SVDNone, k, none, none, sv, query, -1)
	work := make([]float64, int(query[0]))
	if !lapack64.Gesvd(lapack.SVDNone, lapack.SVDNone, k, none, none, sv, work, len(work)) {
		return 0, errors.New("singular values of F1ᵀF2 did not converge")
	}
	tr := 0.0
	for _, s := range sv {
		tr += s
	}
	if math.IsNaN(tr) || math.IsInf(tr, 0) {
		return 0, errNonFinite
	}
	return tr, nil
}

// congruentEigen returns Re tr sqrtm(A B) and the largest |Im| of the roots of
// its eigenvalues, for a symmetric A and B = F Fᵀ: A B has the eigenvalues of
// the symmetric Fᵀ A F and n − r zeros.
func congruentEigen(a []float64, fb psdFactor, n int) (tr, im float64, err error) {
	r := fb.r
	if r == 0 {
		return 0, 0, nil
	}
	f := blas64.General{Rows: n, Cols: r, Stride: r, Data: fb.f}
	w := blas64.General{Rows: n, Cols: r, Stride: r, Data: make([]float64, n*r)}
	blas64.Gemm(blas.NoTrans, blas.NoTrans, 1, blas64.General{Rows: n, Cols: n, Stride: n, Data: a}, f, 0, w)
	m := blas64.General{Rows: r, Cols: r, Stride: r, Data: make([]float64, r*r)}
	blas64.Gemm(blas.Trans, blas.NoTrans, 1, f, w, 0, m)
	if !allFinite(m.Data) {
		return 0, 0, fmt.Errorf("FᵀAF: %w", errNonFinite)
	}
	ev := make([]float64, r)
	sym := blas64.Symmetric{Uplo: blas.Lower, N: r, Stride: r, Data: m.Data}
	query := make([]float64, 1)
	lapack64.Syev(lapack.EVNone, sym, ev, query, -1)
	work := make([]float64, int(query[0]))
	if !lapack64.Syev(lapack.EVNone, sym, ev, work, len(work)) {
		return 0, 0, errors.New("eigenvalues of FᵀAF did not converge")
	}
	return sqrtSum(ev, nil)
}

// productEigen returns Re tr sqrtm(A B) and the largest |Im| of the roots of
// its eigenvalues, from the eigenvalues of the non-symmetric product.
func productEigen(a, b []float64, n int) (tr, im float64, err error) {
	p := make([]float64, n*n)
	blas64.Gemm(blas.NoTrans, blas.NoTrans, 1,
		blas64.General{Rows: n, Cols: n, Stride: n, Data: a},
		blas64.General{Rows: n, Cols: n, Stride: n, Data: b}, 0,
		blas64.General{Rows: n, Cols: n, Stride: n, Data: p})
	if !allFinite(p) {
		return 0, 0, fmt.Errorf("sigma1·sigma2: %w", errNonFinite)
	}
	wr, wi := make([]float64, n), make([]float64, n)
	none := blas64.General{Stride: 1}
	pm := blas64.General{Rows: n, Cols: n, Stride: n, Data: p}
	query := make([]float64, 1)
	lapack64.Geev(lapack.LeftEVNone, lapack.RightEVNone, pm, wr, wi, none, none, query, -1)
	work := make([]float64, int(query[0]))
	if first := lapack64.Geev(lapack.LeftEVNone, lapack.RightEVNone, pm, wr, wi, none, none, work, len(work)); first != 0 {
		return 0, 0, fmt.Errorf("eigenvalues of sigma1·sigma2 did not converge (%d of %d left)", first, n)
	}
	return sqrtSum(wr, wi)
}

// sqrtSum returns Σ Re sqrt(λ_i) and max |Im sqrt(λ_i)| (principal roots) for
// λ_i = wr[i] + i·wi[i]; wi may be nil (real eigenvalues).
func sqrtSum(wr, wi []float64) (tr, im float64, err error) {
	for i, x := range wr {
		y := 0.0
		if wi != nil {
			y = wi[i]
		}
		s := cmplx.Sqrt(complex(x, y))
		tr += real(s)
		im = math.Max(im, math.Abs(imag(s)))
	}
	if math.IsNaN(tr) || math.IsInf(tr, 0) {
		return 0, 0, errNonFinite
	}
	return tr, im, nil
}

func allFinite(x []float64) bool {
	for _, v := range x {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return false
		}
	}
	return true
}
