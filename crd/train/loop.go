package train

import (
	"context"
	"errors"
	"fmt"
	"image"
	"math"
	"slices"
	"sort"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/crdgo/crdgo/crd/data"
)

// Output is where a run's results go: metrics, sample grids, checkpoints,
// the best student. Rank 0 of a data-parallel run has one; the other ranks
// have none. RunFolder is the implementation on local disk.
//
// The step loop decides when (Config's LogEvery, SampleEvery,
// CheckpointEvery, and the schedule's evaluations); an Output decides how and
// where. Its methods are called from the loop's goroutine only.
type Output interface {
	// Begin is called once before the first step: the run continues from step
	// from (a resumed run drops what was recorded after it) and plans planned
	// steps in all.
	Begin(t *Trainer, from, planned int) error
	// Step is called after every step with the global batch's losses.
	Step(s State, l Losses)
	// Log records a metrics line (losses, or an evaluation).
	Log(m MetricsLine) error
	// Samples records the sample grid (input | teacher | student | target) of
	// a step, and whatever plots go with it.
	Samples(step int, grid image.Image) error
	// Checkpoint saves t's whole state and says where it went.
	Checkpoint(t *Trainer) (string, error)
	// BestStudent saves t's student as the best so far (by FID).
	BestStudent(t *Trainer, fid float64) error
	// End is called once when the loop stops, whatever the reason.
	End() error
}

// RunOptions are one rank's part in a run. The zero value is one process that
// writes nothing.
type RunOptions struct {
	// Sync combines the ranks' values (nil in one process). Its World and Rank
	// choose the part of every global batch this rank loads.
	Sync GradSync
	// Output receives the run's results; give rank 0 one and the others nil.
	Output Output
	// BeforeStep, when set, is called on every rank with its part of the
	// global batch just before the step that trains on it. OnStep is called
	// after every step (a node reports the step; tests compare ranks). An
	// error from either stops the run.
	BeforeStep func(b *data.Batch) error
	OnStep     func(StepInfo) error
}

// StepInfo describes a step just taken, for RunOptions.OnStep.
type StepInfo struct {
	State  State  // after the step
	Losses Losses // the global batch's losses (summed over the ranks)
	// Share is this rank's share of them: its part of the global-batch loss
	// (docs/crd.md §10), which summed over the ranks gives Losses. In one
	// process it is Losses.
	Share    Losses
	Examples int // examples in the global batch
	// Took is the whole step: waiting for data, computing, synchronising.
	// Sync is the time spent in collective operations (waiting for slower
	// ranks included), Data the time spent waiting for the loader.
	Took, Sync, Data time.Duration
}

// timedSync adds up the time spent in a GradSync's operations.
type timedSync struct {
	GradSync
	spent time.Duration
}

func (s *timedSync) SumInPlace(ctx context.Context, step uint64, phase string, buf []float32) error {
	start := time.Now()
	err := s.GradSync.SumInPlace(ctx, step, phase, buf)
	s.spent += time.Since(start)
	return err
}

