package nn

import (
	"fmt"
	"slices"

	"github.com/crdgo/crdgo/crd/tensor"
)

// Sum adds x over the given axes (negative axes count from the end; none means
// all). With keepDims the reduced axes stay as size 1; otherwise they are
// removed (a reduction over everything gives shape (1)).
func Sum(tp *Tape, x *Var, keepDims bool, axes ...int) *Var {
	return reduce(tp, x, 1, keepDims, axes)
}

// Mean averages x over the given axes (all when none are given).
func Mean(tp *Tape, x *Var, keepDims bool, axes ...int) *Var {
	s := x.Value.Shape
	n := 1
	for _, a := range normAxes(s, axes) {
		n *= s[a]
	}
	return reduce(tp, x, 1/float32(n), keepDims, axes)
}

func normAxes(s tensor.Shape, axes []int) []int {
	if len(axes) == 0 {
		all := make([]int, len(s))
		for i := range all {
			all[i] = i
		}
		return all
	}
	out := make([]int, 0, len(axes))
	for _, a := range axes {
		if a < 0 {
			a += len(s)
		}
		if a < 0 || a >= len(s) || slices.Contains(out, a) {
			panic(fmt.Sprintf("nn: reduce: bad axes %v for shape %v", axes, s))
		}
		out = append(out, a)
	}
	return out
}

func reduce(tp *Tape, x *Var, alpha float32, keepDims bool, axes []int) *Var {
	s := x.Value.Shape
	ax := normAxes(s, axes)
	kept := s.Clone()
	for _, a := range ax {
		kept[a] = 1
	}
	y := tp.New(kept...)
	tp.be.ReduceSum(y, x.Value, alpha, false)
	if !keepDims {
		var out tensor.Shape
		for i, d := range s {
			if !slices.Contains(ax, i) {
				out = append(out, d)
			}
		}
		if len(out) == 0 {
			out = tensor.Shape{1}
		}
		y.Shape = append(y.Shape[:0], out...)
	}
	return tp.record(y, func(dy *tensor.Tensor) {
		dx := tp.grad(x)
		tp.be.BroadcastAdd(dx, dy.Reshaped(kept...), alpha)
	}, x)
}
