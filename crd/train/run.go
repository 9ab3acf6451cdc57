package train

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"go.uber.org/zap"

	"github.com/crdgo/crdgo/crd/data"
)

// Summary is what Run reports at the end.
type Summary struct {
	Steps      int
	Epochs     int
	Checkpoint string
	Eval       *EvalResult
	Skipped    int64 // unreadable images skipped by the loader
}

// trainSet opens the training data of the recipe.
func (t *Trainer) trainSet(ctx context.Context) (*data.Dataset, error) {
	r := t.rec
	dir, err := DatasetDir(t.cfg.DataRoot, r)
	if err != nil {
		return nil, err
	}
	opt := data.Options{LoadSize: r.Data.LoadSize, CropSize: r.Data.CropSize, Flip: r.Data.Flip, Channels: 3,
		BtoA: r.Data.Direction == "BtoA", Compat: data.Compat(r.Compat)}
	if r.Mode == Pix2Pix {
		return data.OpenAligned(ctx, data.Dir(dir), r.Data.Train, opt, t.log)
	}
	return data.OpenUnaligned(ctx, data.Dir(dir), r.Data.TrainA, r.Data.TrainB, opt, t.log)
}

// done reports whether the schedule is complete.
func (t *Trainer) done() bool {
	if t.cfg.MaxSteps > 0 && t.state.Step >= t.cfg.MaxSteps {
		return true
	}
	return t.state.Epoch >= t.rec.Schedule.TotalEpochs() && t.state.Phase == PhaseTeacher
}

// plannedSteps estimates the run's steps, for the progress bar.
func (t *Trainer) plannedSteps(n int) int {
	s := t.rec.Schedule
	per := (n + s.Batch - 1) / s.Batch
	total := per * s.TotalEpochs()
	if t.rec.Mode == CycleGAN {
		rounds := s.TotalEpochs() / s.SaveEpochFreq
		if s.TotalEpochs()%s.SaveEpochFreq != 0 {
			rounds++
		}
		total += rounds * s.NDis * s.SaveEpochFreq * n
	}
	if t.cfg.MaxSteps > 0 {
		total = min(total, t.cfg.MaxSteps)
	}
	return total
}

