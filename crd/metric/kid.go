package metric

import (
	"fmt"
	"math"
	"math/rand/v2"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas64"
)

// KIDOptions configure KID. Start from DefaultKIDOptions.
type KIDOptions struct {
	Subsets    int    // number of random subsets the MMD² is averaged over, ≥ 1
	SubsetSize int    // images per subset from each set, ≥ 2; capped at min(nReal, nFake)
	Seed       uint64 // seed of the subset sampler (PCG)
}

// DefaultKIDOptions returns torch-fidelity's defaults: 100 subsets of 1000
// images, seed 2020 (torch-fidelity's rng_seed; the sampler differs, so the
// subsets are not numpy's).
func DefaultKIDOptions() KIDOptions {
	return KIDOptions{Subsets: 100, SubsetSize: 1000, Seed: 2020}
}

// maxKernelEntries bounds the kernel matrices KID precomputes for all pairs of
// images (64 MiB of float64): beyond it, each subset's kernels are computed on
// their own.
const maxKernelEntries = 1 << 23

// KID returns the kernel Inception distance between two sets of activations,
// actsReal (nReal, dim) and actsFake (nFake, dim), row-major: the mean and the
// standard deviation over opt.Subsets random subsets of the unbiased estimate
// of MMD² with the polynomial kernel k(x, y) = (xᵀy/dim + 1)³.
//
// This is torch-fidelity's kid_features_to_metric (itself the KID paper's
// MMD-GAN compute_scores.py): per subset, m images drawn without replacement
// from each set, then
//
//	MMD² = (Σ_{i≠j} k(x_i,x_j) + Σ_{i≠j} k(y_i,y_j)) / (m(m−1)) − 2 Σ_{i,j} k(x_i,y_j) / m²
//
// and std is the population standard deviation (np.std, ddof 0). One
// difference: torch-fidelity refuses a subset size larger than either set;
// here m = min(opt.SubsetSize, nReal, nFake). When m equals both set sizes
// every subset is the whole of both sets (the estimate does not depend on
// order), so it is computed once and std is 0; with 119 test images this is the
// usual case.
//
// Work: when the kernel matrices over all pairs fit in 64 MiB and cost less
// than the subsets' own, they are computed once (three GEMMs) and each subset
// only sums entries; otherwise each subset costs three m×m×dim GEMMs.
func KID(actsReal []float64, nReal int, actsFake []float64, nFake int, dim int, opt KIDOptions) (mean, std float64, err error) {
	if err := checkActs("kid: real", actsReal, nReal, dim); err != nil {
		return 0, 0, err
	}
	if err := checkActs("kid: fake", actsFake, nFake, dim); err != nil {
		return 0, 0, err
	}
	subR, subF, err := kidSubsets(nReal, nFake, opt)
	if err != nil {
		return 0, 0, err
	}
	mmds := kidMMDs(actsReal, nReal, actsFake, nFake, dim, subR, subF, kidPrecompute(nReal, nFake, len(subR), len(subR[0])))
	for _, v := range mmds {
		mean += v
	}
	mean /= float64(len(mmds))
	for _, v := range mmds {
		std += (v - mean) * (v - mean)
	}
	std = math.Sqrt(std / float64(len(mmds)))
	return mean, std, nil
}

// checkActs validates an (n, dim) activation matrix.
func checkActs(name string, acts []float64, n, dim int) error {
	switch {
	case dim < 1:
		return fmt.Errorf("metric: %s: feature dimension must be ≥ 1, got %d", name, dim)
	case n < 1 || len(acts)/dim != n || len(acts)%dim != 0:
		return fmt.Errorf("metric: %s: %d activations are not %d images × %d features", name, len(acts), n, dim)
	}
	for k, v := range acts {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return fmt.Errorf("metric: %s: image %d feature %d is %v", name, k/dim, k%dim, v)
		}
	}
	return nil
}

// kidSubsets draws the subsets KID averages over: subR[s] and subF[s] are the
// image indices of subset s, m of each, without replacement. When m equals
// both set sizes the one subset {all, all} is returned.
func kidSubsets(nReal, nFake int, opt KIDOptions) (subR, subF [][]int, err error) {
	switch {
	case opt.Subsets < 1:
		return nil, nil, fmt.Errorf("metric: kid: subsets must be ≥ 1, got %d", opt.Subsets)
	case opt.SubsetSize < 2:
		return nil, nil, fmt.Errorf("metric: kid: subset size must be ≥ 2, got %d", opt.SubsetSize)
	}
	m := min(opt.SubsetSize, nReal, nFake)
	if m < 2 {
		return nil, nil, fmt.Errorf("metric: kid: need at least 2 images in each set, got %d real and %d fake", nReal, nFake)
	}
	if m == nReal && m == nFake {
		return [][]int{iota(m)}, [][]int{iota(m)}, nil
	}
	rng := rand.New(rand.NewPCG(opt.Seed, 0))
	permR, permF := iota(nReal), iota(nFake)
	for s := 0; s < opt.Subsets; s++ {
		subR = append(subR, sample(rng, permR, m))
		subF = append(subF, sample(rng, permF, m))
	}
	return subR, subF, nil
}

