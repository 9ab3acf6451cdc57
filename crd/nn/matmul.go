package nn

import "github.com/crdgo/crdgo/crd/tensor"

// MatMul is op(a)·op(b) for 2-D operands, or batched over the leading
// dimension of 3-D ones; op transposes the last two dimensions when set.
func MatMul(tp *Tape, a, b *Var, transA, transB bool) *Var {
	as, bs := a.Value.Shape, b.Value.Shape
	r := len(as)
	m, n := as[r-2], bs[r-1]
	if transA {
		m = as[r-1]
	}
	if transB {
		n = bs[r-2]
	}
	var y *tensor.Tensor
	if r == 3 {
		y = tp.New(as[0], m, n)
	} else {
		y = tp.New(m, n)
	}
	tp.be.MatMul(y, a.Value, b.Value, transA, transB, 1, 0)
	return tp.record(y, func(dy *tensor.Tensor) {
		// y = A·B with A = op(a), B = op(b): dA = dy·Bᵀ, dB = Aᵀ·dy, then
		// undo op on the way back to a and b.
		if ga := tp.grad(a); ga != nil {
			if transA { // da = (dy·Bᵀ)ᵀ = B·dyᵀ = op(b)·dyᵀ
				tp.be.MatMul(ga, b.Value, dy, transB, true, 1, 1)
			} else { // da = dy·op(b)ᵀ
				tp.be.MatMul(ga, dy, b.Value, false, !transB, 1, 1)
			}
		}
		if gb := tp.grad(b); gb != nil {
			if transB { // db = (Aᵀ·dy)ᵀ = dyᵀ·A = dyᵀ·op(a)
				tp.be.MatMul(gb, dy, a.Value, true, transA, 1, 1)
			} else { // db = op(a)ᵀ·dy
				tp.be.MatMul(gb, a.Value, dy, !transA, false, 1, 1)
			}
		}
	}, a, b)
}
