// Package nn is crdgo's autodiff: ops with a forward pass and a hand-written
// backward pass, recorded on a Tape; parameters with stable names and one flat
// gradient buffer (ParamSet); Adam; seeded initialisation; layers.
//
// An op computes its output with the tape's Backend and, when any input needs a
// gradient, records a closure that, given the output's gradient, adds the
// inputs' gradients (+=: a value may feed several ops). Backward runs the
// closures in reverse order. Activations, saved statistics and gradients of
// non-parameters come from the tape's arena, which Reset recycles, so a
// steady-state training step allocates nothing new.
package nn

import (
	"fmt"

	"github.com/crdgo/crdgo/crd/tensor"
)

// Var is a value in a computation and, when it takes part in differentiation,
// its gradient (same shape). Grad is nil until backward reaches the Var;
// parameters keep a persistent Grad (a view into their ParamSet's flat buffer).
type Var struct {
	Value *tensor.Tensor
	Grad  *tensor.Tensor

	requiresGrad bool
	param        bool
}

// RequiresGrad reports whether gradients flow to v.
func (v *Var) RequiresGrad() bool { return v.requiresGrad }

// Shape is the shape of v's value.
func (v *Var) Shape() tensor.Shape { return v.Value.Shape }

// Const wraps t as a Var that takes no gradient (inputs, targets, detached values).
func Const(t *tensor.Tensor) *Var { return &Var{Value: t} }

// Detach returns a Var with v's value and no gradient history.
func Detach(v *Var) *Var { return &Var{Value: v.Value} }

type node struct {
	out      *Var
	backward func(dy *tensor.Tensor)
}

// Tape records ops for one forward/backward pass. It is not safe for concurrent
// use; each goroutine that computes uses its own Tape.
type Tape struct {
	be    tensor.Backend
	arena *Arena
	nodes []node
	coll  Collective // nil: one process
}

// NewTape returns an empty tape computing on be.
func NewTape(be tensor.Backend) *Tape {
	return &Tape{be: be, arena: NewArena(be)}
}

// Backend is the tape's compute backend.
func (tp *Tape) Backend() tensor.Backend { return tp.be }

// Arena is the per-step allocator of the tape.
func (tp *Tape) Arena() *Arena { return tp.arena }

// Reset forgets every recorded op and returns all arena tensors for reuse:
// Vars produced since the last Reset must not be used afterwards.
func (tp *Tape) Reset() {
	clear(tp.nodes)
	tp.nodes = tp.nodes[:0]
	tp.arena.Reset()
}

// Len is the number of recorded ops.
func (tp *Tape) Len() int { return len(tp.nodes) }

// New returns an arena tensor with undefined contents, for a forward output.
func (tp *Tape) New(shape ...int) *tensor.Tensor { return tp.arena.Get(shape) }

// Zeros returns a zeroed arena tensor.
func (tp *Tape) Zeros(shape ...int) *tensor.Tensor { return tp.arena.Zeros(shape) }

// Input copies host data into a new arena tensor and returns it as a constant.
func (tp *Tape) Input(data []float32, shape ...int) *Var {
	t := tp.arena.Get(shape)
	tp.be.Upload(t, data)
	return Const(t)
}

// record makes the output Var of an op. If any input requires a gradient, the
// output does too and backward is kept for the backward pass.
func (tp *Tape) record(y *tensor.Tensor, backward func(dy *tensor.Tensor), inputs ...*Var) *Var {
	out := &Var{Value: y}
	for _, in := range inputs {
		if in != nil && in.requiresGrad {
			out.requiresGrad = true
			break
		}
	}
	if out.requiresGrad {
		tp.nodes = append(tp.nodes, node{out: out, backward: backward})
	}
	return out
}

// grad returns v's gradient tensor, allocating a zeroed one on first use, or
// nil when v takes no gradient.
func (tp *Tape) grad(v *Var) *tensor.Tensor {
	if v == nil || !v.requiresGrad {
		return nil
	}
	if v.Grad == nil {
		v.Grad = tp.arena.Zeros(v.Value.Shape)
	}
	return v.Grad
}

// Backward computes the gradient of the scalar loss with respect to every Var
// that requires one, adding into parameters' persistent gradients.
func (tp *Tape) Backward(loss *Var) {
	if loss.Value.Numel() != 1 {
		panic(fmt.Sprintf("nn: Backward: loss has shape %v, want a scalar", loss.Value.Shape))
	}
	tp.BackwardFrom(loss, nil)
}

// BackwardFrom runs the backward pass from out with output gradient dy (nil
// means 1 for a scalar out). Use it to differentiate ⟨dy, out⟩.
//
// A tape may run several backward passes before Reset (a GAN step
// differentiates the discriminator's, the generator's and the student's
// losses in turn): each pass reaches only the ops its output depends on, and
// the gradients of intermediate values are forgotten after each pass, so no
// pass sees another's. Parameters and leaves keep accumulating.
func (tp *Tape) BackwardFrom(out *Var, dy *tensor.Tensor) {
	if !out.requiresGrad {
		panic("nn: Backward: output does not depend on anything that requires a gradient")
	}
	g := tp.grad(out)
	if dy == nil {
		if out.Value.Numel() != 1 {
			panic(fmt.Sprintf("nn: BackwardFrom: nil gradient for non-scalar %v", out.Value.Shape))
		}
		tp.be.Fill(g, 1)
	} else {
		tp.be.BroadcastAdd(g, dy, 1)
	}
	for i := len(tp.nodes) - 1; i >= 0; i-- {
		n := tp.nodes[i]
		if n.out.Grad == nil {
			continue
		}
		n.backward(n.out.Grad)
	}
	for _, n := range tp.nodes {
		n.out.Grad = nil // arena memory, recycled at Reset
	}
}

// Leaf wraps t as a Var that takes a gradient without being a parameter (for
// tests and for differentiating with respect to an input). Its Grad is
// allocated on first use and kept across backward passes until Reset.
func Leaf(t *tensor.Tensor) *Var { return &Var{Value: t, requiresGrad: true} }

func shapeOf(s ...int) tensor.Shape { return tensor.Shape(s) }

// Custom records an op computed outside this package: y is its output and
// backward, given y's gradient, adds the inputs' gradients (obtained with
// GradOf). It is how losses computed on the host (the CRD relations) join the
// tape.
func (tp *Tape) Custom(y *tensor.Tensor, backward func(dy *tensor.Tensor), inputs ...*Var) *Var {
	return tp.record(y, backward, inputs...)
}

// GradOf returns v's gradient tensor, allocating a zeroed one on first use, or
// nil when v takes no gradient. Backward closures of Custom ops add into it.
func (tp *Tape) GradOf(v *Var) *tensor.Tensor { return tp.grad(v) }
