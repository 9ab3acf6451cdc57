package tensortest

import (
	"fmt"
	"math"

	"github.com/crdgo/crdgo/crd/tensor"
)

func poolName(x []int, p tensor.PoolParams) string {
	q := p.Norm()
	return fmt.Sprintf("x%s_k%dx%d_s%dx%d_p%dx%d", shp(x), q.KH, q.KW, q.StrideH, q.StrideW, q.PadH, q.PadW)
}

func poolShape(x []int, p tensor.PoolParams) []int {
	q := p.Norm()
	r := len(x)
	return withHW(x, (x[r-2]+2*q.PadH-q.KH)/q.StrideH+1, (x[r-1]+2*q.PadW-q.KW)/q.StrideW+1)
}

// maxPoolCase is MaxPool2D and its backward on distinct values (no ties, so
// the gradient is well defined and finite differences see it).
func maxPoolCase(x []int, p tensor.PoolParams) kcase {
	q := p.Norm()
	return kcase{
		name: poolName(x, p),
		in:   []operand{{name: "x", shape: x, gen: genDistinct, grad: true}},
		out:  poolShape(x, p),
		ref:  func(a []Array) Array { return RefMaxPool2D(a[0], p) },
		run: func(be tensor.Backend, y *tensor.Tensor, t []*tensor.Tensor) []*tensor.Tensor {
			be.MaxPool2D(y, t[0], p)
			return nil
		},
		back: func(be tensor.Backend, g []*tensor.Tensor, dy *tensor.Tensor, t []*tensor.Tensor, _ *tensor.Tensor, _ []*tensor.Tensor) {
			be.MaxPool2DBackward(g[0], dy, t[0], p)
		},
		tol: 0, // a maximum is one of the inputs, exactly
		// An input is the maximum of at most ⌈KH/SH⌉·⌈KW/SW⌉ windows.
		gradTol: sumTol(ceilDiv(q.KH, q.StrideH) * ceilDiv(q.KW, q.StrideW)),
	}
}

func ceilDiv(a, b int) int { return (a + b - 1) / b }

// avgPoolCase is AvgPool2D and its backward.
func avgPoolCase(x []int, p tensor.PoolParams) kcase {
	q := p.Norm()
	name := poolName(x, p)
	if p.CountIncludePad {
		name += "_countpad"
	}
	return kcase{
		name: name,
		in:   []operand{{name: "x", shape: x, grad: true}},
		out:  poolShape(x, p),
		ref:  func(a []Array) Array { return RefAvgPool2D(a[0], p) },
		run: func(be tensor.Backend, y *tensor.Tensor, t []*tensor.Tensor) []*tensor.Tensor {
			be.AvgPool2D(y, t[0], p)
			return nil
		},
		back: func(be tensor.Backend, g []*tensor.Tensor, dy *tensor.Tensor, _ []*tensor.Tensor, _ *tensor.Tensor, _ []*tensor.Tensor) {
			be.AvgPool2DBackward(g[0], dy, p)
		},
		tol:     sumTol(q.KH*q.KW + 1),
		gradTol: sumTol(ceilDiv(q.KH, q.StrideH)*ceilDiv(q.KW, q.StrideW) + 1),
	}
}

func adaptiveCase(x []int, oh, ow int) kcase {
	r := len(x)
	// The largest bin has ⌈H/oh⌉+1 rows; an input is in at most ⌈oh/H⌉+1 bins.
	win := (x[r-2]/oh + 2) * (x[r-1]/ow + 2)
	cover := (oh/x[r-2] + 2) * (ow/x[r-1] + 2)
	return kcase{
		name: fmt.Sprintf("x%s_to_%dx%d", shp(x), oh, ow),
		in:   []operand{{name: "x", shape: x, grad: true}},
		out:  withHW(x, oh, ow),
		ref:  func(a []Array) Array { return RefAdaptiveAvgPool2D(a[0], oh, ow) },
		run: func(be tensor.Backend, y *tensor.Tensor, t []*tensor.Tensor) []*tensor.Tensor {
			be.AdaptiveAvgPool2D(y, t[0])
			return nil
		},
		back: func(be tensor.Backend, g []*tensor.Tensor, dy *tensor.Tensor, _ []*tensor.Tensor, _ *tensor.Tensor, _ []*tensor.Tensor) {
			be.AdaptiveAvgPool2DBackward(g[0], dy)
		},
		tol:     sumTol(win),
		gradTol: sumTol(cover),
	}
}

