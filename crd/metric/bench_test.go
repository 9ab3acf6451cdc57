package metric

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// BenchmarkFrechetDistance times FID at Inception's dimension: both
// statistics full rank (real statistics of thousands of images against each
// other), and the evaluation case of 119 generated images against full-rank
// real statistics.
func BenchmarkFrechetDistance(b *testing.B) {
	const dim = 2048
	rng := rand.New(rand.NewPCG(11, 0))
	full1 := mustStats(b, reluFeatures(rng, 2600, dim, 0), 2600, dim)
	full2 := mustStats(b, reluFeatures(rng, 2600, dim, 0.5), 2600, dim)
	few := mustStats(b, reluFeatures(rng, 119, dim, 0.5), 119, dim)
	for _, c := range []struct {
		name   string
		s1, s2 Stats
	}{
		{"dim2048/full-full", full1, full2},
		{"dim2048/full-119", full1, few},
	} {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				if _, _, err := FrechetDistance(c.s1, c.s2); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkSSIM times SSIM of one 3×256×256 pair.
func BenchmarkSSIM(b *testing.B) {
	for _, c := range []struct{ c, h, w int }{{3, 256, 256}} {
		b.Run(fmt.Sprintf("%dx%dx%d", c.c, c.h, c.w), func(b *testing.B) {
			x, y := noisyPair(rand.New(rand.NewPCG(12, 0)), c.c, c.h, c.w, 0.05)
			b.SetBytes(int64(4 * len(x) * 2))
			for b.Loop() {
				SSIM(x, y, c.c, c.h, c.w)
			}
		})
	}
}

// BenchmarkComputeStats times the statistics of 2048 images of 2048 features
// (the edges2shoes validation set).
func BenchmarkComputeStats(b *testing.B) {
	const n, dim = 2048, 2048
	acts := reluFeatures(rand.New(rand.NewPCG(13, 0)), n, dim, 0)
	for b.Loop() {
		if _, err := ComputeStats(acts, n, dim); err != nil {
			b.Fatal(err)
		}
	}
}
