package nn

import (
	"fmt"
	"math"

	"github.com/crdgo/crdgo/crd/tensor"
)

// Adam is torch.optim.Adam over one ParamSet: moments m and v are flat tensors
// beside the set's flat values, and one kernel call updates every parameter.
type Adam struct {
	ps   *ParamSet
	m, v *tensor.Tensor
	// LR may be changed between steps (learning-rate schedules).
	LR, Beta1, Beta2, Eps, WeightDecay float32
	step                               int
}

// NewAdam returns Adam over ps (which must be packed) with PyTorch's defaults
// for eps and weight decay.
func NewAdam(ps *ParamSet, lr, beta1, beta2 float32) *Adam {
	ps.mustPacked("NewAdam")
	n := ps.nTrain
	return &Adam{
		ps: ps, m: ps.be.New(shapeOf(n)), v: ps.be.New(shapeOf(n)),
		LR: lr, Beta1: beta1, Beta2: beta2, Eps: 1e-8,
	}
}

// Params is the parameter set the optimizer updates.
func (a *Adam) Params() *ParamSet { return a.ps }

// Steps is the number of steps taken so far.
func (a *Adam) Steps() int { return a.step }

// Step applies one update from the parameters' current gradients.
func (a *Adam) Step() {
	a.step++
	a.ps.be.Adam(a.ps.value, a.ps.grad, a.m, a.v, tensor.AdamParams{
		LR: a.LR, Beta1: a.Beta1, Beta2: a.Beta2, Eps: a.Eps, WeightDecay: a.WeightDecay, Step: a.step,
	})
}

// State returns the moments (flat, in the set's parameter order) and the step
// count, for checkpoints.
func (a *Adam) State() (m, v *tensor.Tensor, step int) { return a.m, a.v, a.step }

// SetState restores moments and step count saved by State.
func (a *Adam) SetState(m, v []float32, step int) error {
	if len(m) != a.m.Numel() || len(v) != a.v.Numel() {
		return fmt.Errorf("nn: Adam state: moments of %d and %d elements, optimizer has %d", len(m), len(v), a.m.Numel())
	}
	if step < 0 {
		return fmt.Errorf("nn: Adam state: step %d", step)
	}
	a.ps.be.Upload(a.m, m)
	a.ps.be.Upload(a.v, v)
	a.step = step
	return nil
}

// AdamBound is the most two runs of Adam (betas beta1, beta2, learning rate
// lr, ε ignored) from the same start can differ in one element after steps
// steps, whatever their gradients: by Jensen's inequality |m̂_t|/√v̂_t ≤
// √(max_k w_k/u_k) with the normalised weights w of the first moment and u of
// the second, and the newest gradient has the largest ratio, so each run
// moves an element by at most lr·Σ_t √(w_t/u_t). Adam divides by √v̂, so an
// element whose gradient is rounding noise moves by about lr a step in a
// direction the rounding decides: two runs whose gradients differ only by
// rounding can really be this far apart.
func AdamBound(lr, beta1, beta2 float64, steps int) float64 {
	var total float64
	for t := 1; t <= steps; t++ {
		w := (1 - beta1) / (1 - math.Pow(beta1, float64(t)))
		u := (1 - beta2) / (1 - math.Pow(beta2, float64(t)))
		total += math.Sqrt(w / u)
	}
	return 2 * lr * total
}