func resizeCase(x []int, oh, ow int, alignCorners bool) kcase {
	r := len(x)
	h, w := x[r-2], x[r-1]
	// Interpolation weights come from source coordinates up to max(H, W)
	// computed in float32: their absolute error is a few max(H,W)·u, and so
	// is an output's (1.8·max(H,W)·u measured from 64×64 to 299×299). An
	// input gradient gathers about 4·⌈OH/H⌉·⌈OW/W⌉ terms.
	coord := 8 * u32 * float64(max(h, w))
	cover := 4 * (ceilDiv(oh, h) + 1) * (ceilDiv(ow, w) + 1)
	return kcase{
		name: fmt.Sprintf("x%s_to_%dx%d_align%v", shp(x), oh, ow, alignCorners),
		in:   []operand{{name: "x", shape: x, grad: true}},
		out:  withHW(x, oh, ow),
		ref:  func(a []Array) Array { return RefResizeBilinear(a[0], oh, ow, alignCorners) },
		run: func(be tensor.Backend, y *tensor.Tensor, t []*tensor.Tensor) []*tensor.Tensor {
			be.ResizeBilinear(y, t[0], alignCorners)
			return nil
		},
		back: func(be tensor.Backend, g []*tensor.Tensor, dy *tensor.Tensor, _ []*tensor.Tensor, _ *tensor.Tensor, _ []*tensor.Tensor) {
			be.ResizeBilinearBackward(g[0], dy, alignCorners)
		},
		tol:     sumTol(4) + coord,
		gradTol: sumTol(cover) + coord*math.Sqrt(float64(cover)),
	}
}

func poolGroups(short bool) []group {
	type P = tensor.PoolParams
	mp := []kcase{
		maxPoolCase([]int{2, 3, 8, 9}, P{KH: 2, KW: 2}),
		maxPoolCase([]int{1, 3, 9, 9}, P{KH: 3, KW: 3, StrideH: 2, StrideW: 2, PadH: 1, PadW: 1}),
		maxPoolCase([]int{2, 2, 7, 6}, P{KH: 3, KW: 3, StrideH: 1, StrideW: 1, PadH: 1, PadW: 1}),
		maxPoolCase([]int{1, 2, 7, 10}, P{KH: 2, KW: 3, StrideH: 1, StrideW: 2, PadH: 1, PadW: 1}),
		maxPoolCase([]int{1, 4, 11, 11}, P{KH: 3, KW: 3, StrideH: 2, StrideW: 2}), // Inception's
		maxPoolCase([]int{3, 5, 4}, P{KH: 2, KW: 2, StrideH: 1, StrideW: 1}),
	}
	ap := []kcase{}
	for _, inc := range []bool{false, true} {
		ap = append(ap,
			avgPoolCase([]int{2, 3, 8, 9}, P{KH: 3, KW: 3, StrideH: 1, StrideW: 1, PadH: 1, PadW: 1, CountIncludePad: inc}),
			avgPoolCase([]int{1, 3, 9, 8}, P{KH: 3, KW: 3, StrideH: 2, StrideW: 2, PadH: 1, PadW: 1, CountIncludePad: inc}),
			avgPoolCase([]int{1, 2, 7, 9}, P{KH: 3, KW: 2, StrideH: 2, StrideW: 1, PadH: 1, PadW: 1, CountIncludePad: inc}),
			avgPoolCase([]int{2, 2, 6, 7}, P{KH: 2, KW: 2, CountIncludePad: inc}),
		)
	}
	ad := []kcase{
		adaptiveCase([]int{2, 3, 7, 9}, 3, 4),
		adaptiveCase([]int{1, 4, 5, 5}, 1, 1),
		adaptiveCase([]int{1, 2, 6, 6}, 6, 6),
		adaptiveCase([]int{1, 2, 4, 4}, 6, 7),
		adaptiveCase([]int{2, 2, 13, 13}, 5, 5),
		adaptiveCase([]int{3, 10, 7}, 4, 3),
	}
	rz := []kcase{}
	for _, ac := range []bool{false, true} {
		rz = append(rz,
			resizeCase([]int{2, 3, 5, 7}, 9, 11, ac),
			resizeCase([]int{1, 2, 9, 9}, 4, 5, ac),
			resizeCase([]int{1, 1, 8, 8}, 1, 1, ac),
			resizeCase([]int{1, 2, 1, 1}, 3, 3, ac),
			resizeCase([]int{2, 4, 6}, 6, 4, ac),
		)
	}
	// Inception's input: 64×64 images up to 299×299.
	if short {
		rz = append(rz, resizeCase([]int{1, 1, 16, 16}, 299, 299, false))
	} else {
		rz = append(rz, resizeCase([]int{1, 3, 64, 64}, 299, 299, false))
	}
	return []group{{"MaxPool2D", mp}, {"AvgPool2D", ap}, {"AdaptiveAvgPool2D", ad}, {"ResizeBilinear", rz}}
}
