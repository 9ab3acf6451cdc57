package metric

import (
	"fmt"
	"math"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas64"
)

// Stats are the Gaussian statistics of a set of Inception activations, as
// pytorch-fid and GAN Compression store them in their .npz files.
type Stats struct {
	Mu    []float64 // (Dim) mean activation
	Sigma []float64 // (Dim, Dim) covariance, row-major, symmetric
	Dim   int       // feature dimension (2048 for Inception pool3)
	N     int       // number of images the statistics came from; 0 when unknown (read from a file)
}

// ComputeStats returns the mean and the unbiased covariance of n activation
// rows of dim features each: acts is (n, dim) row-major. It computes what
// `np.mean(acts, axis=0)` and `np.cov(acts, rowvar=False)` compute (covariance
// divided by n − 1), in float64. The covariance is symmetric bit for bit.
//
// n must be at least 2 (np.cov divides by n − 1); a non-finite activation is an
// error naming the image and the feature.
func ComputeStats(acts []float64, n, dim int) (Stats, error) {
	switch {
	case n < 2:
		return Stats{}, fmt.Errorf("metric: stats: need at least 2 images for an unbiased covariance, got %d", n)
	case dim < 1:
		return Stats{}, fmt.Errorf("metric: stats: feature dimension must be ≥ 1, got %d", dim)
	case len(acts)/dim != n || len(acts)%dim != 0:
		return Stats{}, fmt.Errorf("metric: stats: %d activations are not %d images × %d features", len(acts), n, dim)
	}
	mu := make([]float64, dim)
	for i := 0; i < n; i++ {
		row := acts[i*dim : (i+1)*dim]
		for j, v := range row {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return Stats{}, fmt.Errorf("metric: stats: image %d feature %d is %v", i, j, v)
			}
			mu[j] += v
		}
	}
	for j := range mu {
		mu[j] /= float64(n)
	}
	// Centre first, then Xᵀ X: what np.cov does, and the numerically sound
	// order (no E[x²] − E[x]² cancellation).
	xc := make([]float64, n*dim)
	for i := 0; i < n; i++ {
		row, out := acts[i*dim:(i+1)*dim], xc[i*dim:(i+1)*dim]
		for j, v := range row {
			out[j] = v - mu[j]
		}
	}
	sigma := make([]float64, dim*dim)
	blas64.Syrk(blas.Trans, 1/float64(n-1),
		blas64.General{Rows: n, Cols: dim, Stride: dim, Data: xc}, 0,
		blas64.Symmetric{Uplo: blas.Lower, N: dim, Stride: dim, Data: sigma})
	mirrorLower(sigma, dim)
	return Stats{Mu: mu, Sigma: sigma, Dim: dim, N: n}, nil
}

// StatsFromArrays validates and copies statistics read from a file: mu has
// dim entries, sigma dim×dim (row-major), all finite, the diagonal ≥ 0 and sigma
// symmetric to within 1e-8 of sqrt(σ_ii·σ_jj) per entry (np.cov's BLAS product
// is symmetric only up to rounding). The copy of sigma is made exactly
// symmetric by averaging σ_ij and σ_ji. N of the result is 0 (unknown).
func StatsFromArrays(mu []float64, sigma []float64, dim int) (Stats, error) {
	s := Stats{Mu: mu, Sigma: sigma, Dim: dim}
	if err := s.validate("stats"); err != nil {
		return Stats{}, err
	}
	out := Stats{
		Mu:    append([]float64(nil), mu...),
		Sigma: append([]float64(nil), sigma...),
		Dim:   dim,
	}
	for i := 0; i < dim; i++ {
		for j := 0; j < i; j++ {
			v := (out.Sigma[i*dim+j] + out.Sigma[j*dim+i]) / 2
			out.Sigma[i*dim+j], out.Sigma[j*dim+i] = v, v
		}
	}
	return out, nil
}

// symTol is how far σ_ij and σ_ji may differ, relative to sqrt(σ_ii·σ_jj),
// for sigma to count as symmetric.
const symTol = 1e-8

// validate checks the shapes, finiteness, non-negative diagonal and symmetry
// of s; name says which statistics in the error.
func (s Stats) validate(name string) error {
	d := s.Dim
	switch {
	case d < 1:
		return fmt.Errorf("metric: %s: dimension must be ≥ 1, got %d", name, d)
	case len(s.Mu) != d:
		return fmt.Errorf("metric: %s: mu has %d entries; want dim %d", name, len(s.Mu), d)
	case len(s.Sigma)/d != d || len(s.Sigma)%d != 0:
		return fmt.Errorf("metric: %s: sigma has %d entries; want %d×%d", name, len(s.Sigma), d, d)
	}
	for i, v := range s.Mu {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return fmt.Errorf("metric: %s: mu[%d] is %v", name, i, v)
		}
	}
	for k, v := range s.Sigma {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return fmt.Errorf("metric: %s: sigma[%d,%d] is %v", name, k/d, k%d, v)
		}
	}
	for i := 0; i < d; i++ {
		if v := s.Sigma[i*d+i]; v < 0 {
			return fmt.Errorf("metric: %s: sigma[%d,%d] = %g < 0: not a covariance", name, i, i, v)
		}
	}
	for i := 0; i < d; i++ {
		for j := 0; j < i; j++ {
			a, b := s.Sigma[i*d+j], s.Sigma[j*d+i]
			scale := math.Sqrt(s.Sigma[i*d+i] * s.Sigma[j*d+j])
			if math.Abs(a-b) > symTol*math.Max(scale, math.Max(math.Abs(a), math.Abs(b))) {
				return fmt.Errorf("metric: %s: sigma is not symmetric: [%d,%d] = %g, [%d,%d] = %g", name, i, j, a, j, i, b)
			}
		}
	}
	return nil
}

// mirrorLower copies the strict lower triangle of the n×n row-major a onto its
// upper triangle.
func mirrorLower(a []float64, n int) {
	for i := 0; i < n; i++ {
		for j := 0; j < i; j++ {
			a[j*n+i] = a[i*n+j]
		}
	}
}
