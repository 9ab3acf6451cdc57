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
		total += rounds * s.NDis * s.SaveEpochFreq * per
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
