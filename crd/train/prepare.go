package train

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"go.uber.org/zap"

	"github.com/crdgo/crdgo/crd/data"
)

// SynthDir returns the folder of the recipe's synthetic dataset under root and
// whether it already holds that dataset, complete. Only a name that stays inside
// root is accepted, and when the dataset is to be written (not complete) the
// folder must resolve, symbolic links followed, to a place inside root too:
// crdgo writes synthetic datasets nowhere else, and the folder must be one
// data.Synthesize would write into (data.CheckSynthTarget), so that a refusal
// leaves it untouched.
func SynthDir(root string, r Recipe) (dir string, complete bool, err error) {
	if r.Data.Synth == nil {
		return "", false, fmt.Errorf("recipe %s: no synthetic dataset (data.synth)", r.Name)
	}
	if err := checkDatasetName(r.Data.Dataset); err != nil {
		return "", false, fmt.Errorf("recipe %s: data.dataset: %w", r.Name, err)
	}
	dir = filepath.Join(root, r.Data.Dataset)
	if complete, err = data.SynthDone(dir, synthConfig(r)); err != nil || complete {
		return dir, complete, err
	}
	if err := insideRoot(root, dir); err != nil {
		return "", false, fmt.Errorf("recipe %s: data.dataset %q: %w", r.Name, r.Data.Dataset, err)
	}
	if err := data.CheckSynthTarget(dir, synthConfig(r)); err != nil {
		return "", false, err
	}
	return dir, false, nil
}

// checkDatasetName accepts a relative path that stays below the data root and
// is not the root itself.
func checkDatasetName(name string) error {
	if !filepath.IsLocal(name) || filepath.Clean(name) == "." || strings.ContainsRune(name, '\\') {
		return fmt.Errorf("%q: want a folder name inside --data-root (no absolute path, no \"..\", not \".\")", name)
	}
	return nil
}

// insideRoot checks that dir, its symbolic links followed as far as it exists,
// lies inside root.
func insideRoot(root, dir string) error {
	realRoot, err := filepath.EvalSymlinks(root)
	if err != nil {
		if os.IsNotExist(err) {
			return nil // nothing there yet: nothing to follow
		}
		return err
	}
	// Resolve the deepest existing ancestor of dir; what does not exist yet will
	// be created as plain folders below it.
	existing, rest := dir, ""
	for {
		if _, err := os.Lstat(existing); err == nil {
			break
		}
		parent := filepath.Dir(existing)
		if parent == existing {
			break
		}
		rest = filepath.Join(filepath.Base(existing), rest)
		existing = parent
	}
	real, err := filepath.EvalSymlinks(existing)
	if err != nil {
		return err
	}
	real = filepath.Join(real, rest)
	rel, err := filepath.Rel(realRoot, real)
	if err != nil || !filepath.IsLocal(rel) {
		return fmt.Errorf("%s resolves to %s, outside --data-root %s (%s): crdgo writes synthetic datasets only inside the data root", dir, real, root, realRoot)
	}
	return nil
}

// PrepareData generates the recipe's synthetic dataset under root when the
// recipe has one and it is missing or incomplete, and returns the dataset
// folder. It never removes a file it did not write (see data.Synthesize): a
// folder of that name holding other files is an error. The caller holds the
// folder's lock (runlock) while it runs, so that two processes do not write
// one dataset.
func PrepareData(ctx context.Context, root string, r Recipe, progress io.Writer, log *zap.Logger) (string, error) {
	if r.Data.Synth == nil {
		return DatasetDir(root, r)
	}
	dir, complete, err := SynthDir(root, r)
	if err != nil || complete {
		return dir, err
	}
	cfg := synthConfig(r)
	log.Info("generating synthetic dataset", zap.String("dir", dir), zap.String("kind", cfg.Kind),
		zap.Int("size", cfg.Size), zap.Int("n", cfg.N), zap.Int("n_test", cfg.NTest))
	var tick func()
	if progress != nil {
		bar := progressbar.NewOptions(cfg.Files(), progressbar.OptionSetWriter(progress), progressbar.OptionSetDescription("synth "+cfg.Kind),
			progressbar.OptionShowCount(), progressbar.OptionClearOnFinish(), progressbar.OptionThrottle(100*time.Millisecond))
		tick = func() { bar.Add(1) }
		defer bar.Finish()
	}
	if err := data.Synthesize(ctx, dir, cfg, tick, log); err != nil {
		return "", err
	}
	return dir, nil
}

func synthConfig(r Recipe) data.SynthConfig {
	s := r.Data.Synth
	return data.SynthConfig{Kind: s.Kind, Size: s.Size, N: s.N, NTest: max(s.NTest, 1), Seed: s.Seed}
}
