package tensortest

import (
	"fmt"
	"math"
	"math/rand/v2"
)

// Array is a float64 array in row-major order with the shape conventions of
// tensor.Tensor ((N,C,H,W) for images): the references' argument and result
// type. len(Data) == Numel(Shape). An optional argument (a bias, γ, β) is
// absent when its Data is nil: the zero Array.
type Array struct {
	Shape []int
	Data  []float64
}

// Zeros returns an Array of the given shape filled with zeros.
func Zeros(shape ...int) Array {
	return Array{Shape: append([]int(nil), shape...), Data: make([]float64, numel(shape))}
}

// FromFloat32 returns an Array with the given shape and data widened to
// float64, e.g. a tensor downloaded from a backend.
func FromFloat32(shape []int, data []float32) Array {
	if len(data) != numel(shape) {
		panic(fmt.Sprintf("tensortest: FromFloat32: %d elements for shape %v", len(data), shape))
	}
	a := Zeros(shape...)
	for i, v := range data {
		a.Data[i] = float64(v)
	}
	return a
}

// Float32 returns a's elements rounded to float32.
func (a Array) Float32() []float32 {
	out := make([]float32, len(a.Data))
	for i, v := range a.Data {
		out[i] = float32(v)
	}
	return out
}

// Numel is the number of elements of a's shape.
func (a Array) Numel() int { return numel(a.Shape) }

// Clone returns a deep copy of a.
func (a Array) Clone() Array {
	if a.Data == nil {
		return Array{Shape: append([]int(nil), a.Shape...)}
	}
	return Array{Shape: append([]int(nil), a.Shape...), Data: append([]float64(nil), a.Data...)}
}

// absent reports an omitted optional argument.
func (a Array) absent() bool { return a.Data == nil }

func numel(shape []int) int {
	n := 1
	for _, d := range shape {
		n *= d
	}
	return n
}

// strides are the row-major element strides of shape.
func strides(shape []int) []int {
	st := make([]int, len(shape))
	acc := 1
	for i := len(shape) - 1; i >= 0; i-- {
		st[i] = acc
		acc *= shape[i]
	}
	return st
}

// unravel writes the coordinates of flat index i in shape into idx.
func unravel(i int, shape, idx []int) {
	for d := len(shape) - 1; d >= 0; d-- {
		idx[d] = i % shape[d]
		i /= shape[d]
	}
}

func sameShape(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func must4D(op, name string, a Array) (int, int, int, int) {
	if len(a.Shape) != 4 || len(a.Data) != numel(a.Shape) {
		panic(fmt.Sprintf("tensortest: %s: %s has shape %v with %d elements, want 4-D", op, name, a.Shape, len(a.Data)))
	}
	return a.Shape[0], a.Shape[1], a.Shape[2], a.Shape[3]
}

func mustVec(op, name string, a Array, n int) {
	if a.absent() {
		return
	}
	if len(a.Shape) != 1 || a.Shape[0] != n || len(a.Data) != n {
		panic(fmt.Sprintf("tensortest: %s: %s has shape %v, want (%d)", op, name, a.Shape, n))
	}
}

// vecAt returns a[i], or def when a is absent.
func vecAt(a Array, i int, def float64) float64 {
	if a.absent() {
		return def
	}
	return a.Data[i]
}

// Generators of test inputs. Every value is rounded to float32 first, so the
// references see exactly the numbers the backend computes with.

// genUniform draws n values uniformly from [lo, hi).
func genUniform(lo, hi float64) func(r *rand.Rand, n int) []float64 {
	return func(r *rand.Rand, n int) []float64 {
		v := make([]float64, n)
		for i := range v {
			v[i] = f32(lo + (hi-lo)*r.Float64())
		}
		return v
	}
}

// genAway draws from [−1, 1) but keeps every value at least margin away from
// each kink (finite differences are only valid where the function is smooth).
func genAway(margin float64, kinks ...float64) func(r *rand.Rand, n int) []float64 {
	return func(r *rand.Rand, n int) []float64 {
		v := make([]float64, n)
		near := func(x float64) bool {
			for _, k := range kinks {
				if math.Abs(x-k) < margin {
					return true
				}
			}
			return false
		}
		for i := range v {
			x := f32(2*r.Float64() - 1)
			for near(x) {
				x = f32(2*r.Float64() - 1)
			}
			v[i] = x
		}
		return v
	}
}

// genMagnitude draws values with |v| in [lo, hi) and a random sign (divisors).
func genMagnitude(lo, hi float64) func(r *rand.Rand, n int) []float64 {
	return func(r *rand.Rand, n int) []float64 {
		v := make([]float64, n)
		for i := range v {
			x := lo + (hi-lo)*r.Float64()
			if r.IntN(2) == 0 {
				x = -x
			}
			v[i] = f32(x)
		}
		return v
	}
}

// genDistinct draws a random permutation of n values evenly spread over
// [−1, 1]: no two are closer than 2/n, so max pooling has no ties and a
// perturbation of 1e-6 never changes which element is the maximum.
func genDistinct(r *rand.Rand, n int) []float64 {
	v := make([]float64, n)
	for i, p := range r.Perm(n) {
		v[i] = f32(2*(float64(p)+0.5)/float64(n) - 1)
	}
	return v
}

func f32(v float64) float64 { return float64(float32(v)) }