// Run trains until the recipe's schedule (or Config.MaxSteps) is done,
// logging metrics, drawing samples and the loss curve, evaluating and
// checkpointing as configured. sync is the data-parallel hook (nil in one
// process). Cancelling ctx saves a checkpoint and returns ctx's error.
func (t *Trainer) Run(ctx context.Context, sync GradSync, progress io.Writer) (Summary, error) {
	if t.done() {
		return t.alreadyDone(), nil
	}
	cfg, r := t.cfg, t.rec
	ds, err := t.trainSet(ctx)
	if err != nil {
		return Summary{}, err
	}
	loader, err := data.NewLoader(ds, data.LoaderConfig{Seed: r.Seed, BatchSize: r.Schedule.Batch, Shuffle: true, Workers: cfg.Workers}, t.log)
	if err != nil {
		return Summary{}, err
	}
	defer loader.Close()
	if err := loader.Seek(t.state.Cursor); err != nil {
		return Summary{}, err
	}
	var sloader *data.Loader
	if r.Mode == CycleGAN {
		sloader, err = data.NewLoader(ds, data.LoaderConfig{Seed: r.Seed + 1, BatchSize: r.Schedule.Batch, Shuffle: true, Workers: cfg.Workers}, t.log)
		if err != nil {
			return Summary{}, err
		}
		defer sloader.Close()
		if err := sloader.Seek(t.state.StudentCursor); err != nil {
			return Summary{}, err
		}
	}
	val, err := OpenEvalSet(ctx, cfg.DataRoot, r, t.log)
	if err != nil {
		return Summary{}, err
	}
	ev, err := t.newEvaluator(ctx, val)
	if err != nil {
		return Summary{}, err
	}
	var samples []data.Example
	for i := 0; i < min(4, val.Len()); i++ {
		ex, err := val.Example(ctx, 0, 0, i)
		if err != nil {
			return Summary{}, err
		}
		samples = append(samples, ex)
	}
	rep, err := openReporter(cfg.OutDir, t.state.Step)
	if err != nil {
		return Summary{}, err
	}
	defer rep.close()
	ckDir := filepath.Join(cfg.OutDir, "checkpoints")
	logEvery, sampleEvery, ckEvery := or(cfg.LogEvery, 10), or(cfg.SampleEvery, 200), or(cfg.CheckpointEvery, r.Schedule.SaveLatestFreq)
	keep := or(cfg.KeepCheckpoints, 3)

	planned := t.plannedSteps(ds.Len())
	var bar *progressbar.ProgressBar
	if progress != nil {
		bar = progressbar.NewOptions(planned, progressbar.OptionSetWriter(progress), progressbar.OptionShowCount(),
			progressbar.OptionSetPredictTime(true), progressbar.OptionShowElapsedTimeOnFinish(), progressbar.OptionFullWidth(),
			progressbar.OptionThrottle(200*time.Millisecond), progressbar.OptionSetRenderBlankState(true))
		bar.Set(min(t.state.Step, planned))
	}
	t.log.Info("training", zap.String("recipe", r.Name), zap.String("mode", string(r.Mode)), zap.Int("examples", ds.Len()),
		zap.Int("planned_steps", planned), zap.Int("from_step", t.state.Step), zap.Bool("perceptual", t.vgg != nil),
		zap.Bool("fid", ev.inception != nil), zap.String("out", cfg.OutDir))

	lastCk := ""
	saveCk := func() error {
		dir, err := t.SaveCheckpoint(ckDir)
		if err != nil {
			return err
		}
		lastCk = dir
		t.pruneCheckpoints(ckDir, keep)
		t.log.Debug("checkpoint", zap.String("dir", dir), zap.Int("step", t.state.Step))
		return nil
	}
	var lastEval *EvalResult
	evaluate := func(what string) error {
		teacher, student := t.Nets.GT, t.Nets.S
		if what == "student" {
			teacher = nil
		}
		res, err := ev.Evaluate(ctx, teacher, student)
		if err != nil {
			return err
		}
		lastEval = &res
		t.logEval(res)
		if !math.IsNaN(res.Teacher.FID) && (t.state.BestTeacher == 0 || res.Teacher.FID < t.state.BestTeacher) {
			t.state.BestTeacher = res.Teacher.FID
			if t.Nets.GTBest != nil {
				if err := t.Nets.GTBest.Params().CopyFrom(t.Nets.GT.Params()); err != nil {
					return err
				}
			}
		}
		if !math.IsNaN(res.Student.FID) && (t.state.BestStudent == 0 || res.Student.FID < t.state.BestStudent) {
			t.state.BestStudent = res.Student.FID
			if err := t.Nets.S.Params().Save(filepath.Join(cfg.OutDir, "best_student_G.safetensors"),
				map[string]string{"recipe": r.Name, "fid": fmt.Sprint(res.Student.FID), "step": fmt.Sprint(t.state.Step)}); err != nil {
				return err
			}
		}
		return rep.log(MetricsLine{Step: t.state.Step, Epoch: t.state.Epoch, Phase: t.state.Phase, Eval: &res})
	}
	draw := func() error {
		if err := sampleGrid(filepath.Join(cfg.OutDir, "samples", fmt.Sprintf("step-%08d.png", t.state.Step)), t.tp, t.Nets.GT, t.Nets.S, samples); err != nil {
			return fmt.Errorf("samples: %w", err)
		}
		if err := sampleGrid(filepath.Join(cfg.OutDir, "samples", "latest.png"), t.tp, t.Nets.GT, t.Nets.S, samples); err != nil {
			return fmt.Errorf("samples: %w", err)
		}
		return rep.plotLosses(fmt.Sprintf("crdgo %s", r.Name))
	}

	startStep := t.state.Step
	for !t.done() {
		if err := ctx.Err(); err != nil {
			if t.state.Step > startStep {
				if err := saveCk(); err != nil {
					return Summary{}, err
				}
			}
			return Summary{Steps: t.state.Step, Epochs: t.state.Epoch, Checkpoint: lastCk}, err
		}
		l := loader
		if t.state.Phase == PhaseStudent {
			l = sloader
		}
		b, err := l.Next(ctx)
		if errors.Is(err, data.ErrEpochEnd) {
			if err := t.endEpoch(l, evaluate, saveCk); err != nil {
				return Summary{}, err
			}
			continue
		}
		if err != nil {
			if ctx.Err() != nil {
				continue // handled at the top of the loop
			}
			return Summary{}, fmt.Errorf("train: step %d: %w", t.state.Step+1, err)
		}
		if r.Mode == Pix2Pix {
			t.setLR(t.state.Epoch+1, t.state.Epoch+1)
		} else {
			t.setLR(t.state.Epoch+1, t.state.Epoch)
		}
		losses, err := t.Step(ctx, &b, sync)
		if err != nil {
			return Summary{}, err
		}
		if t.state.Phase == PhaseStudent {
			t.state.StudentCursor = l.Cursor()
		} else {
			t.state.Cursor = l.Cursor()
		}
		if bar != nil {
			bar.Describe(describe(t.state, losses))
			bar.Add(1)
		}
		if t.state.Step%logEvery == 0 {
			if err := rep.log(MetricsLine{Step: t.state.Step, Epoch: t.state.Epoch, Phase: t.state.Phase, LR: float64(t.optS.LR), Losses: losses}); err != nil {
				return Summary{}, err
			}
		}
		if t.state.Step%sampleEvery == 0 {
			if err := draw(); err != nil {
				return Summary{}, err
			}
		}
		if t.state.Step%ckEvery == 0 {
			if err := saveCk(); err != nil {
				return Summary{}, err
			}
		}
	}
	if bar != nil {
		bar.Finish()
	}
	if lastEval == nil || lastEval.Images == 0 || t.cfg.MaxSteps > 0 {
		if err := evaluate("all"); err != nil {
			return Summary{}, err
		}
	}
	if err := draw(); err != nil {
		return Summary{}, err
	}
	if lastCk == "" || !strings.HasSuffix(lastCk, fmt.Sprintf("step-%08d", t.state.Step)) {
		if err := saveCk(); err != nil {
			return Summary{}, err
		}
	}
	st := loader.Stats()
	if st.Skipped > 0 {
		t.log.Warn("unreadable training images were skipped", zap.Int64("count", st.Skipped))
	}
	return Summary{Steps: t.state.Step, Epochs: t.state.Epoch, Checkpoint: lastCk, Eval: lastEval, Skipped: st.Skipped}, nil
}

