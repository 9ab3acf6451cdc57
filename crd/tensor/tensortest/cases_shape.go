package tensortest

import (
	"fmt"

	"github.com/crdgo/crdgo/crd/tensor"
)

// reduceSumCase is ReduceSum of x to shape, scaled by alpha, into a fresh y or
// (accumulate) onto y0. Its gradient is BroadcastAdd of dy, so the FD check
// holds the pair to being each other's adjoint.
func reduceSumCase(x, shape []int, alpha float32, accumulate bool) kcase {
	in := []operand{{name: "x", shape: x, grad: true}}
	if accumulate {
		in = append(in, operand{name: "y0", shape: shape})
	}
	return kcase{
		name: fmt.Sprintf("x%s_to_%s_alpha%g_acc%v", shp(x), shp(shape), alpha, accumulate),
		in:   in,
		out:  shape,
		ref: func(a []Array) Array {
			y := RefScale(float64(alpha), RefReduceSum(a[0], shape))
			if accumulate {
				y = RefBinary(tensor.BAdd, a[1], y)
			}
			return y
		},
		run: func(be tensor.Backend, y *tensor.Tensor, t []*tensor.Tensor) []*tensor.Tensor {
			if accumulate {
				be.Copy(y, t[1])
			}
			be.ReduceSum(y, t[0], alpha, accumulate)
			return nil
		},
		back: func(be tensor.Backend, g []*tensor.Tensor, dy *tensor.Tensor, _ []*tensor.Tensor, _ *tensor.Tensor, _ []*tensor.Tensor) {
			be.BroadcastAdd(g[0], dy, alpha)
		},
		// Summed in float64: one rounding, one product with alpha, one
		// addition.
		tol:     8 * u32,
		gradTol: 8 * u32,
	}
}

// broadcastAddCase is dst += alpha·src broadcast to dst's shape. Its gradients
// are dy for dst (BroadcastAdd at the same shape) and ReduceSum(dy)·alpha for
// src (accumulating).
func broadcastAddCase(dst, src []int, alpha float32) kcase {
	return kcase{
		name: fmt.Sprintf("dst%s_src%s_alpha%g", shp(dst), shp(src), alpha),
		in:   []operand{{name: "dst", shape: dst, grad: true}, {name: "src", shape: src, grad: true}},
		out:  dst,
		ref: func(a []Array) Array {
			return RefBinary(tensor.BAdd, a[0], RefScale(float64(alpha), a[1]))
		},
		run: func(be tensor.Backend, y *tensor.Tensor, t []*tensor.Tensor) []*tensor.Tensor {
			be.Copy(y, t[0])
			be.BroadcastAdd(y, t[1], alpha)
			return nil
		},
		back: func(be tensor.Backend, g []*tensor.Tensor, dy *tensor.Tensor, _ []*tensor.Tensor, _ *tensor.Tensor, _ []*tensor.Tensor) {
			if g[0] != nil {
				be.BroadcastAdd(g[0], dy, 1)
			}
			if g[1] != nil {
				be.ReduceSum(g[1], dy, alpha, true)
			}
		},
		multiGrad: true,
		tol:       8 * u32,
		gradTol:   8 * u32,
	}
}

func reduceGroups(short bool) []group {
	x := []int{2, 3, 4, 5}
	rs := []kcase{
		reduceSumCase(x, []int{1}, 1, false),             // to a scalar
		reduceSumCase(x, []int{}, 0.5, false),            // to a rank-0 scalar
		reduceSumCase(x, []int{1, 3, 1, 1}, 1, false),    // per channel
		reduceSumCase(x, []int{3, 1, 1}, -2, false),      // per channel, fewer dimensions
		reduceSumCase(x, []int{1, 3, 4, 5}, 1, false),    // over the batch only
		reduceSumCase(x, []int{2, 3, 1, 1}, 0.25, false), // per plane
		reduceSumCase(x, []int{2, 1, 4, 1}, 1, false),
		reduceSumCase(x, []int{5}, 1, false),
		reduceSumCase(x, x, 3, false), // nothing reduced
		reduceSumCase(x, []int{1, 3, 1, 1}, 0.5, true),
		reduceSumCase(x, []int{1}, 1, true),
		// Large: sums of several fixed blocks, and rows split across workers.
		reduceSumCase([]int{2, 3, 110, 110}, []int{1}, 1, false),
		reduceSumCase([]int{4, 20, 32, 16}, []int{1, 20, 1, 1}, 1, true),
	}
	if !short {
		rs = append(rs, reduceSumCase([]int{2, 3, 110, 110}, []int{1, 3, 110, 110}, 1, false))
	}
	ba := []kcase{
		broadcastAddCase(x, x, 0.5),
		broadcastAddCase(x, []int{1, 3, 1, 1}, 1),
		broadcastAddCase(x, []int{3, 1, 1}, -1),
		broadcastAddCase(x, []int{1}, 2),
		broadcastAddCase(x, []int{2, 1, 4, 5}, 1),
		broadcastAddCase(x, []int{5}, 1),
		broadcastAddCase([]int{2, 20, 32, 33}, []int{1, 20, 1, 1}, 1),
	}
	return []group{{"ReduceSum", rs}, {"BroadcastAdd", ba}}
}