func iota(n int) []int {
	p := make([]int, n)
	for i := range p {
		p[i] = i
	}
	return p
}

// sample returns m distinct entries of perm, uniformly: a partial
// Fisher–Yates shuffle of perm in place (any starting order of perm will do).
func sample(rng *rand.Rand, perm []int, m int) []int {
	for i := 0; i < m; i++ {
		j := i + rng.IntN(len(perm)-i)
		perm[i], perm[j] = perm[j], perm[i]
	}
	return append([]int(nil), perm[:m]...)
}

// kidPrecompute says whether the kernels over all pairs are both small enough
// and cheaper than the subsets' own kernels.
func kidPrecompute(nReal, nFake, subsets, m int) bool {
	all := float64(nReal)*float64(nReal) + float64(nFake)*float64(nFake) + float64(nReal)*float64(nFake)
	return all <= maxKernelEntries && all <= 3*float64(subsets)*float64(m)*float64(m)
}

// kidMMDs returns the unbiased MMD² of every subset (subR[s], subF[s]).
// precompute selects the strategy (kernels over all pairs once, or per
// subset); both compute the same sums.
func kidMMDs(x []float64, nx int, y []float64, ny int, dim int, subR, subF [][]int, precompute bool) []float64 {
	mmds := make([]float64, len(subR))
	if precompute {
		kxx := polyKernel(x, nx, x, nx, dim)
		kyy := polyKernel(y, ny, y, ny, dim)
		kxy := polyKernel(x, nx, y, ny, dim)
		for s := range subR {
			mmds[s] = mmd2Unbiased(kxx, nx, kyy, ny, kxy, ny, subR[s], subF[s])
		}
		return mmds
	}
	m := len(subR[0])
	xs, ys := make([]float64, m*dim), make([]float64, m*dim)
	local := iota(m)
	for s := range subR {
		gather(xs, x, subR[s], dim)
		gather(ys, y, subF[s], dim)
		kxx := polyKernel(xs, m, xs, m, dim)
		kyy := polyKernel(ys, m, ys, m, dim)
		kxy := polyKernel(xs, m, ys, m, dim)
		mmds[s] = mmd2Unbiased(kxx, m, kyy, m, kxy, m, local, local)
	}
	return mmds
}

// gather copies rows idx of the (·, dim) src into dst.
func gather(dst, src []float64, idx []int, dim int) {
	for i, k := range idx {
		copy(dst[i*dim:(i+1)*dim], src[k*dim:(k+1)*dim])
	}
}

// polyKernel returns the (na, nb) matrix (a bᵀ/dim + 1)³ for a (na, dim) and
// b (nb, dim).
func polyKernel(a []float64, na int, b []float64, nb int, dim int) []float64 {
	k := make([]float64, na*nb)
	blas64.Gemm(blas.NoTrans, blas.Trans, 1/float64(dim),
		blas64.General{Rows: na, Cols: dim, Stride: dim, Data: a},
		blas64.General{Rows: nb, Cols: dim, Stride: dim, Data: b}, 0,
		blas64.General{Rows: na, Cols: nb, Stride: nb, Data: k})
	for i, g := range k {
		v := g + 1
		k[i] = v * v * v
	}
	return k
}

// mmd2Unbiased is torch-fidelity's mmd2(..., mmd_est="unbiased") over the
// subset ix of the rows/columns of kxx (ldx wide), iy of kyy (ldy wide), and
// rows ix × columns iy of kxy (ldxy wide).
func mmd2Unbiased(kxx []float64, ldx int, kyy []float64, ldy int, kxy []float64, ldxy int, ix, iy []int) float64 {
	m := float64(len(ix))
	offDiag := func(k []float64, ld int, idx []int) float64 {
		sum := 0.0
		for a, i := range idx {
			row := k[i*ld:]
			for b, j := range idx {
				if a != b {
					sum += row[j]
				}
			}
		}
		return sum
	}
	sxx := offDiag(kxx, ldx, ix)
	syy := offDiag(kyy, ldy, iy)
	sxy := 0.0
	for _, i := range ix {
		row := kxy[i*ldxy:]
		for _, j := range iy {
			sxy += row[j]
		}
	}
	return (sxx+syy)/(m*(m-1)) - 2*sxy/(m*m)
}
