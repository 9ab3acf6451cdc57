package train

import (
	"context"
	"fmt"

	"github.com/crdgo/crdgo/crd/data"
	"github.com/crdgo/crdgo/crd/model"
	"github.com/crdgo/crdgo/crd/nn"
)

// Phase is where a CycleGAN run is in its round structure (docs/crd.md §4.2).
type Phase string

const (
	PhaseTeacher Phase = "teacher" // teacher epochs (pix2pix runs stay here)
	PhaseStudent Phase = "student" // a student round
)

// State is the trainer's position in its schedule; checkpoints store it.
type State struct {
	Step          int         `json:"step"`           // optimizer steps of any kind so far
	TeacherSteps  int         `json:"teacher_steps"`  // pix2pix: every step; CycleGAN: teacher steps
	StudentSteps  int         `json:"student_steps"`  // CycleGAN student-round steps
	Epoch         int         `json:"epoch"`          // completed (teacher) epochs
	Cursor        data.Cursor `json:"cursor"`         // the training loader's position
	Phase         Phase       `json:"phase"`          // CycleGAN: teacher epochs or a student round
	StudentEpochs int         `json:"student_epochs"` // CycleGAN: completed student epochs, all rounds
	RoundEpochs   int         `json:"round_epochs"`   // CycleGAN: completed epochs of the current round
	StudentCursor data.Cursor `json:"student_cursor"` // CycleGAN: the student loader's position
	BestTeacher   float64     `json:"best_teacher"`   // lowest teacher FID so far (0: none yet)
	BestStudent   float64     `json:"best_student"`   // lowest student FID so far (0: none yet)
}

// input uploads one of the batch's NCHW image sets as a constant.
func (t *Trainer) input(x []float32, b *data.Batch) *nn.Var {
	return t.tp.Input(x, b.N, b.C, b.H, b.W)
}

// Step runs one training step on the batch at the trainer's position in its
// schedule: a pix2pix step (D, teacher and student, docs/crd.md §4.1), or in a
// CycleGAN run a teacher step or a student step (§4.2).
//
// b is this rank's part of the step's global batch (b.N of b.Total examples,
// at b.Offset; a batch with Total 0 is a whole global batch). sync (nil in one
// process) combines the ranks' values: each rank computes the gradient of its
// share of the global-batch loss (docs/crd.md, "Data-parallel training"),
// sync sums the shares, and every rank applies the same update. The losses
// returned are this rank's shares; summed over the ranks they are the
// global batch's. If sync fails, Step returns the error before any optimizer
// of the failing phase moves.
func (t *Trainer) Step(ctx context.Context, b *data.Batch, sync GradSync) (Losses, error) {
	if b == nil {
		return nil, fmt.Errorf("train: step %d: no batch", t.state.Step+1)
	}
	world := 1
	if sync != nil {
		world = sync.World()
	}
	total := b.Total
	if total == 0 {
		total = b.N
	}
	switch {
	case b.N == 0 && world == 1:
		return nil, fmt.Errorf("train: step %d: empty batch", t.state.Step+1)
	case b.N > total || b.Offset < 0 || b.Offset+b.N > total:
		return nil, fmt.Errorf("train: step %d: batch part [%d, %d) of a global batch of %d", t.state.Step+1, b.Offset, b.Offset+b.N, total)
	}
	ss := &stepSync{ctx: ctx, sync: sync, step: uint64(t.state.Step + 1), contributes: b.N > 0}
	part := *b
	part.Total = total
	run := &part
	if b.N == 0 {
		run = placeholder(&part)
	}
	if world > 1 {
		t.tp.SetCollective(ss)
		defer t.tp.SetCollective(nil)
	}
	sh := shareOf(b.N, total)
	var (
		l   Losses
		err error
	)
	switch {
	case t.rec.Mode == Pix2Pix:
		l, err = t.stepPix2Pix(ss, run, &part, sh)
		if t.state.Phase == PhaseStudent {
			t.state.StudentSteps++ // an offline schedule's student phase
		} else {
			t.state.TeacherSteps++
		}
	case t.state.Phase == PhaseStudent:
		l, err = t.stepCycleStudent(ss, run, sh)
		t.state.StudentSteps++
	default:
		l, err = t.stepCycleTeacher(ss, run, &part, sh)
		t.state.TeacherSteps++
	}
	if err != nil {
		return nil, err
	}
	t.state.Step++
	return l, nil
}

// record stores a loss term's value in l, weighted by w (its share).
func (t *Trainer) record(l Losses, name string, v *nn.Var, w float32) {
	l[name] = t.scalar(v) * float64(w)
}