// permuteCase is Permute of x by perm, into a fresh y or (accumulate) onto y0;
// its gradient is the inverse permutation of dy, accumulated.
func permuteCase(x, perm []int, accumulate bool) kcase {
	out := make([]int, len(perm))
	inv := make([]int, len(perm))
	for i, p := range perm {
		out[i] = x[p]
		inv[p] = i
	}
	in := []operand{{name: "x", shape: x, grad: true}}
	if accumulate {
		in = append(in, operand{name: "y0", shape: out})
	}
	return kcase{
		name: fmt.Sprintf("x%s_perm%v_acc%v", shp(x), perm, accumulate),
		in:   in,
		out:  out,
		ref: func(a []Array) Array {
			y := RefPermute(a[0], perm)
			if accumulate {
				y = RefBinary(tensor.BAdd, a[1], y)
			}
			return y
		},
		run: func(be tensor.Backend, y *tensor.Tensor, t []*tensor.Tensor) []*tensor.Tensor {
			if accumulate {
				be.Copy(y, t[1])
			}
			be.Permute(y, t[0], perm, accumulate)
			return nil
		},
		back: func(be tensor.Backend, g []*tensor.Tensor, dy *tensor.Tensor, _ []*tensor.Tensor, _ *tensor.Tensor, _ []*tensor.Tensor) {
			be.Permute(g[0], dy, inv, true)
		},
		tol:     2 * u32,
		gradTol: 2 * u32,
	}
}

func permuteGroup(short bool) group {
	x := []int{2, 3, 4, 5}
	cs := []kcase{
		permuteCase(x, []int{0, 2, 3, 1}, false), // NCHW → NHWC
		permuteCase(x, []int{3, 2, 1, 0}, false),
		permuteCase(x, []int{1, 0, 2, 3}, false),
		permuteCase(x, []int{0, 1, 3, 2}, true),
		permuteCase(x, []int{0, 1, 2, 3}, false),
		permuteCase([]int{63, 65}, []int{1, 0}, false),
		permuteCase([]int{3, 7, 5}, []int{2, 0, 1}, true),
		permuteCase([]int{4, 20, 33, 32}, []int{0, 2, 3, 1}, false),
	}
	if !short {
		cs = append(cs, permuteCase([]int{129, 127}, []int{1, 0}, true))
	}
	return group{"Permute", cs}
}

// copyAxisCase copies the slab [srcStart, +n) of src along axis into
// [dstStart, +n) of a copy of dst0 (adding with accumulate). The gradient of
// src is the slab of dy copied back (accumulating), as concatenation's
// backward does; dst0 gets none here.
func copyAxisCase(dst, src []int, axis, dstStart, srcStart, n int, accumulate bool) kcase {
	return kcase{
		name: fmt.Sprintf("dst%s_src%s_axis%d_[%d,+%d)_from_%d_acc%v", shp(dst), shp(src), axis, dstStart, n, srcStart, accumulate),
		in:   []operand{{name: "dst0", shape: dst}, {name: "src", shape: src, grad: true}},
		out:  dst,
		ref: func(a []Array) Array {
			slab := RefSliceAxis(a[1], axis, srcStart, n)
			if accumulate {
				slab = RefBinary(tensor.BAdd, RefSliceAxis(a[0], axis, dstStart, n), slab)
			}
			return RefConcat(axis,
				RefSliceAxis(a[0], axis, 0, dstStart),
				slab,
				RefSliceAxis(a[0], axis, dstStart+n, dst[axis]-dstStart-n))
		},
		run: func(be tensor.Backend, y *tensor.Tensor, t []*tensor.Tensor) []*tensor.Tensor {
			be.Copy(y, t[0])
			be.CopyAxis(y, t[1], axis, dstStart, srcStart, n, accumulate)
			return nil
		},
		back: func(be tensor.Backend, g []*tensor.Tensor, dy *tensor.Tensor, _ []*tensor.Tensor, _ *tensor.Tensor, _ []*tensor.Tensor) {
			be.CopyAxis(g[1], dy, axis, srcStart, dstStart, n, true)
		},
		tol:     2 * u32,
		gradTol: 2 * u32,
	}
}

