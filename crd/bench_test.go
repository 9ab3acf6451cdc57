package crd

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// The recipe size: one 3×256×256 image, P = 32 (docs/crd.md §1.4's cost table).
var benchShape = [4]int{1, 3, 256, 256}

// BenchmarkCycleGAN times one CycleGAN CRD call at 256×256: both sides' relations of rows,
// columns and patches, forward and backward, with a reused Workspace (the training step's
// case) and with fresh scratch (the package-level function).
func BenchmarkCycleGAN(b *testing.B) {
	r := rand.New(rand.NewPCG(30, 0))
	size := 3 * 256 * 256
	s, t := randSet(r, 1, size), randSet(r, 1, size)
	grad := make([]float32, size)
	b.Run("workspace", func(b *testing.B) {
		var w Workspace
		w.CycleGAN(s, t, benchShape, 32, grad, 1)
		b.ReportAllocs()
		for b.Loop() {
			w.CycleGAN(s, t, benchShape, 32, grad, 1)
		}
	})
	b.Run("fresh", func(b *testing.B) {
		for b.Loop() {
			CycleGAN(s, t, benchShape, 32, grad, 1)
		}
	})
	b.Run("forward", func(b *testing.B) {
		var w Workspace
		for b.Loop() {
			w.CycleGAN(s, t, benchShape, 32, nil, 0)
		}
	})
}

// BenchmarkRKD times one relation, forward and backward, per slice set of a 3×256×256 image.
func BenchmarkRKD(b *testing.B) {
	for _, c := range []struct {
		name string
		n, d int
	}{
		{"rows", 256, 768},
		{"columns", 256, 768},
		{"patches", 64, 3072},
		{"official_patch", 3, 1024},
	} {
		b.Run(fmt.Sprintf("%s_n%d_d%d", c.name, c.n, c.d), func(b *testing.B) {
			r := rand.New(rand.NewPCG(31, 0))
			x, y := randSet(r, c.n, c.d), randSet(r, c.n, c.d)
			grad := make([]float32, c.n*c.d)
			var w Workspace
			w.RKD(x, y, c.n, c.d, grad, 1)
			b.ReportAllocs()
			for b.Loop() {
				w.RKD(x, y, c.n, c.d, grad, 1)
			}
		})
	}
}

// BenchmarkKernels times the three kernels of one rows relation at 256×768 separately.
func BenchmarkKernels(b *testing.B) {
	r := rand.New(rand.NewPCG(32, 0))
	const n, d = 256, 768
	x, y := randSet(r, n, d), randSet(r, n, d)
	var w Workspace
	w.RKD(x, y, n, d, make([]float32, n*d), 1)
	b.Run("sqDists", func(b *testing.B) {
		for b.Loop() {
			sqDists(w.ds, w.x64, n, d)
		}
	})
	b.Run("mulAdd", func(b *testing.B) {
		for b.Loop() {
			mulAdd(w.g64, w.m, w.xc, n, d)
		}
	})
	b.Run("angles", func(b *testing.B) {
		v := &w.rows[0]
		p := w.part[:n*n]
		for b.Loop() {
			for i := range n {
				fillVertex(v, i, n, w.ds, w.dt)
				angleVertex(i, n, w.ds, w.dt, v, w.gam[i*n:(i+1)*n], w.eta[i*n:(i+1)*n], p)
			}
		}
	})
}