func or(v, def int) int {
	if v > 0 {
		return v
	}
	return def
}

// endEpoch handles the end of a loader epoch: the schedule's evaluations,
// checkpoints and, in CycleGAN, the switches between teacher epochs and
// student rounds (CRD.md §4.2).
func (t *Trainer) endEpoch(l *data.Loader, evaluate func(string) error, saveCk func() error) error {
	s := t.rec.Schedule
	total := s.TotalEpochs()
	if t.rec.Mode == Pix2Pix {
		t.state.Epoch++
		t.state.Cursor = l.Cursor()
		if t.state.Epoch%s.SaveEpochFreq == 0 || t.state.Epoch == total {
			if err := evaluate("all"); err != nil {
				return err
			}
			return saveCk()
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
		if err := evaluate("all"); err != nil {
			return err
		}
		if math.IsNaN(t.state.BestTeacher) || t.state.BestTeacher == 0 {
			if err := t.Nets.GTBest.Params().CopyFrom(t.Nets.GT.Params()); err != nil {
				return err
			}
		}
		t.state.Phase, t.state.RoundEpochs = PhaseStudent, 0
		return saveCk()
	}
	t.state.StudentEpochs++
	t.state.RoundEpochs++
	t.state.StudentCursor = l.Cursor()
	roundLen := s.NDis * s.SaveEpochFreq
	if t.state.StudentEpochs%s.SaveEpochFreq == 0 || t.state.RoundEpochs == roundLen {
		if err := evaluate("student"); err != nil {
			return err
		}
	}
	if t.state.RoundEpochs == roundLen {
		t.state.Phase = PhaseTeacher
		return saveCk()
	}
	return nil
}

func (t *Trainer) logEval(res EvalResult) {
	f := func(s Scores) []zap.Field {
		var out []zap.Field
		for _, kv := range []struct {
			k string
			v float64
		}{{"fid", s.FID}, {"kid", s.KID}, {"psnr", s.PSNR}, {"ssim", s.SSIM}, {"l1", s.L1}} {
			if !math.IsNaN(kv.v) {
				out = append(out, zap.Float64(kv.k, kv.v))
			}
		}
		return out
	}
	fields := []zap.Field{zap.Int("step", t.state.Step), zap.Int("epoch", t.state.Epoch), zap.Int("images", res.Images)}
	fields = append(fields, zap.Dict("teacher", f(res.Teacher)...), zap.Dict("student", f(res.Student)...))
	t.log.Info("evaluation", fields...)
}

func describe(s State, l Losses) string {
	keys := make([]string, 0, len(l))
	for k := range l {
		if !strings.Contains(k, "_") || k == "S_crd" || k == "G_T" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
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

// newEvaluator builds the run's evaluator (FID only with Inception weights).
func (t *Trainer) newEvaluator(ctx context.Context, val *data.Dataset) (*Evaluator, error) {
	stats := t.cfg.RealStats
	if stats == "" && t.rec.Eval.RealStats != "" && t.inception != nil {
		if dir, err := DatasetDir(t.cfg.DataRoot, t.rec); err == nil {
			for _, p := range []string{filepath.Join(dir, t.rec.Eval.RealStats), filepath.Join(t.cfg.DataRoot, t.rec.Eval.RealStats)} {
				if _, err := os.Stat(p); err == nil {
					stats = p
					break
				}
			}
		}
		if stats == "" {
			t.log.Warn("real statistics file not found: computing them from the evaluation images",
				zap.String("file", t.rec.Eval.RealStats))
		}
	}
	return NewEvaluator(ctx, t.be, val, t.rec, t.inception, stats, t.log)
}
