package tensortest

import (
	"fmt"
	"strings"

	"github.com/crdgo/crdgo/crd/tensor"
)

// shp formats a shape for a case name: 2x3x7x9.
func shp(s []int) string {
	parts := make([]string, len(s))
	for i, d := range s {
		parts[i] = fmt.Sprint(d)
	}
	if len(parts) == 0 {
		return "scalar"
	}
	return strings.Join(parts, "x")
}

func convName(x, w []int, p tensor.ConvParams, bias bool) string {
	q := p.Norm()
	s := fmt.Sprintf("x%s_w%s_s%dx%d_p%dx%d_d%dx%d_g%d", shp(x), shp(w), q.StrideH, q.StrideW, q.PadH, q.PadW, q.DilationH, q.DilationW, q.Groups)
	if q.OutPadH != 0 || q.OutPadW != 0 {
		s += fmt.Sprintf("_op%dx%d", q.OutPadH, q.OutPadW)
	}
	if bias {
		s += "_bias"
	}
	return s
}

// convCase is Conv2D and Conv2DBackward of x (N,Cin,H,W) and w (Cout,Cin/G,KH,KW).
func convCase(x, w []int, p tensor.ConvParams, bias bool) kcase {
	q := p.Norm()
	oh := tensor.ConvOut(x[2], w[2], q.StrideH, q.PadH, q.DilationH)
	ow := tensor.ConvOut(x[3], w[3], q.StrideW, q.PadW, q.DilationW)
	in := []operand{{name: "x", shape: x, grad: true}, {name: "w", shape: w, grad: true}}
	if bias {
		in = append(in, operand{name: "b", shape: []int{w[0]}, grad: true})
	}
	opt := func(ts []*tensor.Tensor) *tensor.Tensor {
		if bias {
			return ts[2]
		}
		return nil
	}
	return kcase{
		name: convName(x, w, p, bias),
		in:   in,
		out:  []int{x[0], w[0], oh, ow},
		ref: func(a []Array) Array {
			var b Array
			if bias {
				b = a[2]
			}
			return RefConv2D(a[0], a[1], b, p)
		},
		run: func(be tensor.Backend, y *tensor.Tensor, t []*tensor.Tensor) []*tensor.Tensor {
			be.Conv2D(y, t[0], t[1], opt(t), p)
			return nil
		},
		back: func(be tensor.Backend, g []*tensor.Tensor, dy *tensor.Tensor, t []*tensor.Tensor, _ *tensor.Tensor, _ []*tensor.Tensor) {
			be.Conv2DBackward(g[0], g[1], opt(g), dy, t[0], t[1], p)
		},
		multiGrad: true,
		// An output sums Cin/G·KH·KW products and the bias; dx sums
		// Cout/G·KH·KW, dw and db sum N·OH·OW.
		tol:     sumTol(w[1]*w[2]*w[3] + 1),
		gradTol: sumTol(max(w[0]/q.Groups*w[2]*w[3], x[0]*oh*ow)),
	}
}

// convTCase is ConvTranspose2D and its backward of x (N,Cin,H,W) and
// w (Cin,Cout/G,KH,KW).
func convTCase(x, w []int, p tensor.ConvParams, bias bool) kcase {
	q := p.Norm()
	oh := tensor.ConvTransposeOut(x[2], w[2], q.StrideH, q.PadH, q.DilationH, q.OutPadH)
	ow := tensor.ConvTransposeOut(x[3], w[3], q.StrideW, q.PadW, q.DilationW, q.OutPadW)
	cout := w[1] * q.Groups
	in := []operand{{name: "x", shape: x, grad: true}, {name: "w", shape: w, grad: true}}
	if bias {
		in = append(in, operand{name: "b", shape: []int{cout}, grad: true})
	}
	opt := func(ts []*tensor.Tensor) *tensor.Tensor {
		if bias {
			return ts[2]
		}
		return nil
	}
	return kcase{
		name: convName(x, w, p, bias),
		in:   in,
		out:  []int{x[0], cout, oh, ow},
		ref: func(a []Array) Array {
			var b Array
			if bias {
				b = a[2]
			}
			return RefConvTranspose2D(a[0], a[1], b, p)
		},
		run: func(be tensor.Backend, y *tensor.Tensor, t []*tensor.Tensor) []*tensor.Tensor {
			be.ConvTranspose2D(y, t[0], t[1], opt(t), p)
			return nil
		},
		back: func(be tensor.Backend, g []*tensor.Tensor, dy *tensor.Tensor, t []*tensor.Tensor, _ *tensor.Tensor, _ []*tensor.Tensor) {
			be.ConvTranspose2DBackward(g[0], g[1], opt(g), dy, t[0], t[1], p)
		},
		multiGrad: true,
		// An output gathers at most Cin/G·KH·KW products and the bias; dx is a
		// convolution of dy (Cout/G·KH·KW terms), dw and db sum over N·H·W
		// input pixels (db over N·OH·OW).
		tol:     sumTol(x[1]/q.Groups*w[2]*w[3] + 1),
		gradTol: sumTol(max(w[1]*w[2]*w[3], x[0]*x[2]*x[3], x[0]*oh*ow)),
	}
}