// Run trains until the recipe's schedule (or Config.MaxSteps) is done:
// every step on this rank's part of the step's global batch, with the
// schedule's evaluations and checkpoints.
//
// Data-parallel: every rank calls Run with the same Config, its own Sync
// handle and the same starting state (a fresh trainer, or the same
// checkpoint). Every rank evaluates its part of the evaluation images and the
// ranks gather the per-image results, so the scores and the schedule's
// decisions (the best teacher, the best student) are the same on every rank;
// rank 0's Output writes.
//
// Cancelling ctx asks the run to stop: in one process at once, with a
// checkpoint if any step was taken; with several ranks after the first step
// at which every rank knows of the request (the step's losses carry it), so
// all ranks stop after the same step and rank 0 saves it. Run then returns
// ctx's error. Collective operations are not cancelled by ctx: every wait in
// them has the deadline of the Sync itself.
func (t *Trainer) Run(ctx context.Context, opt RunOptions) (Summary, error) {
	if t.done() {
		// A finished run stays as it is: no new checkpoint, no second evaluation.
		return t.alreadyDone(), nil
	}
	cfg, r := t.cfg, t.rec
	world, rank := 1, 0
	if opt.Sync != nil {
		world, rank = opt.Sync.World(), opt.Sync.Rank()
	}
	opCtx := context.WithoutCancel(ctx) // steps and collectives: finished, not cut
	var timed *timedSync
	if opt.Sync != nil {
		timed = &timedSync{GradSync: opt.Sync}
		opt.Sync = timed
	}
	ds, err := t.trainSet(ctx)
	if err != nil {
		return Summary{}, err
	}
	t.setOfflineCaps(ds.Len())
	lcfg := data.LoaderConfig{Seed: r.Seed, BatchSize: r.Schedule.Batch, Shuffle: true, Workers: cfg.Workers, World: world, Rank: rank}
	loader, err := data.NewLoader(ds, lcfg, t.log)
	if err != nil {
		return Summary{}, err
	}
	defer loader.Close()
	if err := loader.Seek(t.state.Cursor); err != nil {
		return Summary{}, err
	}
	var sloader *data.Loader
	if r.Mode == CycleGAN || r.Schedule.DistillMode() == DistillOffline {
		// CycleGAN's student loader has its own order (seed + 1, §4.2); an
		// offline pix2pix student sees the batches in the order the online
		// student would have seen them: the teacher's.
		if r.Mode == CycleGAN {
			lcfg.Seed = r.Seed + 1
		}
		if sloader, err = data.NewLoader(ds, lcfg, t.log); err != nil {
			return Summary{}, err
		}
		defer sloader.Close()
		if err := sloader.Seek(t.state.StudentCursor); err != nil {
			return Summary{}, err
		}
	}
	lp := &loop{t: t, opt: opt, world: world, rank: rank, ctx: opCtx, ckStep: -1}
	src, err := t.datasetSource(ctx)
	if err != nil {
		return Summary{}, err
	}
	val, err := OpenEvalSet(ctx, src, r, t.log)
	if err != nil {
		return Summary{}, err
	}
	if lp.ev, err = t.newEvaluator(ctx, val); err != nil {
		return Summary{}, err
	}
	if world > 1 {
		lp.ev.group = &evalGroup{ctx: opCtx, sync: opt.Sync, step: func() uint64 { return uint64(t.state.Step) }}
	}
	if rank == 0 {
		for i := 0; i < min(4, val.Len()); i++ {
			ex, err := val.Example(ctx, 0, 0, i)
			if err != nil {
				return Summary{}, err
			}
			lp.samples = append(lp.samples, ex)
		}
	}
	out := opt.Output
	planned := t.plannedSteps(ds.Len())
	if out != nil {
		if err := out.Begin(t, t.state.Step, planned); err != nil {
			return Summary{}, err
		}
		defer out.End()
	}
	t.log.Info("training", zap.String("recipe", r.Name), zap.String("mode", string(r.Mode)), zap.Int("examples", ds.Len()),
		zap.Int("global_batch", r.Schedule.Batch), zap.Int("world", world),
		zap.Int("planned_steps", planned), zap.Int("from_step", t.state.Step), zap.Bool("perceptual", t.vgg != nil),
		zap.Bool("fid", lp.ev.inception != nil), zap.String("out", cfg.OutDir))

	logEvery, sampleEvery, ckEvery := or(cfg.LogEvery, 10), or(cfg.SampleEvery, 200), or(cfg.CheckpointEvery, r.Schedule.SaveLatestFreq)
	startStep := t.state.Step
	for !t.done() {
		if world == 1 && ctx.Err() != nil {
			return lp.interrupted(ctx, startStep, loader)
		}
		l := loader
		if t.state.Phase == PhaseStudent {
			l = sloader
		}
		stepStart := time.Now()
		if timed != nil {
			timed.spent = 0
		}
		b, err := l.Next(opCtx)
		dataTime := time.Since(stepStart)
		if errors.Is(err, data.ErrEpochEnd) {
			if err := lp.endEpoch(l); err != nil {
				return Summary{}, err
			}
			continue
		}
		if err != nil {
			return Summary{}, fmt.Errorf("train: step %d: %w", t.state.Step+1, err)
		}
		switch {
		case r.Mode == Pix2Pix && t.state.Phase == PhaseStudent: // offline: the student's own epochs
			t.setLR(t.state.Epoch, t.state.RoundEpochs+1)
		case r.Mode == Pix2Pix:
			t.setLR(t.state.Epoch+1, t.state.Epoch+1)
		case t.state.Phase == PhaseStudent && r.Schedule.DistillMode() == DistillOffline:
			// The rate of the online round the student epoch belongs to.
			t.setLR(t.state.Epoch, r.Schedule.roundEpoch(t.state.RoundEpochs/(r.Schedule.NDis*r.Schedule.SaveEpochFreq)))
		default:
			t.setLR(t.state.Epoch+1, t.state.Epoch)
		}
		if opt.BeforeStep != nil {
			if err := opt.BeforeStep(&b); err != nil {
				return Summary{}, fmt.Errorf("train: step %d: %w", t.state.Step+1, err)
			}
		}
		losses, err := t.Step(opCtx, &b, opt.Sync)
		if err != nil {
			return Summary{}, err
		}
		if t.state.Phase == PhaseStudent {
			t.state.StudentCursor = l.Cursor()
		} else {
			t.state.Cursor = l.Cursor()
		}
		stop, share := false, losses
		if world > 1 {
			if losses, stop, err = lp.agree(losses, ctx.Err() != nil); err != nil {
				return Summary{}, err
			}
		}
		if opt.OnStep != nil {
			info := StepInfo{State: t.state, Losses: losses, Share: share, Examples: b.Total, Took: time.Since(stepStart), Data: dataTime}
			if timed != nil {
				info.Sync = timed.spent
			}
			if err := opt.OnStep(info); err != nil {
				return Summary{}, fmt.Errorf("train: step %d: %w", t.state.Step, err)
			}
		}
		if out != nil {
			out.Step(t.state, losses)
			if t.state.Step%logEvery == 0 {
				if err := out.Log(MetricsLine{Step: t.state.Step, Epoch: t.state.Epoch, Phase: t.state.Phase, LR: float64(t.optS.LR), Losses: losses}); err != nil {
					return Summary{}, err
				}
			}
		}
		capT, _ := t.offlineCaps()
		switchDue := r.Schedule.DistillMode() == DistillOffline && t.state.Phase == PhaseTeacher && cfg.MaxSteps > 0 && t.state.TeacherSteps >= capT
		// The last step, and the end of an offline teacher phase, are evaluated below.
		if cfg.EvalEvery > 0 && t.state.Step%cfg.EvalEvery == 0 && !t.done() && !switchDue {
			if err := lp.evaluatePeriodic(); err != nil {
				return Summary{}, err
			}
		}
		if t.state.Step%sampleEvery == 0 {
			if err := lp.draw(); err != nil {
				return Summary{}, err
			}
		}
		if stop {
			return lp.interrupted(ctx, startStep, loader)
		}
		if t.state.Step%ckEvery == 0 {
			if err := lp.checkpoint(); err != nil {
				return Summary{}, err
			}
		}
		if switchDue {
			// MaxSteps caps each phase of an offline schedule (Trainer.done).
			if err := lp.evaluate("teacher"); err != nil {
				return Summary{}, err
			}
			if err := lp.toStudent(); err != nil {
				return Summary{}, err
			}
		}
	}
	if lp.last == nil || lp.last.Images == 0 || cfg.MaxSteps > 0 {
		what := "all"
		if r.Schedule.DistillMode() == DistillNone {
			what = "teacher" // there is no student
		}
		if err := lp.evaluate(what); err != nil {
			return Summary{}, err
		}
	}
	if err := lp.draw(); err != nil {
		return Summary{}, err
	}
	if lp.ckStep != t.state.Step {
		if err := lp.checkpoint(); err != nil {
			return Summary{}, err
		}
	}
	sum := lp.summary(loader)
	if sum.Skipped > 0 {
		t.log.Warn("unreadable training images were replaced by the next readable ones", zap.Int64("count", sum.Skipped))
	}
	return sum, nil
}

