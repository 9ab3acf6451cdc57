package train

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/crdgo/crdgo/crd"
	"github.com/crdgo/crdgo/crd/model"
	"github.com/crdgo/crdgo/crd/nn"
	"github.com/crdgo/crdgo/crd/tensor"
)

// termKind says how a loss term depends on the batch: a mean over it or a
// sum over its images. The trainer weights a rank's term by share.mean or
// share.sum accordingly.
type termKind int

const (
	meanTerm termKind = iota
	sumTerm
)

// TestLossSharesSumToTheGlobalBatch checks the data-parallel rule term by
// term: for every loss term the trainer uses, split a global batch of 4 into
// parts of 1 and 3 (and 2 and 2), weight each part's term by its share
// (b_r/B for batch means, 1 for per-image sums), and the weighted sum of the
// parts' values and input gradients must be the whole batch's. A term put in
// the wrong kind fails: a mean weighted as a sum counts its part B/b_r times.
func TestLossSharesSumToTheGlobalBatch(t *testing.T) {
	const batch, c, side = 4, 3, 16
	be := tensor.NewCPU(tensor.PureGo, 1)
	r := rand.New(rand.NewPCG(5, 6))
	draw := func(n int) []float32 {
		x := make([]float32, n)
		for i := range x {
			x[i] = float32(math.Tanh(r.NormFloat64()))
		}
		return x
	}
	per := c * side * side
	S, T := draw(batch*per), draw(batch*per)
	vgg := model.NewVGG16(be)
	vgg.Params().Initialize(rand.New(rand.NewPCG(1, 1)))
	vgg.Params().SetRequiresGrad(false)
	d, err := model.New(be, model.Spec{Arch: model.ArchPatchGAN, NDF: 8, InC: 3, Layers: 2, Norm: model.NormInstance})
	if err != nil {
		t.Fatal(err)
	}
	d.Params().Initialize(rand.New(rand.NewPCG(2, 2)))
	d.Params().SetRequiresGrad(false)
	cycle := &crdLoss{kind: CRDCycleGAN, patch: 8, terms: crd.AllTerms}
	pix := &crdLoss{kind: CRDPix2Pix, patch: 8, compat: crd.Intended, terms: crd.AllTerms}

	terms := []struct {
		name string
		kind termKind
		f    func(tp *nn.Tape, s, t *nn.Var) *nn.Var
	}{
		{"L1 (cycle, identity, recon, output L1)", meanTerm, func(tp *nn.Tape, s, t *nn.Var) *nn.Var { return nn.L1Loss(tp, s, t) }},
		{"lsgan D real", meanTerm, func(tp *nn.Tape, s, _ *nn.Var) *nn.Var { return ganReal(tp, LSGAN, d.Forward(tp, s)) }},
		{"hinge D fake", meanTerm, func(tp *nn.Tape, s, _ *nn.Var) *nn.Var { return ganFake(tp, Hinge, d.Forward(tp, s)) }},
		{"vanilla G", meanTerm, func(tp *nn.Tape, s, _ *nn.Var) *nn.Var { return ganGen(tp, Vanilla, d.Forward(tp, s)) }},
		{"hinge G", meanTerm, func(tp *nn.Tape, s, _ *nn.Var) *nn.Var { return ganGen(tp, Hinge, d.Forward(tp, s)) }},
		{"VGG style", meanTerm, func(tp *nn.Tape, s, t *nn.Var) *nn.Var { st, _ := perceptual(tp, vgg, s, t, 1e4, 10); return st }},
		{"VGG feature", meanTerm, func(tp *nn.Tape, s, t *nn.Var) *nn.Var { _, ft := perceptual(tp, vgg, s, t, 1e4, 10); return ft }},
		{"CRD pix2pix (Σ over images, D10)", sumTerm, func(tp *nn.Tape, s, t *nn.Var) *nn.Var { return pix.forward(tp, s, t, true) }},
		{"CRD CycleGAN (Σ over images, D11)", sumTerm, func(tp *nn.Tape, s, t *nn.Var) *nn.Var { return cycle.forward(tp, s, t, true) }},
	}
	// value and ∂/∂S of a term on images [lo, hi).
	eval := func(f func(tp *nn.Tape, s, t *nn.Var) *nn.Var, lo, hi int) (float64, []float32) {
		tp := nn.NewTape(be)
		st := be.New(tensor.Shape{hi - lo, c, side, side})
		be.Upload(st, S[lo*per:hi*per])
		s := nn.Leaf(st)
		tv := tp.Input(T[lo*per:hi*per], hi-lo, c, side, side)
		l := f(tp, s, tv)
		tp.Backward(l)
		var v [1]float32
		be.Download(v[:], l.Value)
		g := make([]float32, (hi-lo)*per)
		be.Download(g, tp.GradOf(s))
		return float64(v[0]), g
	}
	for _, tc := range terms {
		want, wantG := eval(tc.f, 0, batch)
		for _, cut := range []int{1, 2} {
			t.Run(fmt.Sprintf("%s/%d+%d", tc.name, cut, batch-cut), func(t *testing.T) {
				var got float64
				var gotG []float32
				for _, part := range [][2]int{{0, cut}, {cut, batch}} {
					sh := shareOf(part[1]-part[0], batch)
					w := sh.mean
					if tc.kind == sumTerm {
						w = sh.sum
					}
					v, g := eval(tc.f, part[0], part[1])
					got += float64(w) * v
					for _, x := range g {
						gotG = append(gotG, w*x)
					}
				}
				if d := math.Abs(got - want); d > 1e-5*math.Max(1, math.Abs(want)) {
					t.Errorf("Σ shares of the value = %.7g; the whole batch's = %.7g", got, want)
				}
				var num, den float64
				for i := range wantG {
					e := float64(gotG[i] - wantG[i])
					num += e * e
					den += float64(wantG[i]) * float64(wantG[i])
				}
				if rel := math.Sqrt(num / den); rel > 1e-5 {
					t.Errorf("Σ shares of ∂/∂S differs from the whole batch's by %.2g (relative L2)", rel)
				}
			})
		}
	}
}
