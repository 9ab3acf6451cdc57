package main

import (
	"context"
	"io"
	"path/filepath"

	"go.uber.org/zap"

	"github.com/crdgo/crdgo/crd/train"
	"github.com/crdgo/crdgo/runlock"
)

// lockFolder takes dir's lock (package runlock) for the rest of the command; a
// folder another crdgo process writes is an error naming that process.
func lockFolder(dir string, log *zap.Logger) (release func(), err error) {
	l, err := runlock.Acquire(dir)
	if err != nil {
		return nil, err
	}
	return func() {
		if err := l.Release(); err != nil {
			log.Warn("cannot release the folder lock", zap.String("dir", dir), zap.Error(err))
		}
	}, nil
}

// prepareData generates the recipe's synthetic dataset if it is missing, holding
// the dataset folder's lock while it writes.
func prepareData(ctx context.Context, root string, rec train.Recipe, progress io.Writer, log *zap.Logger) error {
	if rec.Data.Synth != nil {
		dir, complete, err := train.SynthDir(root, rec)
		if err != nil {
			return err
		}
		if !complete {
			release, err := lockFolder(dir, log)
			if err != nil {
				return err
			}
			defer release()
		}
	}
	_, err := train.PrepareData(ctx, root, rec, progress, log)
	return err
}

// openRun takes the run folder's lock for the rest of the command, then
// finishes in its checkpoints/ what a crash interrupted (train.TidyCheckpoints):
// nothing in a run folder changes while another process holds it.
func openRun(out string, log *zap.Logger) (release func(), err error) {
	release, err = lockFolder(out, log)
	if err != nil {
		return nil, err
	}
	if err := train.TidyCheckpoints(filepath.Join(out, "checkpoints"), log); err != nil {
		release()
		return nil, err
	}
	return release, nil
}
