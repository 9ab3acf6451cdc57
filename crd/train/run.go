package train

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

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

// datasetSource is the recipe's dataset folder: under Config.Data when it is
// set, else under DataRoot on local disk.
func (t *Trainer) datasetSource(ctx context.Context) (data.Source, error) {
	if t.cfg.Data != nil {
		return FindDataset(ctx, t.cfg.Data, t.rec)
	}
	return LocalDataset(t.cfg.DataRoot, t.rec)
}

// LocalDataset is the recipe's dataset folder under root on local disk (its
// name or an alias; see DatasetDir).
func LocalDataset(root string, r Recipe) (data.Source, error) {
	dir, err := DatasetDir(root, r)
	if err != nil {
		return nil, err
	}
	return data.Dir(dir), nil
}

// FindDataset returns the recipe's dataset folder under root, a Source that
// holds one folder per dataset: the first of the dataset's name and aliases
// whose first training split has files. (An object store has no folders to
// look for, only keys.)
func FindDataset(ctx context.Context, root data.Source, r Recipe) (data.Source, error) {
	split := r.Data.Train
	if r.Mode == CycleGAN {
		split = r.Data.TrainA
	}
	for _, name := range append([]string{r.Data.Dataset}, r.Data.Aliases...) {
		keys, err := root.List(ctx, name+"/"+split)
		if err != nil {
			return nil, fmt.Errorf("dataset %q: %w", r.Data.Dataset, err)
		}
		if len(keys) > 0 {
			return data.Sub(root, name), nil
		}
	}
	return nil, fmt.Errorf("dataset %q not found in %s: no files under %s/%s (push it with crdgo data push)", r.Data.Dataset, root, r.Data.Dataset, split)
}

// trainSet opens the training data of the recipe.
func (t *Trainer) trainSet(ctx context.Context) (*data.Dataset, error) {
	r := t.rec
	src, err := t.datasetSource(ctx)
	if err != nil {
		return nil, err
	}
	opt := data.Options{LoadSize: r.Data.LoadSize, CropSize: r.Data.CropSize, Flip: r.Data.Flip, Channels: 3,
		BtoA: r.Data.Direction == "BtoA", Compat: data.Compat(r.Compat)}
	if r.Mode == Pix2Pix {
		return data.OpenAligned(ctx, src, r.Data.Train, opt, t.log)
	}
	return data.OpenUnaligned(ctx, src, r.Data.TrainA, r.Data.TrainB, opt, t.log)
}

// done reports whether the schedule is complete. An offline schedule
// (docs/crd.md §11) is complete after its student phase. With
// MaxSteps it takes as many teacher steps, and then as many student steps,
// as the online schedule takes in its first MaxSteps steps (offlineCaps), so
// that each network is updated as often as in the online run.
func (t *Trainer) done() bool {
	if t.rec.Schedule.DistillMode() == DistillOffline {
		if t.state.Phase != PhaseStudent {
			return false
		}
		if _, capS := t.offlineCaps(); t.cfg.MaxSteps > 0 && t.state.StudentSteps >= capS {
			return true
		}
		return t.state.RoundEpochs >= t.offlineStudentEpochs()
	}
	if capT, _ := t.offlineCaps(); t.rec.Schedule.DistillMode() == DistillNone && t.cfg.MaxSteps > 0 && t.state.TeacherSteps >= capT {
		return true // the teacher's seat gets the online teacher's steps
	}
	if t.cfg.MaxSteps > 0 && t.state.Step >= t.cfg.MaxSteps {
		return true
	}
	return t.state.Epoch >= t.rec.Schedule.TotalEpochs() && t.state.Phase == PhaseTeacher
}

// rounds is the number of CycleGAN student rounds of the schedule: one after
// every save_epoch_freq teacher epochs and one after the last (§4.2).
func (s Schedule) rounds() int {
	return (s.TotalEpochs() + s.SaveEpochFreq - 1) / s.SaveEpochFreq
}

// roundEpoch is the teacher epoch after which CycleGAN's student round k
// (0-based) runs.
func (s Schedule) roundEpoch(k int) int {
	return min((k+1)*s.SaveEpochFreq, s.TotalEpochs())
}

// onlineSplit is how many teacher steps and student steps the online
// schedule takes in its first maxSteps steps, with per steps an epoch:
// pix2pix trains both in every step; CycleGAN has its teacher epochs and
// student rounds (§4.2).
func (s Schedule) onlineSplit(mode Mode, per, maxSteps int) (teacher, student int) {
	if mode == Pix2Pix {
		return maxSteps, maxSteps
	}
	left := maxSteps
	for e := 1; e <= s.TotalEpochs() && left > 0; e++ {
		n := min(per, left)
		teacher, left = teacher+n, left-n
		if e%s.SaveEpochFreq == 0 || e == s.TotalEpochs() {
			n = min(s.NDis*s.SaveEpochFreq*per, left)
			student, left = student+n, left-n
		}
	}
	return teacher, student
}

// setOfflineCaps computes the caps of an offline schedule, or of one with no
// distillation (which takes the online teacher's steps), under MaxSteps from
// the training set's length n.
func (t *Trainer) setOfflineCaps(n int) {
	s := t.rec.Schedule
	if s.DistillMode() == DistillOnline || t.cfg.MaxSteps == 0 {
		return
	}
	t.capT, t.capS = s.onlineSplit(t.rec.Mode, (n+s.Batch-1)/s.Batch, t.cfg.MaxSteps)
	t.capsSet = true
}

// offlineCaps are the teacher and student steps an offline schedule takes
// under MaxSteps. Before Run has seen the data they are MaxSteps each, which
// is exact for pix2pix.
func (t *Trainer) offlineCaps() (teacher, student int) {
	if !t.capsSet {
		return t.cfg.MaxSteps, t.cfg.MaxSteps
	}
	return t.capT, t.capS
}

// offlineStudentEpochs is the length of an offline schedule's student phase:
// the student epochs the online schedule has (pix2pix: one per teacher
// epoch; CycleGAN: every round's).
func (t *Trainer) offlineStudentEpochs() int {
	s := t.rec.Schedule
	if t.rec.Mode == Pix2Pix {
		return s.TotalEpochs()
	}
	return s.rounds() * s.NDis * s.SaveEpochFreq
}

// plannedSteps estimates the run's steps, for the progress bar.
func (t *Trainer) plannedSteps(n int) int {
	s := t.rec.Schedule
	per := (n + s.Batch - 1) / s.Batch
	teacher := per * s.TotalEpochs()
	switch s.DistillMode() {
	case DistillNone:
		if t.cfg.MaxSteps > 0 {
			capT, _ := t.offlineCaps()
			teacher = min(teacher, capT)
		}
		return teacher
	case DistillOffline:
		student := per * t.offlineStudentEpochs()
		if t.cfg.MaxSteps > 0 {
			capT, capS := t.offlineCaps()
			teacher, student = min(teacher, capT), min(student, capS)
		}
		return teacher + student
	}
	total := teacher
	if t.rec.Mode == CycleGAN {
		total += s.rounds() * s.NDis * s.SaveEpochFreq * per
	}
	if t.cfg.MaxSteps > 0 {
		total = min(total, t.cfg.MaxSteps)
	}
	return total
}

// newEvaluator builds the run's evaluator (FID only with Inception weights).
func (t *Trainer) newEvaluator(ctx context.Context, val *data.Dataset) (*Evaluator, error) {
	stats := t.cfg.RealStats
	if stats == "" && t.rec.Eval.RealStats != "" && t.inception != nil && t.cfg.Data == nil {
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