// stepPix2Pix is docs/crd.md §4.1: zero all gradients; T = G_T(a), S = G_S(a);
// every n_dis steps, the D loss on (a, T detached) and (a, b) and the teacher
// loss through the pre-update D; the student loss against T detached (the
// pre-update teacher output). All three gradients come from the same
// pre-update parameters; then each is synchronised and applied.
//
// Without online distillation (schedule.distill, docs/crd.md §11) a
// step of the teacher phase stops before the student (none, offline), and a
// step of an offline schedule's student phase trains only the student,
// against the frozen teacher.
func (t *Trainer) stepPix2Pix(ss *stepSync, b, part *data.Batch, sh share) (Losses, error) {
	tp := t.tp
	tp.Reset()
	n := &t.Nets
	r := t.rec.Loss
	a := t.input(b.A, b)
	real := t.input(b.B, b)
	n.GT.Params().ZeroGrad()
	n.D.Params().ZeroGrad()
	n.S.Params().ZeroGrad()
	n.D.Params().SetRequiresGrad(true)
	defer n.D.Params().SetRequiresGrad(true)

	studentPhase := t.state.Phase == PhaseStudent
	student := t.rec.Schedule.DistillMode() == DistillOnline || studentPhase
	T := n.GT.Forward(tp, a)
	var S *nn.Var
	if student {
		S = n.S.Forward(tp, a)
	}
	losses := Losses{}
	teacher := !studentPhase && (t.state.TeacherSteps+1)%t.rec.Schedule.NDis == 0 // the reference's step counts from 1
	if teacher {
		// D on fakes, then reals: the reference's order (batch norm running
		// statistics update in call order); one batch when D has no batch norm.
		pf, pr := model.PairForward(tp, n.D, nn.Concat(tp, 1, a, nn.Detach(T)), nn.Concat(tp, 1, a, real))
		lossD := nn.Scale(tp, nn.Add(tp, ganFake(tp, t.ganMode, pf), ganReal(tp, t.ganMode, pr)), 0.5*sh.mean)
		tp.Backward(lossD)
		t.record(losses, "D", lossD, 1)

		n.D.Params().SetRequiresGrad(false)
		pg := n.D.Forward(tp, nn.Concat(tp, 1, a, T))
		gan := ganGen(tp, t.ganMode, pg)
		l1 := nn.L1Loss(tp, T, real)
		lossGT := nn.WeightedSum(tp, []*nn.Var{gan, l1}, []float32{float32(r.GAN) * sh.mean, float32(r.Recon) * sh.mean})
		tp.Backward(lossGT)
		t.record(losses, "G_T", lossGT, 1)
		t.record(losses, "G_T_gan", gan, sh.mean)
		t.record(losses, "G_T_L1", l1, sh.mean)
	}
	n.D.Params().SetRequiresGrad(false)
	if student {
		lossS := t.studentLoss(tp, a, S, nn.Detach(T), n.D, true, losses, sh)
		tp.Backward(lossS)
	}

	var phases []phaseOpt
	if teacher {
		phases = append(phases, phaseOpt{"D", t.optD}, phaseOpt{"G_T", t.optGT})
	}
	if student {
		phases = append(phases, phaseOpt{"G_S", t.optS})
	}
	if err := t.syncApply(ss, phases...); err != nil {
		return nil, err
	}
	return losses, nil
}

// studentLoss is docs/crd.md §3: the CRD term of S against the detached teacher
// output T, the VGG style and feature terms when a VGG is loaded, and the GAN
// term through the frozen discriminator d when its weight is > 0
// (conditional on a in pix2pix); plus the recipe's output L1 term, if any
// (not part of CRD: the demo recipes' anchor in place of the VGG terms). The
// CRD term is a per-image sum, the others batch means: sh weights them.
func (t *Trainer) studentLoss(tp *nn.Tape, a, S, T *nn.Var, d interface {
	Forward(*nn.Tape, *nn.Var) *nn.Var
}, conditional bool, losses Losses, sh share) *nn.Var {
	var (
		terms []*nn.Var
		ws    []float32
	)
	if t.crdLoss.terms != 0 { // an ablation may drop the whole term: then it is not computed
		lc := t.crdLoss.forward(tp, S, T, sh.sum != 0)
		terms, ws = append(terms, lc), append(ws, sh.sum)
		t.record(losses, "S_crd", lc, sh.sum)
	}
	if t.vgg != nil && (t.styleW != 0 || t.featureW != 0) {
		style, feature := perceptual(tp, t.vgg, S, T, t.styleW, t.featureW)
		terms, ws = append(terms, style, feature), append(ws, sh.mean, sh.mean)
		t.record(losses, "S_style", style, sh.mean)
		t.record(losses, "S_feature", feature, sh.mean)
	}
	if t.outputL1W > 0 {
		l1 := nn.L1Loss(tp, S, T)
		terms, ws = append(terms, l1), append(ws, t.outputL1W*sh.mean)
		t.record(losses, "S_L1", l1, sh.mean)
	}
	if t.studentGANW > 0 {
		in := S
		if conditional {
			in = nn.Concat(tp, 1, a, S)
		}
		g := ganGen(tp, t.ganMode, d.Forward(tp, in))
		terms, ws = append(terms, g), append(ws, t.studentGANW*sh.mean)
		t.record(losses, "S_gan", g, sh.mean)
	}
	l := nn.WeightedSum(tp, terms, ws)
	t.record(losses, "S", l, 1)
	return l
}

