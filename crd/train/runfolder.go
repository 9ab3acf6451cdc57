package train

import (
	"context"
	"errors"
	"fmt"
	"image"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/schollz/progressbar/v3"
	"go.uber.org/zap"
)

// RunFolder is the Output that writes a run into a folder on local disk:
//
//	metrics.jsonl                  losses every LogEvery steps and evaluations
//	loss.png                       the loss curves, redrawn with every sample grid
//	samples/step-N.png, latest.png the sample grids
//	checkpoints/step-N/            checkpoints (manifest written last), the newest Keep kept
//	best_student_G.safetensors     the student with the lowest FID so far
//
// and draws a progress bar on Progress when it is not nil. With Checkpoints
// set the checkpoints go into that object store instead (each file, the
// manifest last); with Mirror set, metrics.jsonl, loss.png,
// samples/latest.png and the best student are copied there too, so a run in
// an object store is complete without this machine.
type RunFolder struct {
	Dir         string
	Progress    io.Writer   // nil: no progress bar
	Checkpoints ObjectStore // nil: Dir/checkpoints on local disk
	Mirror      ObjectStore // nil: nothing is copied
	log         *zap.Logger

	rep   *reporter
	bar   *progressbar.ProgressBar
	title string
}

// NewRunFolder returns the Output for the run folder dir.
func NewRunFolder(dir string, progress io.Writer, log *zap.Logger) *RunFolder {
	return &RunFolder{Dir: dir, Progress: progress, log: log}
}

// Begin opens metrics.jsonl (keeping the lines up to step from) and the
// progress bar.
func (f *RunFolder) Begin(t *Trainer, from, planned int) error {
	rep, err := openReporter(f.Dir, from)
	if err != nil {
		return err
	}
	f.rep = rep
	f.title = fmt.Sprintf("crdgo %s", t.rec.Name)
	if f.Progress != nil {
		f.bar = progressbar.NewOptions(planned, progressbar.OptionSetWriter(f.Progress), progressbar.OptionShowCount(),
			progressbar.OptionSetPredictTime(true), progressbar.OptionShowElapsedTimeOnFinish(), progressbar.OptionFullWidth(),
			progressbar.OptionThrottle(200*time.Millisecond), progressbar.OptionSetRenderBlankState(true))
		f.bar.Set(min(from, planned))
	}
	return nil
}

// Step advances the progress bar.
func (f *RunFolder) Step(s State, l Losses) {
	if f.bar != nil {
		f.bar.Describe(describe(s, l))
		f.bar.Add(1)
	}
}

// Log appends a line to metrics.jsonl.
func (f *RunFolder) Log(m MetricsLine) error { return f.rep.log(m) }

// Samples writes samples/step-N.png and samples/latest.png, and redraws loss.png.
func (f *RunFolder) Samples(step int, grid image.Image) error {
	for _, name := range []string{fmt.Sprintf("step-%08d.png", step), "latest.png"} {
		if err := writePNG(filepath.Join(f.Dir, "samples", name), grid); err != nil {
			return err
		}
	}
	if err := f.rep.plotLosses(f.title); err != nil {
		return err
	}
	return f.mirror("samples/latest.png", "loss.png")
}

// mirror copies run-folder files (relative names) to Mirror, if it is set. A
// file that does not exist yet (no loss plot before two log lines) is skipped.
func (f *RunFolder) mirror(names ...string) error {
	if f.Mirror == nil {
		return nil
	}
	for _, name := range names {
		b, err := os.ReadFile(filepath.Join(f.Dir, filepath.FromSlash(name)))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		if err := f.Mirror.PutObject(context.Background(), name, b); err != nil {
			return fmt.Errorf("run folder %s: %s: %w", f.Mirror, name, err)
		}
	}
	return nil
}

// Checkpoint writes checkpoints/step-N (or into Checkpoints) and prunes the
// older ones.
func (f *RunFolder) Checkpoint(t *Trainer) (string, error) {
	if f.Checkpoints != nil {
		ctx := context.Background() // every store call has its own deadline
		name, err := t.SaveCheckpointObjects(ctx, f.Checkpoints, filepath.Join(f.Dir, "upload"))
		if err != nil {
			return "", err
		}
		t.pruneObjectCheckpoints(ctx, f.Checkpoints, or(t.cfg.KeepCheckpoints, 3), t.cfg.KeepEvery)
		f.log.Debug("checkpoint", zap.String("checkpoint", name), zap.Int("step", t.state.Step))
		if err := f.rep.w.Flush(); err != nil {
			return "", err
		}
		return name, f.mirror("metrics.jsonl")
	}
	ckDir := filepath.Join(f.Dir, "checkpoints")
	dir, err := t.SaveCheckpoint(ckDir)
	if err != nil {
		return "", err
	}
	t.pruneCheckpoints(ckDir, or(t.cfg.KeepCheckpoints, 3))
	f.log.Debug("checkpoint", zap.String("dir", dir), zap.Int("step", t.state.Step))
	return dir, nil
}

// BestStudent writes best_student_G.safetensors.
func (f *RunFolder) BestStudent(t *Trainer, fid float64) error {
	if err := t.Nets.S.Params().Save(filepath.Join(f.Dir, "best_student_G.safetensors"),
		map[string]string{"recipe": t.rec.Name, "fid": fmt.Sprint(fid), "step": fmt.Sprint(t.state.Step)}); err != nil {
		return err
	}
	return f.mirror("best_student_G.safetensors")
}

// End finishes the progress bar and closes metrics.jsonl.
func (f *RunFolder) End() error {
	if f.bar != nil {
		f.bar.Finish()
	}
	if f.rep == nil {
		return nil
	}
	if err := f.rep.close(); err != nil {
		return err
	}
	return f.mirror("metrics.jsonl", "loss.png", "samples/latest.png")
}
