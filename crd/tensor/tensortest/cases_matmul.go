package tensortest

import (
	"fmt"

	"github.com/crdgo/crdgo/crd/tensor"
)

// matMulCase is c = alpha·op(a)·op(b) + beta·c0 with op(a) m×k and op(b) k×n,
// batched when batch > 0. MatMul has no backward kernel: package nn builds
// its gradients from MatMul with transposes.
func matMulCase(batch, m, n, k int, transA, transB bool, alpha, beta float32) kcase {
	as, bs, cs := []int{m, k}, []int{k, n}, []int{m, n}
	if transA {
		as = []int{k, m}
	}
	if transB {
		bs = []int{n, k}
	}
	if batch > 0 {
		as, bs, cs = append([]int{batch}, as...), append([]int{batch}, bs...), append([]int{batch}, cs...)
	}
	return kcase{
		name: fmt.Sprintf("b%d_m%d_n%d_k%d_tA%v_tB%v_alpha%g_beta%g", batch, m, n, k, transA, transB, alpha, beta),
		in:   []operand{{name: "a", shape: as}, {name: "b", shape: bs}, {name: "c0", shape: cs}},
		out:  cs,
		ref: func(x []Array) Array {
			return RefBinary(tensor.BAdd, RefScale(float64(alpha), RefMatMul(x[0], x[1], transA, transB)), RefScale(float64(beta), x[2]))
		},
		run: func(be tensor.Backend, y *tensor.Tensor, t []*tensor.Tensor) []*tensor.Tensor {
			be.Copy(y, t[2])
			be.MatMul(y, t[0], t[1], transA, transB, alpha, beta)
			return nil
		},
		tol: sumTol(k + 1),
	}
}

func matMulGroup(short bool) group {
	cs := []kcase{
		// Sizes around GEMM blocks of 64, every transpose combination.
		matMulCase(0, 63, 127, 65, false, false, 1, 0),
		matMulCase(0, 65, 63, 129, true, false, 1, 0),
		matMulCase(0, 129, 65, 63, false, true, 0.5, 1.5),
		matMulCase(0, 127, 129, 65, true, true, -1, 0.25),
		matMulCase(0, 7, 5, 1, false, false, 1, 0), // an outer product
		matMulCase(0, 1, 1, 1, false, false, 2, 1),
		matMulCase(0, 3, 4, 0, false, false, 1, 0.5), // k = 0: c = beta·c
		matMulCase(3, 5, 9, 7, false, false, 1, 0),
		matMulCase(3, 5, 9, 7, true, true, 1, 1),
		matMulCase(2, 33, 31, 65, false, true, 1, 0),
		matMulCase(4, 8, 8, 8, true, false, 0.5, 0),
	}
	if !short {
		cs = append(cs, matMulCase(0, 257, 255, 129, false, false, 1, 0))
	}
	return group{"MatMul", cs}
}

// adamCase runs len(steps) consecutive Adam steps from step first on param,
// m and v (v ≥ 0), one gradient per step, against RefAdam.
func adamCase(n, first, steps int, lr, wd float32) kcase {
	in := []operand{
		{name: "param", shape: []int{n}},
		{name: "m", shape: []int{n}, gen: genUniform(-0.1, 0.1)},
		{name: "v", shape: []int{n}, gen: genUniform(0, 0.05)},
	}
	for s := 0; s < steps; s++ {
		in = append(in, operand{name: fmt.Sprintf("grad%d", s), shape: []int{n}})
	}
	params := func(s int) tensor.AdamParams {
		return tensor.AdamParams{LR: lr, Beta1: 0.5, Beta2: 0.999, Eps: 1e-8, WeightDecay: wd, Step: first + s}
	}
	all := func(a []Array) (p, m, v Array) {
		p, m, v = a[0], a[1], a[2]
		if first == 1 { // a fresh optimiser: zero moments
			m, v = Zeros(n), Zeros(n)
		}
		for s := 0; s < steps; s++ {
			p, m, v = RefAdam(p, a[3+s], m, v, params(s))
		}
		return p, m, v
	}
	return kcase{
		name: fmt.Sprintf("n%d_step%d_x%d_lr%g_wd%g", n, first, steps, lr, wd),
		in:   in,
		out:  []int{n},
		ref: func(a []Array) Array {
			p, _, _ := all(a)
			return p
		},
		run: func(be tensor.Backend, y *tensor.Tensor, t []*tensor.Tensor) []*tensor.Tensor {
			m, v := be.New(tensor.Shape{n}), be.New(tensor.Shape{n})
			be.Copy(y, t[0])
			if first > 1 {
				be.Copy(m, t[1])
				be.Copy(v, t[2])
			}
			for s := 0; s < steps; s++ {
				be.Adam(y, t[3+s], m, v, params(s))
			}
			return []*tensor.Tensor{m, v}
		},
		auxRef: func(a []Array) []Array {
			_, m, v := all(a)
			return []Array{m, v}
		},
		// Each step is a few float32 operations per element; the parameter
		// moves by about lr per step, its rounding is relative to |param| ≤ 1.
		tol:    8 * u32 * float64(steps),
		auxTol: 8 * u32 * float64(steps),
	}
}

func adamGroup(short bool) group {
	return group{"Adam", []kcase{
		adamCase(1000, 1, 3, 0.01, 0),
		adamCase(1000, 7, 2, 2e-4, 0.01),
		adamCase(70001, 1, 2, 0.01, 0), // split across workers
	}}
}