// loop is the state of one Run beyond the trainer's own.
type loop struct {
	t           *Trainer
	opt         RunOptions
	world, rank int
	ctx         context.Context // for collective operations: never cancelled

	ev      *Evaluator
	samples []data.Example // rank 0 only: the sample grid's rows
	last    *EvalResult
	ck      string // the newest checkpoint this run wrote
	ckStep  int    // its step (-1: none)
}

func or(v, def int) int {
	if v > 0 {
		return v
	}
	return def
}

func (lp *loop) summary(l *data.Loader) Summary {
	t := lp.t
	return Summary{Steps: t.state.Step, Epochs: t.state.Epoch, Checkpoint: lp.ck, Eval: lp.last, Skipped: l.Stats().Skipped}
}

// interrupted ends a run that was asked to stop: a checkpoint of the last
// step, if this run took any, then ctx's error.
func (lp *loop) interrupted(ctx context.Context, startStep int, l *data.Loader) (Summary, error) {
	if lp.t.state.Step > startStep && lp.ckStep != lp.t.state.Step {
		if err := lp.checkpoint(); err != nil {
			return Summary{}, err
		}
	}
	return lp.summary(l), ctx.Err()
}

// agree sums the ranks' loss shares into the global batch's losses, and
// whether any rank was asked to stop, in one collective operation at the end
// of every step. Every rank takes the same step, so the loss names are the
// same on every rank; they are sent in sorted order.
func (lp *loop) agree(l Losses, stop bool) (Losses, bool, error) {
	t := lp.t
	keys := make([]string, 0, len(l))
	for k := range l {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	buf := make([]float32, 1+len(keys))
	if stop {
		buf[0] = 1
	}
	for i, k := range keys {
		buf[1+i] = float32(l[k])
	}
	if err := lp.opt.Sync.SumInPlace(lp.ctx, uint64(t.state.Step), "losses", buf); err != nil {
		return nil, false, fmt.Errorf("train: step %d: losses across %d ranks: %w", t.state.Step, lp.world, err)
	}
	g := make(Losses, len(keys))
	for i, k := range keys {
		g[k] = float64(buf[1+i])
	}
	return g, buf[0] > 0, nil
}

// checkpoint saves the trainer's state through rank 0's Output.
func (lp *loop) checkpoint() error {
	lp.ckStep = lp.t.state.Step
	if lp.opt.Output == nil {
		return nil
	}
	dir, err := lp.opt.Output.Checkpoint(lp.t)
	if err != nil {
		return err
	}
	lp.ck = dir
	return nil
}

// draw records the sample grid through rank 0's Output.
func (lp *loop) draw() error {
	if lp.opt.Output == nil || len(lp.samples) == 0 {
		return nil
	}
	t := lp.t
	grid := sampleGrid(t.tp, t.Nets.GT, t.Nets.S, lp.samples)
	if err := lp.opt.Output.Samples(t.state.Step, grid); err != nil {
		return fmt.Errorf("train: samples at step %d: %w", t.state.Step, err)
	}
	return nil
}

// evaluate scores the teacher (unless what is "student") and the student
// (unless what is "teacher").
// Every rank evaluates its part of the images and the ranks gather the
// per-image results, so every rank gets the same scores — the ones one
// process would get — and takes the same decisions: the best teacher (the
// teacher of CycleGAN's student rounds) and the best student.
func (lp *loop) evaluate(what string) error {
	return lp.score(what, true)
}

// evaluatePeriodic is Config.EvalEvery's evaluation: the networks the run is
// training now (the teacher, the student, or both), and no decision.
func (lp *loop) evaluatePeriodic() error {
	t := lp.t
	what := "all"
	switch {
	case t.rec.Schedule.DistillMode() == DistillNone:
		what = "teacher"
	case t.state.Phase == PhaseStudent:
		what = "student"
	case t.rec.Schedule.DistillMode() == DistillOffline:
		what = "teacher" // the student has not started
	}
	return lp.score(what, false)
}

// score evaluates; with decide it may also make G_A the best teacher.
func (lp *loop) score(what string, decide bool) error {
	t := lp.t
	teacher, student := t.Nets.GT, t.Nets.S
	switch what {
	case "student":
		teacher = nil
	case "teacher":
		student = nil
	}
	res, err := lp.ev.Evaluate(lp.ctx, teacher, student)
	if err != nil {
		return fmt.Errorf("train: step %d: %w", t.state.Step, err)
	}
	lp.last = &res
	if lp.rank == 0 {
		t.logEval(res)
	}
	if f := res.Teacher.FID; decide && !math.IsNaN(f) && (t.state.BestTeacher == 0 || f < t.state.BestTeacher) {
		t.state.BestTeacher = f
		if t.Nets.GTBest != nil {
			if err := t.Nets.GTBest.Params().CopyFrom(t.Nets.GT.Params()); err != nil {
				return err
			}
		}
	}
	if f := res.Student.FID; !math.IsNaN(f) && (t.state.BestStudent == 0 || f < t.state.BestStudent) {
		t.state.BestStudent = f
		if out := lp.opt.Output; out != nil {
			if err := out.BestStudent(t, f); err != nil {
				return err
			}
		}
	}
	if out := lp.opt.Output; out != nil {
		return out.Log(MetricsLine{Step: t.state.Step, Epoch: t.state.Epoch, Phase: t.state.Phase, Eval: &res})
	}
	return nil
}

// endEpoch handles the end of a loader epoch: the schedule's evaluations,
// checkpoints and, in CycleGAN, the switches between teacher epochs and
// student rounds (docs/crd.md §4.2).
func (lp *loop) endEpoch(l *data.Loader) error {
	t := lp.t
	s := t.rec.Schedule
	total := s.TotalEpochs()
	distill := s.DistillMode()
	if t.rec.Mode == Pix2Pix {
		if t.state.Phase == PhaseStudent { // an offline schedule's student epochs
			t.state.StudentEpochs++
			t.state.RoundEpochs++
			t.state.StudentCursor = l.Cursor()
			if t.state.RoundEpochs%s.SaveEpochFreq == 0 || t.state.RoundEpochs == total {
				if err := lp.evaluate("student"); err != nil {
					return err
				}
				return lp.checkpoint()
			}
			return nil
		}
		t.state.Epoch++
		t.state.Cursor = l.Cursor()
		if t.state.Epoch%s.SaveEpochFreq == 0 || t.state.Epoch == total {
			what := "all"
			if distill != DistillOnline {
				what = "teacher" // no student yet (offline), or none
			}
			if err := lp.evaluate(what); err != nil {
				return err
			}
			if distill == DistillOffline && t.state.Epoch == total {
				return lp.toStudent()
			}
			return lp.checkpoint()
		}
		return nil
	}
	if t.state.Phase == PhaseTeacher {
		t.state.Epoch++
		t.state.Cursor = l.Cursor()
		if t.state.Epoch%s.SaveEpochFreq != 0 && t.state.Epoch != total {
			return nil
		}
		// Evaluate the teacher (a better FID makes G_A the best teacher);
		// without FID the latest G_A teaches the round (said once, at start).
		// The reference scores only the teacher here: a student not yet
		// trained in this round must not become the best student.
		if err := lp.evaluate("teacher"); err != nil {
			return err
		}
		if math.IsNaN(t.state.BestTeacher) || t.state.BestTeacher == 0 {
			if err := t.Nets.GTBest.Params().CopyFrom(t.Nets.GT.Params()); err != nil {
				return err
			}
		}
		switch {
		case distill == DistillNone, distill == DistillOffline && t.state.Epoch < total:
			return lp.checkpoint() // no round: the teacher trains on
		case distill == DistillOffline:
			return lp.toStudent()
		}
		t.state.Phase, t.state.RoundEpochs = PhaseStudent, 0
		return lp.checkpoint()
	}
	t.state.StudentEpochs++
	t.state.RoundEpochs++
	t.state.StudentCursor = l.Cursor()
	roundLen := s.NDis * s.SaveEpochFreq
	if distill == DistillOffline {
		roundLen = t.offlineStudentEpochs() // one round, at the end
	}
	if t.state.StudentEpochs%s.SaveEpochFreq == 0 || t.state.RoundEpochs == roundLen {
		if err := lp.evaluate("student"); err != nil {
			return err
		}
	}
	if t.state.RoundEpochs == roundLen {
		if distill != DistillOffline { // offline: done (Trainer.done)
			t.state.Phase = PhaseTeacher
		}
		return lp.checkpoint()
	}
	return nil
}

// toStudent ends an offline schedule's teacher phase: from now on the
// student trains against the frozen teacher — pix2pix's final G_T, CycleGAN's
// best G_A (by FID; the final one without FID), as in a student round.
func (lp *loop) toStudent() error {
	t := lp.t
	if t.Nets.GTBest != nil && (math.IsNaN(t.state.BestTeacher) || t.state.BestTeacher == 0) {
		if err := t.Nets.GTBest.Params().CopyFrom(t.Nets.GT.Params()); err != nil {
			return err
		}
	}
	t.state.Phase, t.state.RoundEpochs = PhaseStudent, 0
	t.log.Info("offline schedule: the teacher is trained; the student starts", zap.Int("step", t.state.Step),
		zap.Int("teacher_steps", t.state.TeacherSteps))
	return lp.checkpoint()
}

func (t *Trainer) logEval(res EvalResult) {
	f := func(s Scores) []zap.Field {
		var out []zap.Field
		m := s.Measured()
		for _, k := range ScoreNames {
			if v, ok := m[k]; ok && k != "kid_std" {
				out = append(out, zap.Float64(k, v))
			}
		}
		return out
	}
	fields := []zap.Field{zap.Int("step", t.state.Step), zap.Int("epoch", t.state.Epoch), zap.Int("images", res.Images)}
	fields = append(fields, zap.Dict("teacher", f(res.Teacher)...), zap.Dict("student", f(res.Student)...))
	t.log.Info("evaluation", fields...)
}

// describe is the progress bar's text: the epoch and the main losses.
func describe(s State, l Losses) string {
	keys := make([]string, 0, len(l))
	for k := range l {
		if !strings.Contains(k, "_") || k == "S_crd" || k == "G_T" {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	var b strings.Builder
	fmt.Fprintf(&b, "ep %d", s.Epoch+1)
	if s.Phase == PhaseStudent {
		fmt.Fprintf(&b, " student round")
	}
	for _, k := range keys {
		fmt.Fprintf(&b, " %s %.3g", k, l[k])
	}
	return b.String()
}
