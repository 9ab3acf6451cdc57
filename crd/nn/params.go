package nn

import (
	"fmt"
	"math/rand/v2"

	"github.com/crdgo/crdgo/crd/tensor"
)

// InitKind is how a parameter is initialised.
type InitKind int

const (
	InitZeros  InitKind = iota // 0 (biases)
	InitOnes                   // 1
	InitNormal                 // N(Mean, Std²): CycleGAN/pix2pix "normal" init
)

// Init describes a parameter's initialisation.
type Init struct {
	Kind      InitKind
	Mean, Std float64
}

// Normal returns N(mean, std²) initialisation.
func Normal(mean, std float64) Init { return Init{Kind: InitNormal, Mean: mean, Std: std} }

// Param is one named parameter or buffer of a ParamSet.
type Param struct {
	Name string
	Var  *Var
	Init Init
	// Buffer marks state that is saved but not trained (batch norm running
	// statistics). Int marks a buffer PyTorch stores as int64
	// (num_batches_tracked).
	Buffer, Int bool
}

// ParamSet is a model's parameters and buffers with their PyTorch state_dict
// names, in registration order. After Pack, the values of all parameters live
// in one flat tensor and their gradients in another (llm.c's single
// allocation): Grads is the buffer data-parallel training sums across ranks,
// and Adam updates all parameters in one pass.
type ParamSet struct {
	be      tensor.Backend
	params  []*Param
	byName  map[string]*Param
	packed  bool
	nTrain  int            // elements of trainable parameters
	value   *tensor.Tensor // flat values of trainable parameters
	grad    *tensor.Tensor // flat gradients
	buffers *tensor.Tensor // flat buffers
}

// NewParamSet returns an empty set whose tensors live on be.
func NewParamSet(be tensor.Backend) *ParamSet {
	return &ParamSet{be: be, byName: map[string]*Param{}}
}

// Backend is where the set's tensors live.
func (ps *ParamSet) Backend() tensor.Backend { return ps.be }

// Add registers a trainable parameter. Names must be unique; adding after Pack
// is a bug.
func (ps *ParamSet) Add(name string, init Init, shape ...int) *Var {
	return ps.add(&Param{Name: name, Init: init}, shape)
}

// AddBuffer registers a saved, untrained tensor initialised by init.
func (ps *ParamSet) AddBuffer(name string, init Init, isInt bool, shape ...int) *Var {
	return ps.add(&Param{Name: name, Init: init, Buffer: true, Int: isInt}, shape)
}

func (ps *ParamSet) add(p *Param, shape []int) *Var {
	if ps.packed {
		panic(fmt.Sprintf("nn: ParamSet.Add(%q) after Pack", p.Name))
	}
	if _, dup := ps.byName[p.Name]; dup {
		panic(fmt.Sprintf("nn: ParamSet: duplicate name %q", p.Name))
	}
	p.Var = &Var{Value: &tensor.Tensor{Shape: tensor.Shape(shape).Clone()}, requiresGrad: !p.Buffer, param: true}
	ps.params = append(ps.params, p)
	ps.byName[p.Name] = p
	return p.Var
}

// Pack allocates the flat value, gradient and buffer tensors and points every
// parameter at its slice of them. Values are zero until Initialize or a load.
func (ps *ParamSet) Pack() {
	if ps.packed {
		return
	}
	nb := 0
	for _, p := range ps.params {
		if p.Buffer {
			nb += p.Var.Value.Numel()
		} else {
			ps.nTrain += p.Var.Value.Numel()
		}
	}
	ps.value = ps.be.New(shapeOf(ps.nTrain))
	ps.grad = ps.be.New(shapeOf(ps.nTrain))
	ps.buffers = ps.be.New(shapeOf(nb))
	off, boff := 0, 0
	for _, p := range ps.params {
		s := p.Var.Value.Shape
		n := s.Numel()
		if p.Buffer {
			p.Var.Value = ps.be.View(ps.buffers, boff, s)
			boff += n
			continue
		}
		p.Var.Value = ps.be.View(ps.value, off, s)
		p.Var.Grad = ps.be.View(ps.grad, off, s)
		off += n
	}
	ps.packed = true
}

func (ps *ParamSet) mustPacked(op string) {
	if !ps.packed {
		panic("nn: ParamSet." + op + " before Pack")
	}
}

// Params lists parameters and buffers in registration order.
func (ps *ParamSet) Params() []*Param { return ps.params }

// Get returns the parameter or buffer called name, or nil.
func (ps *ParamSet) Get(name string) *Param { return ps.byName[name] }

// NumParams is the number of trainable elements (PyTorch's
// sum(p.numel() for p in parameters())).
func (ps *ParamSet) NumParams() int {
	n := 0
	for _, p := range ps.params {
		if !p.Buffer {
			n += p.Var.Value.Numel()
		}
	}
	return n
}

// Values is the flat tensor of all trainable values.
func (ps *ParamSet) Values() *tensor.Tensor { ps.mustPacked("Values"); return ps.value }

// Grads is the flat tensor of all gradients: what allreduce moves.
func (ps *ParamSet) Grads() *tensor.Tensor { ps.mustPacked("Grads"); return ps.grad }

// Buffers is the flat tensor of all buffers.
func (ps *ParamSet) Buffers() *tensor.Tensor { ps.mustPacked("Buffers"); return ps.buffers }

// ZeroGrad sets every gradient to zero.
func (ps *ParamSet) ZeroGrad() {
	ps.mustPacked("ZeroGrad")
	ps.be.Fill(ps.grad, 0)
}

// SetRequiresGrad freezes (false) or unfreezes (true) every parameter. A frozen
// parameter still passes gradients through to its inputs; it gets none itself.
func (ps *ParamSet) SetRequiresGrad(on bool) {
	for _, p := range ps.params {
		if !p.Buffer {
			p.Var.requiresGrad = on
		}
	}
}

// Initialize fills every parameter and buffer from its Init with values drawn
// from rng, in registration order (so a seed fixes the whole model).
func (ps *ParamSet) Initialize(rng *rand.Rand) {
	ps.mustPacked("Initialize")
	for _, p := range ps.params {
		n := p.Var.Value.Numel()
		host := make([]float32, n)
		switch p.Init.Kind {
		case InitOnes:
			for i := range host {
				host[i] = 1
			}
		case InitNormal:
			for i := range host {
				host[i] = float32(p.Init.Mean + p.Init.Std*rng.NormFloat64())
			}
		}
		ps.be.Upload(p.Var.Value, host)
	}
}

// CopyFrom copies every value and buffer of src (same names and shapes) into ps.
func (ps *ParamSet) CopyFrom(src *ParamSet) error {
	ps.mustPacked("CopyFrom")
	src.mustPacked("CopyFrom")
	if len(src.params) != len(ps.params) {
		return fmt.Errorf("nn: copy parameters: %d tensors into %d", len(src.params), len(ps.params))
	}
	for i, p := range ps.params {
		q := src.params[i]
		if p.Name != q.Name || !p.Var.Value.Shape.Equal(q.Var.Value.Shape) {
			return fmt.Errorf("nn: copy parameters: tensor %d is %q %v, want %q %v", i, q.Name, q.Var.Value.Shape, p.Name, p.Var.Value.Shape)
		}
	}
	ps.be.Copy(ps.value, src.value)
	ps.be.Copy(ps.buffers, src.buffers)
	return nil
}
