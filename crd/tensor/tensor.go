// Package tensor holds crdgo's one array type — float32, row-major, contiguous,
// NCHW for images — the Backend interface that owns memory and kernels, and the
// CPU backend. Layers and models call ops in package nn, which call a Backend;
// nothing above this package touches a backend's internals.
package tensor

import (
	"fmt"
	"strings"
)

// Shape is a tensor's dimensions, outermost first: (N,C,H,W) for images.
type Shape []int

// Numel is the number of elements, the product of the dimensions (1 for a scalar).
func (s Shape) Numel() int {
	n := 1
	for _, d := range s {
		n *= d
	}
	return n
}

// Equal reports whether s and o have the same dimensions.
func (s Shape) Equal(o Shape) bool {
	if len(s) != len(o) {
		return false
	}
	for i := range s {
		if s[i] != o[i] {
			return false
		}
	}
	return true
}

// Clone returns a copy of s that does not share memory with it.
func (s Shape) Clone() Shape { return append(Shape(nil), s...) }

// Strides are the row-major element strides of s.
func (s Shape) Strides() []int {
	st := make([]int, len(s))
	acc := 1
	for i := len(s) - 1; i >= 0; i-- {
		st[i] = acc
		acc *= s[i]
	}
	return st
}

func (s Shape) String() string {
	parts := make([]string, len(s))
	for i, d := range s {
		parts[i] = fmt.Sprint(d)
	}
	return "(" + strings.Join(parts, ",") + ")"
}

// Tensor is a contiguous float32 array of a given shape. CPU tensors keep their
// elements in Data (len(Data) == Shape.Numel()); a device backend keeps them in
// device memory, referenced by Device, and leaves Data nil. Only backends and
// tests read Data directly; everything else goes through a Backend.
type Tensor struct {
	Shape  Shape
	Data   []float32
	Device any
}

// Numel is the number of elements of t.
func (t *Tensor) Numel() int { return t.Shape.Numel() }

// Dim returns dimension i of t; negative i counts from the end.
func (t *Tensor) Dim(i int) int {
	if i < 0 {
		i += len(t.Shape)
	}
	return t.Shape[i]
}

// FromSlice wraps data (not copied) as a CPU tensor of the given shape.
// It panics when len(data) does not match the shape: that is a bug in the caller.
func FromSlice(data []float32, shape ...int) *Tensor {
	s := Shape(shape).Clone()
	if len(data) != s.Numel() {
		panic(fmt.Sprintf("tensor: FromSlice: %d elements for shape %v (%d)", len(data), s, s.Numel()))
	}
	return &Tensor{Shape: s, Data: data}
}

// Reshaped returns a tensor that shares t's storage with a new shape of the same
// number of elements. It panics if the element counts differ.
func (t *Tensor) Reshaped(shape ...int) *Tensor {
	s := Shape(shape).Clone()
	if s.Numel() != t.Numel() {
		panic(fmt.Sprintf("tensor: reshape %v (%d elements) to %v (%d)", t.Shape, t.Numel(), s, s.Numel()))
	}
	return &Tensor{Shape: s, Data: t.Data, Device: t.Device}
}
