// Package model builds the networks of CRD (docs/crd.md §5) on package nn, with the
// PyTorch state_dict names of the reference code, so converted weight files
// load without renaming: the ResNet and mobile-ResNet generators, the U-Net
// generator, the PatchGAN discriminator, and (for the perceptual loss and
// FID) VGG16 features and Inception-v3.
package model

import (
	"fmt"

	"github.com/crdgo/crdgo/crd/nn"
	"github.com/crdgo/crdgo/crd/tensor"
)

// Network is a model with named parameters.
type Network interface {
	// Forward maps x (N,C,H,W) to the network's output.
	Forward(tp *nn.Tape, x *nn.Var) *nn.Var
	// Params holds every parameter and buffer under its state_dict name.
	Params() *nn.ParamSet
	// SetTraining switches batch norm (and dropout) between training and
	// evaluation behaviour; networks without either ignore it.
	SetTraining(on bool)
}

// Norm is the normalisation layer of a generator or discriminator.
type Norm string

const (
	// NormInstance is InstanceNorm2d(affine=False): no parameters.
	NormInstance Norm = "instance"
	// NormBatch is BatchNorm2d(affine=True) with running statistics.
	NormBatch Norm = "batch"
)

// ParseNorm validates a norm name.
func ParseNorm(s string) (Norm, error) {
	switch Norm(s) {
	case NormInstance, NormBatch:
		return Norm(s), nil
	}
	return "", fmt.Errorf("norm %q: want instance or batch", s)
}

// initStd is the std of the reference code's init_weights(type normal, gain 0.02).
const initStd = 0.02

var (
	relu    = tensor.Activation{Kind: tensor.ActReLU}
	noAct   = tensor.Activation{}
	lrelu02 = tensor.Activation{Kind: tensor.ActLeakyReLU, Slope: 0.2}
)

// normLayer is one norm position of a network: instance norm (no parameters)
// or a BatchNorm2d registered under its state_dict index.
type normLayer struct {
	bn *nn.BatchNorm2d // nil for instance norm
}

func newNorm(ps *nn.ParamSet, norm Norm, prefix string, c int) *normLayer {
	if norm == NormBatch {
		return &normLayer{bn: nn.NewBatchNorm2d(ps, prefix, c, true)}
	}
	return &normLayer{}
}

func (n *normLayer) forward(tp *nn.Tape, x *nn.Var, act tensor.Activation) *nn.Var {
	if n.bn != nil {
		return n.bn.Forward(tp, x, act)
	}
	return nn.InstanceNorm(tp, x, nil, nil, 1e-5, act)
}

func (n *normLayer) setTraining(on bool) {
	if n.bn != nil {
		n.bn.Training = on
	}
}