// concatCase concatenates a and b along axis with two CopyAxis calls (how
// package nn concatenates), and splits dy back.
func concatCase(a, b []int, axis int) kcase {
	out := append([]int(nil), a...)
	out[axis] += b[axis]
	return kcase{
		name: fmt.Sprintf("concat_a%s_b%s_axis%d", shp(a), shp(b), axis),
		in:   []operand{{name: "a", shape: a, grad: true}, {name: "b", shape: b, grad: true}},
		out:  out,
		ref:  func(x []Array) Array { return RefConcat(axis, x[0], x[1]) },
		run: func(be tensor.Backend, y *tensor.Tensor, t []*tensor.Tensor) []*tensor.Tensor {
			be.CopyAxis(y, t[0], axis, 0, 0, a[axis], false)
			be.CopyAxis(y, t[1], axis, a[axis], 0, b[axis], false)
			return nil
		},
		back: func(be tensor.Backend, g []*tensor.Tensor, dy *tensor.Tensor, _ []*tensor.Tensor, _ *tensor.Tensor, _ []*tensor.Tensor) {
			if g[0] != nil {
				be.CopyAxis(g[0], dy, axis, 0, 0, a[axis], true)
			}
			if g[1] != nil {
				be.CopyAxis(g[1], dy, axis, 0, a[axis], b[axis], true)
			}
		},
		multiGrad: true,
		tol:       2 * u32,
		gradTol:   2 * u32,
	}
}

func copyAxisGroup(short bool) group {
	cs := []kcase{
		copyAxisCase([]int{2, 5, 3, 4}, []int{2, 3, 3, 4}, 1, 2, 0, 3, false),
		copyAxisCase([]int{2, 5, 3, 4}, []int{2, 4, 3, 4}, 1, 1, 2, 2, true),
		copyAxisCase([]int{4, 3, 2}, []int{3, 3, 2}, 0, 1, 1, 2, false),
		copyAxisCase([]int{2, 3, 4, 7}, []int{2, 3, 4, 5}, 3, 3, 1, 4, true),
		copyAxisCase([]int{3, 4}, []int{3, 6}, 1, 0, 2, 4, false), // a slice filling dst
		concatCase([]int{2, 3, 4, 5}, []int{2, 2, 4, 5}, 1),
		concatCase([]int{1, 3, 4, 5}, []int{2, 3, 4, 5}, 0),
		concatCase([]int{2, 16, 33, 32}, []int{2, 16, 33, 32}, 1),
	}
	return group{"CopyAxis", cs}
}

// padCase is Pad2D and Pad2DBackward.
func padCase(x []int, p tensor.Padding) kcase {
	r := len(x)
	out := append([]int(nil), x...)
	out[r-2] += p.Top + p.Bottom
	out[r-1] += p.Left + p.Right
	mode := "zero"
	if p.Mode == tensor.PadReflect {
		mode = "reflect"
	}
	return kcase{
		name: fmt.Sprintf("%s_x%s_t%d_b%d_l%d_r%d", mode, shp(x), p.Top, p.Bottom, p.Left, p.Right),
		in:   []operand{{name: "x", shape: x, grad: true}},
		out:  out,
		ref:  func(a []Array) Array { return RefPad2D(a[0], p) },
		run: func(be tensor.Backend, y *tensor.Tensor, t []*tensor.Tensor) []*tensor.Tensor {
			be.Pad2D(y, t[0], p)
			return nil
		},
		back: func(be tensor.Backend, g []*tensor.Tensor, dy *tensor.Tensor, _ []*tensor.Tensor, _ *tensor.Tensor, _ []*tensor.Tensor) {
			be.Pad2DBackward(g[0], dy, p)
		},
		tol: 2 * u32,
		// A reflected element receives up to four output gradients.
		gradTol: sumTol(4),
	}
}

func padGroup(short bool) group {
	type P = tensor.Padding
	z, rf := tensor.PadZero, tensor.PadReflect
	cs := []kcase{
		padCase([]int{2, 3, 5, 6}, P{Top: 1, Bottom: 2, Left: 0, Right: 3, Mode: z}),
		padCase([]int{3, 5, 6}, P{Top: 2, Bottom: 1, Left: 1, Right: 2, Mode: z}),
		padCase([]int{1, 3, 7, 7}, P{Top: 3, Bottom: 3, Left: 3, Right: 3, Mode: rf}), // before a 7×7 conv
		padCase([]int{2, 3, 4, 5}, P{Top: 3, Bottom: 3, Left: 4, Right: 4, Mode: rf}), // the widest reflection allowed
		padCase([]int{1, 2, 6, 5}, P{Top: 1, Bottom: 0, Left: 2, Right: 4, Mode: rf}),
		padCase([]int{2, 1, 2, 2}, P{Top: 1, Bottom: 1, Left: 1, Right: 1, Mode: rf}),
		padCase([]int{1, 4, 16, 16}, P{Top: 1, Bottom: 1, Left: 1, Right: 1, Mode: rf}),
		padCase([]int{5, 4}, P{Top: 0, Bottom: 0, Left: 0, Right: 0, Mode: z}),
	}
	if !short {
		cs = append(cs, padCase([]int{2, 8, 64, 64}, P{Top: 3, Bottom: 3, Left: 3, Right: 3, Mode: rf}))
	}
	return group{"Pad2D", cs}
}
