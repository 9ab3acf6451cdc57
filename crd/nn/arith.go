package nn

import (
	"fmt"

	"github.com/crdgo/crdgo/crd/tensor"
)

// Binary computes a ∘ b with NumPy broadcasting.
func Binary(tp *Tape, op tensor.BinaryOp, a, b *Var) *Var {
	s, ok := tensor.BroadcastShape(a.Value.Shape, b.Value.Shape)
	if !ok {
		panic(fmt.Sprintf("nn: shapes %v and %v do not broadcast", a.Value.Shape, b.Value.Shape))
	}
	y := tp.New(s...)
	tp.be.Binary(op, y, a.Value, b.Value)
	return tp.record(y, func(dy *tensor.Tensor) {
		tp.be.BinaryBackward(op, tp.grad(a), tp.grad(b), dy, a.Value, b.Value)
	}, a, b)
}

// Add is a + b (broadcasting).
func Add(tp *Tape, a, b *Var) *Var { return Binary(tp, tensor.BAdd, a, b) }

// Sub is a − b (broadcasting).
func Sub(tp *Tape, a, b *Var) *Var { return Binary(tp, tensor.BSub, a, b) }

// Mul is a·b (broadcasting).
func Mul(tp *Tape, a, b *Var) *Var { return Binary(tp, tensor.BMul, a, b) }

// Div is a/b (broadcasting).
func Div(tp *Tape, a, b *Var) *Var { return Binary(tp, tensor.BDiv, a, b) }