// stepCycleTeacher is one CycleGAN teacher step (docs/crd.md §2, §4.2): with D_A
// and D_B frozen, the generators' loss (GAN + cycle + identity) and an Adam
// step of G_A and G_B; then the discriminators' losses on real images and on
// the image pools' fakes (computed before the generator update) and an Adam
// step of D_A and D_B. The pools see the global batch's fakes (gathered from
// every rank), so every rank holds the same pools as one process would.
func (t *Trainer) stepCycleTeacher(ss *stepSync, b, part *data.Batch, sh share) (Losses, error) {
	tp := t.tp
	tp.Reset()
	n := &t.Nets
	r := t.rec.Loss
	ra, rb := t.input(b.A, b), t.input(b.B, b)
	for _, net := range []interface{ ZeroGrad() }{n.GT.Params(), n.GTB.Params(), n.D.Params(), n.DB.Params()} {
		net.ZeroGrad()
	}
	n.D.Params().SetRequiresGrad(false)
	n.DB.Params().SetRequiresGrad(false)

	fakeB := n.GT.Forward(tp, ra)
	recA := n.GTB.Forward(tp, fakeB)
	fakeA := n.GTB.Forward(tp, rb)
	recB := n.GT.Forward(tp, fakeA)
	idtA := n.GT.Forward(tp, rb)
	idtB := n.GTB.Forward(tp, ra)
	ganA := ganGen(tp, t.ganMode, n.D.Forward(tp, fakeB))
	ganB := ganGen(tp, t.ganMode, n.DB.Forward(tp, fakeA))
	cycA, cycB := nn.L1Loss(tp, recA, ra), nn.L1Loss(tp, recB, rb)
	idA, idB := nn.L1Loss(tp, idtA, rb), nn.L1Loss(tp, idtB, ra)
	lA, lB, li := float32(r.CycleA), float32(r.CycleB), float32(r.Identity)
	m := sh.mean
	lossG := nn.WeightedSum(tp, []*nn.Var{ganA, ganB, cycA, cycB, idA, idB}, []float32{m, m, lA * m, lB * m, lB * li * m, lA * li * m})
	tp.Backward(lossG)
	losses := Losses{}
	t.record(losses, "G", lossG, 1)
	for _, v := range []struct {
		name string
		v    *nn.Var
	}{{"G_A_gan", ganA}, {"G_B_gan", ganB}, {"cycle_A", cycA}, {"cycle_B", cycB}, {"idt_A", idA}, {"idt_B", idB}} {
		t.record(losses, v.name, v.v, m)
	}
	if err := t.syncApply(ss, phaseOpt{"G_A", t.optGT}, phaseOpt{"G_B", t.optGTB}); err != nil {
		return nil, err
	}

	n.D.Params().SetRequiresGrad(true)
	n.DB.Params().SetRequiresGrad(true)
	poolB, err := t.poolFakes(ss, t.poolB, fakeB.Value, part, "pool_B")
	if err != nil {
		return nil, err
	}
	prA, pfA := model.PairForward(tp, n.D, rb, poolB)
	lossDA := nn.Scale(tp, nn.Add(tp, ganReal(tp, t.ganMode, prA), ganFake(tp, t.ganMode, pfA)), 0.5*m)
	tp.Backward(lossDA)
	poolA, err := t.poolFakes(ss, t.poolA, fakeA.Value, part, "pool_A")
	if err != nil {
		return nil, err
	}
	prB, pfB := model.PairForward(tp, n.DB, ra, poolA)
	lossDB := nn.Scale(tp, nn.Add(tp, ganReal(tp, t.ganMode, prB), ganFake(tp, t.ganMode, pfB)), 0.5*m)
	tp.Backward(lossDB)
	t.record(losses, "D_A", lossDA, 1)
	t.record(losses, "D_B", lossDB, 1)
	if err := t.syncApply(ss, phaseOpt{"D_A", t.optD}, phaseOpt{"D_B", t.optDB}); err != nil {
		return nil, err
	}
	return losses, nil
}

// stepCycleStudent is one student step of a CycleGAN round (docs/crd.md §3, §4.2):
// T = best G_A(a), detached; S = G_S(a); the student loss with the GAN term
// through D_A, frozen for the whole round; an Adam step of G_S only.
func (t *Trainer) stepCycleStudent(ss *stepSync, b *data.Batch, sh share) (Losses, error) {
	tp := t.tp
	tp.Reset()
	n := &t.Nets
	a := t.input(b.A, b)
	n.S.Params().ZeroGrad()
	n.GTBest.Params().SetRequiresGrad(false)
	n.D.Params().SetRequiresGrad(false)
	defer n.D.Params().SetRequiresGrad(true)
	T := n.GTBest.Forward(tp, a)
	S := n.S.Forward(tp, a)
	losses := Losses{}
	tp.Backward(t.studentLoss(tp, a, S, nn.Detach(T), n.D, false, losses, sh))
	if err := t.syncApply(ss, phaseOpt{"G_S", t.optS}); err != nil {
		return nil, err
	}
	return losses, nil
}
