package train

import (
	"fmt"

	"github.com/crdgo/crdgo/crd"
	"github.com/crdgo/crdgo/crd/nn"
	"github.com/crdgo/crdgo/crd/tensor"
)

// GANMode is the adversarial loss (docs/crd.md §2, GANLoss).
type GANMode string

const (
	LSGAN   GANMode = "lsgan"
	Hinge   GANMode = "hinge"
	Vanilla GANMode = "vanilla"
)

// ganReal is the discriminator loss on real input: lsgan mean((p−1)²), hinge
// mean(max(0, 1−p)), vanilla BCE-with-logits(p, 1).
func ganReal(tp *nn.Tape, mode GANMode, p *nn.Var) *nn.Var {
	switch mode {
	case Hinge:
		return nn.HingeReal(tp, p)
	case Vanilla:
		return nn.BCEWithLogitsConst(tp, p, 1)
	}
	return nn.MSEToConst(tp, p, 1)
}

// ganFake is the discriminator loss on generated input.
func ganFake(tp *nn.Tape, mode GANMode, p *nn.Var) *nn.Var {
	switch mode {
	case Hinge:
		return nn.HingeFake(tp, p)
	case Vanilla:
		return nn.BCEWithLogitsConst(tp, p, 0)
	}
	return nn.MSEToConst(tp, p, 0)
}

// ganGen is the generator loss: the fake should look real (hinge: −mean p).
func ganGen(tp *nn.Tape, mode GANMode, p *nn.Var) *nn.Var {
	switch mode {
	case Hinge:
		return nn.HingeGen(tp, p)
	case Vanilla:
		return nn.BCEWithLogitsConst(tp, p, 1)
	}
	return nn.MSEToConst(tp, p, 1)
}

// CRDKind selects the CRD combination (docs/crd.md §1.3).
type CRDKind int

const (
	CRDCycleGAN CRDKind = iota // 25·Σ_b (rows + cols + patches)
	CRDPix2Pix                 // 2.5·Σ_b (rows + cols + patch term of compat)
)

// crdLoss is the CRD term as a tape op. The teacher output is a constant
// (detached); the relation math runs on the host in float64 (package crd) and
// its gradient is added into the student output's gradient on the way back.
type crdLoss struct {
	kind   CRDKind
	patch  int
	terms  crd.Terms // the slice sets kept (crd.AllTerms but in ablations)
	compat crd.Compat
	ws     crd.Workspace
	s, t   []float32 // host copies, reused
	grad   []float32
	// Last holds the per-image relations of the latest call, for logging.
	Last []crd.ImageTerms
}

// forward returns the CRD term of student s against teacher t (both NCHW).
// When on is false (a placeholder rank, whose term counts as nothing) it
// returns 0 without computing the relations.
func (c *crdLoss) forward(tp *nn.Tape, s, t *nn.Var, on bool) *nn.Var {
	be := tp.Backend()
	sh := s.Value.Shape
	if !sh.Equal(t.Value.Shape) || len(sh) != 4 {
		panic(fmt.Sprintf("train: CRD: student %v, teacher %v", sh, t.Value.Shape))
	}
	n := sh.Numel()
	if !on {
		y := tp.New(1)
		be.Upload(y, []float32{0})
		return nn.Const(y)
	}
	c.s, c.t, c.grad = grow(c.s, n), grow(c.t, n), grow(c.grad, n)
	be.Download(c.s, s.Value)
	be.Download(c.t, t.Value)
	clear(c.grad)
	shape := [4]int{sh[0], sh[1], sh[2], sh[3]}
	var g []float32
	if s.RequiresGrad() {
		g = c.grad
	}
	var total float64
	if c.kind == CRDCycleGAN {
		total, c.Last = c.ws.CycleGANTerms(c.s, c.t, shape, c.patch, c.terms, g, 1)
	} else {
		total, c.Last = c.ws.Pix2PixTerms(c.s, c.t, shape, c.patch, c.compat, c.terms, g, 1)
	}
	y := tp.New(1)
	be.Upload(y, []float32{float32(total)})
	return tp.Custom(y, func(dy *tensor.Tensor) {
		var up [1]float32
		be.Download(up[:], dy)
		gt := tp.New(sh...)
		be.Upload(gt, c.grad)
		be.BroadcastAdd(tp.GradOf(s), gt, up[0])
	}, s)
}

func grow(b []float32, n int) []float32 {
	if cap(b) < n {
		return make([]float32, n)
	}
	return b[:n]
}

// FeatureNet is a frozen VGG16: the four taps relu1_2, relu2_2, relu3_3 and
// relu4_3 of images in [0, 1] (docs/crd.md §3, §5.6).
type FeatureNet interface {
	Features(tp *nn.Tape, x *nn.Var) [4]*nn.Var
}

// perceptual returns the VGG style and feature terms of the student output s
// against the teacher output t, both in [−1, 1] (docs/crd.md §3):
//
//	style   = 1e4 · Σ_l mean|Gr(φ_l(S)) − Gr(φ_l(T))|,  Gr(φ) = F·Fᵀ/(c·h·w) per image
//	feature = 10 · mean|φ2(S) − φ2(T)|
//
// each multiplied by the given weights.
func perceptual(tp *nn.Tape, vgg FeatureNet, s, t *nn.Var, styleW, featureW float32) (style, feature *nn.Var) {
	fs := vgg.Features(tp, nn.Affine(tp, s, 0.5, 0.5))
	ft := vgg.Features(tp, nn.Affine(tp, t, 0.5, 0.5))
	var terms []*nn.Var
	for l := range fs {
		terms = append(terms, nn.L1Loss(tp, gram(tp, fs[l]), gram(tp, ft[l])))
	}
	style = nn.Scale(tp, nn.WeightedSum(tp, terms, []float32{1, 1, 1, 1}), styleW)
	feature = nn.Scale(tp, nn.L1Loss(tp, fs[1], ft[1]), featureW)
	return style, feature
}

// gram is F·Fᵀ/(c·h·w) for each image of φ (N,c,h,w): (N,c,c).
func gram(tp *nn.Tape, phi *nn.Var) *nn.Var {
	s := phi.Value.Shape
	f := nn.Reshape(tp, phi, s[0], s[1], s[2]*s[3])
	return nn.Scale(tp, nn.MatMul(tp, f, f, false, true), 1/float32(s[1]*s[2]*s[3]))
}