func convGroup(short bool) group {
	type P = tensor.ConvParams
	cs := []kcase{
		convCase([]int{2, 3, 7, 9}, []int{4, 3, 3, 3}, P{PadH: 1, PadW: 1}, true),
		convCase([]int{1, 4, 9, 8}, []int{5, 4, 3, 3}, P{StrideH: 2, StrideW: 2, PadH: 1, PadW: 1}, true),
		convCase([]int{2, 3, 9, 9}, []int{2, 3, 3, 3}, P{PadH: 2, PadW: 2, DilationH: 2, DilationW: 2}, false),
		// Inception's factorised 1×7 and 7×1 convolutions.
		convCase([]int{1, 4, 6, 11}, []int{3, 4, 1, 7}, P{PadW: 3}, true),
		convCase([]int{1, 4, 11, 6}, []int{3, 4, 7, 1}, P{PadH: 3}, true),
		// Grouped, not depthwise.
		convCase([]int{2, 6, 7, 7}, []int{4, 3, 3, 3}, P{PadH: 1, PadW: 1, Groups: 2}, true),
		convCase([]int{2, 6, 10, 9}, []int{6, 2, 3, 3}, P{StrideH: 2, StrideW: 2, PadH: 1, PadW: 1, Groups: 3}, false),
		// Depthwise: padded, unpadded 3×3 stride 1 (the mobile block after a
		// reflection pad), strided and dilated, and with a channel multiplier.
		convCase([]int{2, 5, 8, 7}, []int{5, 1, 3, 3}, P{PadH: 1, PadW: 1, Groups: 5}, true),
		convCase([]int{2, 4, 9, 10}, []int{4, 1, 3, 3}, P{Groups: 4}, false),
		convCase([]int{1, 3, 11, 10}, []int{3, 1, 3, 3}, P{StrideH: 2, StrideW: 2, PadH: 2, PadW: 2, DilationH: 2, DilationW: 2, Groups: 3}, true),
		convCase([]int{1, 3, 6, 7}, []int{6, 1, 3, 3}, P{PadH: 1, PadW: 1, Groups: 3}, true),
		// Pointwise, grouped pointwise, and 1×1 at stride 2 (not pointwise).
		convCase([]int{2, 7, 5, 6}, []int{9, 7, 1, 1}, P{}, true),
		convCase([]int{1, 6, 5, 5}, []int{4, 3, 1, 1}, P{Groups: 2}, false),
		convCase([]int{1, 4, 7, 7}, []int{3, 4, 1, 1}, P{StrideH: 2, StrideW: 2}, true),
		// 7×7 on a reflection-padded image; PatchGAN's k4 s2 p1.
		convCase([]int{1, 3, 13, 13}, []int{4, 3, 7, 7}, P{}, true),
		convCase([]int{2, 3, 8, 9}, []int{5, 3, 4, 4}, P{StrideH: 2, StrideW: 2, PadH: 1, PadW: 1}, true),
		// Unequal strides, pads and dilations per axis.
		convCase([]int{1, 2, 8, 9}, []int{3, 2, 3, 2}, P{StrideH: 1, StrideW: 2, PadH: 1, PadW: 2, DilationH: 2, DilationW: 1}, true),
		// GEMM block boundaries (64): pointwise with M=65, N=63, K=129, and an
		// im2col GEMM with M=127, N=65, K=63.
		convCase([]int{1, 129, 7, 9}, []int{65, 129, 1, 1}, P{}, true),
		convCase([]int{1, 7, 13, 5}, []int{127, 7, 3, 3}, P{PadH: 1, PadW: 1}, true),
	}
	if !short {
		cs = append(cs,
			convCase([]int{3, 65, 9, 7}, []int{63, 65, 3, 3}, P{StrideH: 2, StrideW: 2, PadH: 1, PadW: 1}, true),
		)
	}
	return group{"Conv2D", cs}
}

func convTGroup(short bool) group {
	type P = tensor.ConvParams
	cs := []kcase{
		// The generator's up-sampling: k3 s2 p1 output_padding 1.
		convTCase([]int{2, 4, 5, 6}, []int{4, 3, 3, 3}, P{StrideH: 2, StrideW: 2, PadH: 1, PadW: 1, OutPadH: 1, OutPadW: 1}, true),
		convTCase([]int{1, 3, 4, 5}, []int{3, 5, 4, 4}, P{StrideH: 2, StrideW: 2, PadH: 1, PadW: 1}, false),
		convTCase([]int{1, 4, 5, 5}, []int{4, 3, 3, 3}, P{PadH: 1, PadW: 1, Groups: 2}, true),
		convTCase([]int{2, 3, 5, 4}, []int{3, 1, 3, 3}, P{StrideH: 2, StrideW: 2, PadH: 1, PadW: 1, OutPadH: 1, OutPadW: 1, Groups: 3}, true),
		// output_padding below the dilation at stride 1 (PyTorch allows
		// OutPad < max(stride, dilation)): the last row and column only get the bias.
		convTCase([]int{1, 2, 5, 5}, []int{2, 3, 3, 3}, P{DilationH: 2, DilationW: 2, OutPadH: 1, OutPadW: 1}, true),
		convTCase([]int{1, 2, 4, 5}, []int{2, 2, 3, 2}, P{StrideH: 3, StrideW: 2, PadH: 1, OutPadH: 2, OutPadW: 1}, true),
		convTCase([]int{2, 5, 4, 4}, []int{5, 3, 1, 1}, P{}, true),
		// GEMM boundaries: M = Cout/G·KH·KW = 63, N = H·W = 65, K = 129.
		convTCase([]int{1, 129, 5, 13}, []int{129, 7, 3, 3}, P{PadH: 1, PadW: 1}, true),
	}
	if !short {
		cs = append(cs,
			convTCase([]int{2, 16, 8, 8}, []int{16, 8, 3, 3}, P{StrideH: 2, StrideW: 2, PadH: 1, PadW: 1, OutPadH: 1, OutPadW: 1}, true),
		)
	}
	return group{"ConvTranspose2D", cs}
}
