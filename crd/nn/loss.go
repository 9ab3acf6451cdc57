package nn

import "github.com/crdgo/crdgo/crd/tensor"

// L1Loss is mean|a − b| over every element.
func L1Loss(tp *Tape, a, b *Var) *Var { return Mean(tp, Abs(tp, Sub(tp, a, b)), false) }

// MSELoss is mean (a − b)² over every element.
func MSELoss(tp *Tape, a, b *Var) *Var { return Mean(tp, Square(tp, Sub(tp, a, b)), false) }

// SmoothL1Loss is the mean of PyTorch's smooth_l1_loss with threshold beta:
// z²/(2β) where |z| < β, |z| − β/2 elsewhere, z = a − b.
func SmoothL1Loss(tp *Tape, a, b *Var, beta float32) *Var {
	return Mean(tp, Unary(tp, tensor.UnaryOp{Kind: tensor.USmoothL1, A: beta}, Sub(tp, a, b)), false)
}

// MSEToConst is mean (x − c)², the LSGAN loss against the label c.
func MSEToConst(tp *Tape, x *Var, c float32) *Var {
	return Mean(tp, Square(tp, Affine(tp, x, 1, -c)), false)
}

// HingeReal is mean max(0, 1 − p): the hinge discriminator loss on real input.
func HingeReal(tp *Tape, p *Var) *Var { return Mean(tp, ReLU(tp, Affine(tp, p, -1, 1)), false) }

// HingeFake is mean max(0, 1 + p): the hinge discriminator loss on fakes.
func HingeFake(tp *Tape, p *Var) *Var { return Mean(tp, ReLU(tp, Affine(tp, p, 1, 1)), false) }

// HingeGen is −mean p: the hinge generator loss.
func HingeGen(tp *Tape, p *Var) *Var { return Scale(tp, Mean(tp, p, false), -1) }

// BCEWithLogitsConst is mean of binary cross-entropy with logits x against
// the constant label z ∈ {0, 1}: softplus(x) − z·x.
func BCEWithLogitsConst(tp *Tape, x *Var, z float32) *Var {
	if z == 0 {
		return Mean(tp, Softplus(tp, x), false)
	}
	return Mean(tp, Sub(tp, Softplus(tp, x), Scale(tp, x, z)), false)
}

// WeightedSum is Σ wᵢ·termᵢ of scalars.
func WeightedSum(tp *Tape, terms []*Var, weights []float32) *Var {
	var acc *Var
	for i, t := range terms {
		s := t
		if weights[i] != 1 {
			s = Scale(tp, t, weights[i])
		}
		if acc == nil {
			acc = s
		} else {
			acc = Add(tp, acc, s)
		}
	}
	return acc
}
