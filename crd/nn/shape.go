package nn

import (
	"fmt"

	"github.com/crdgo/crdgo/crd/tensor"
)

// Reshape views x with a new shape of the same number of elements (no copy).
func Reshape(tp *Tape, x *Var, shape ...int) *Var {
	y := x.Value.Reshaped(shape...)
	return tp.record(y, func(dy *tensor.Tensor) {
		tp.be.BroadcastAdd(tp.grad(x), dy.Reshaped(x.Value.Shape...), 1)
	}, x)
}

// Permute reorders the dimensions of x: y.Shape[i] = x.Shape[perm[i]].
func Permute(tp *Tape, x *Var, perm ...int) *Var {
	s := x.Value.Shape
	ys := make(tensor.Shape, len(perm))
	inv := make([]int, len(perm))
	for i, p := range perm {
		ys[i] = s[p]
		inv[p] = i
	}
	y := tp.New(ys...)
	tp.be.Permute(y, x.Value, perm, false)
	return tp.record(y, func(dy *tensor.Tensor) {
		tp.be.Permute(tp.grad(x), dy, inv, true)
	}, x)
}

// Transpose swaps the last two dimensions.
func Transpose(tp *Tape, x *Var) *Var {
	r := len(x.Value.Shape)
	perm := make([]int, r)
	for i := range perm {
		perm[i] = i
	}
	perm[r-2], perm[r-1] = r-1, r-2
	return Permute(tp, x, perm...)
}

// Slice takes [start, start+n) of x along axis.
func Slice(tp *Tape, x *Var, axis, start, n int) *Var {
	s := x.Value.Shape.Clone()
	if axis < 0 {
		axis += len(s)
	}
	s[axis] = n
	y := tp.New(s...)
	tp.be.CopyAxis(y, x.Value, axis, 0, start, n, false)
	return tp.record(y, func(dy *tensor.Tensor) {
		tp.be.CopyAxis(tp.grad(x), dy, axis, start, 0, n, true)
	}, x)
}

// Concat joins xs along axis (channels for NCHW: axis 1).
func Concat(tp *Tape, axis int, xs ...*Var) *Var {
	s := xs[0].Value.Shape.Clone()
	if axis < 0 {
		axis += len(s)
	}
	total := 0
	for _, x := range xs {
		xsh := x.Value.Shape
		if len(xsh) != len(s) {
			panic(fmt.Sprintf("nn: Concat: shapes %v and %v", s, xsh))
		}
		total += xsh[axis]
	}
	s[axis] = total
	y := tp.New(s...)
	off := 0
	for _, x := range xs {
		n := x.Value.Shape[axis]
		tp.be.CopyAxis(y, x.Value, axis, off, 0, n, false)
		off += n
	}
	return tp.record(y, func(dy *tensor.Tensor) {
		off := 0
		for _, x := range xs {
			n := x.Value.Shape[axis]
			if g := tp.grad(x); g != nil {
				tp.be.CopyAxis(g, dy, axis, 0, off, n, true)
			}
			off += n
		}
	}, xs...)
}
