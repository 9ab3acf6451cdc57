package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/pflag"
	"go.uber.org/zap"

	"github.com/crdgo/crdgo/crd/data"
	"github.com/crdgo/crdgo/crd/train"
	"github.com/crdgo/crdgo/storage"
)

// isStoreURL reports whether s names an object store rather than a local
// folder (file:// URLs are local folders).
func isStoreURL(s string) bool {
	return strings.Contains(s, "://") && !strings.HasPrefix(s, "file://")
}

// localPath turns file:///dir into /dir and leaves other paths alone.
func localPath(s string) string {
	if strings.HasPrefix(s, "file://") {
		if loc, err := storage.ParseURL(s); err == nil {
			return loc.Dir
		}
	}
	return s
}

// runStoreFlags are train's flags for datasets and run folders in a store.
type runStoreFlags struct {
	store       storeFlags
	checkpoints string
	cacheDir    string
	cacheSize   int64
	keepEvery   int
}

func (r *runStoreFlags) register(fl *pflag.FlagSet) {
	r.store.register(fl)
	fl.StringVar(&r.checkpoints, "checkpoints", "", "where checkpoints go, a folder or a store URL (default: --out's checkpoints/)")
	fl.StringVar(&r.cacheDir, "cache-dir", "", "local cache of datasets read from a store and of run folders kept in one (default ~/.cache/crdgo)")
	fl.Int64Var(&r.cacheSize, "cache-size", 20<<30, "size cap of the dataset cache, bytes (least recently used files go first)")
	fl.IntVar(&r.keepEvery, "keep-every", 0, "also keep every checkpoint whose step is a multiple of this (0: none)")
}

func (r *runStoreFlags) cacheRoot() (string, error) {
	if r.cacheDir != "" {
		return r.cacheDir, nil
	}
	d, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("--cache-dir: no user cache folder (%v): pass one", err)
	}
	return filepath.Join(d, "crdgo"), nil
}

// dataSource opens a --data-root that is a store URL: the store's datasets read
// through a verified on-disk cache. It returns nil for a local folder.
func (r *runStoreFlags) dataSource(ctx context.Context, root string, log *zap.Logger) (data.Source, func(), error) {
	if !isStoreURL(root) {
		return nil, func() {}, nil
	}
	s, err := r.store.open(ctx, root, log)
	if err != nil {
		return nil, nil, fmt.Errorf("--data-root: %w", err)
	}
	base, err := r.cacheRoot()
	if err != nil {
		return nil, nil, err
	}
	c, err := storage.NewCache(filepath.Join(base, "datasets"), r.cacheSize, log)
	if err != nil {
		return nil, nil, fmt.Errorf("--cache-dir: %w", err)
	}
	return storage.DatasetSource(s, "", c), func() { c.Close() }, nil
}

// runPlace is where a run's outputs go: a local folder (metrics, samples, the
// lock; checkpoints too unless they go to a store), and optionally a store for
// the checkpoints and a store that mirrors the run folder.
type runPlace struct {
	local       string            // the folder on this machine
	name        string            // what the user gave, for messages
	checkpoints train.ObjectStore // nil: local/checkpoints
	mirror      train.ObjectStore // nil: nothing is copied
}

// openRunPlace resolves --out and --checkpoints. A store URL for --out keeps
// the run in that store (checkpoints under checkpoints/, the rest mirrored)
// with a working folder under the cache named by the URL's hash.
func (r *runStoreFlags) openRunPlace(ctx context.Context, out string, log *zap.Logger) (*runPlace, error) {
	p := &runPlace{local: localPath(out), name: out}
	if isStoreURL(out) {
		s, err := r.store.open(ctx, out, log)
		if err != nil {
			return nil, fmt.Errorf("--out: %w", err)
		}
		if _, err := storage.EnsureRoot(ctx, s); err != nil {
			return nil, fmt.Errorf("--out: %w", err)
		}
		base, err := r.cacheRoot()
		if err != nil {
			return nil, err
		}
		h := sha256.Sum256([]byte(s.String()))
		p.local = filepath.Join(base, "runs", hex.EncodeToString(h[:8]))
		p.mirror = storage.NewObjects(s, "")
		p.checkpoints = storage.NewObjects(s, "checkpoints")
	}
	if r.checkpoints != "" {
		if !isStoreURL(r.checkpoints) {
			return nil, fmt.Errorf("--checkpoints %s: want a store URL (s3://…); local checkpoints go under --out", r.checkpoints)
		}
		s, err := r.store.open(ctx, r.checkpoints, log)
		if err != nil {
			return nil, fmt.Errorf("--checkpoints: %w", err)
		}
		if _, err := storage.EnsureRoot(ctx, s); err != nil {
			return nil, fmt.Errorf("--checkpoints: %w", err)
		}
		p.checkpoints = storage.NewObjects(s, "")
	}
	return p, nil
}

// hasCheckpoints reports whether the run already has a checkpoint (a run that
// is not resumed must not mix with it).
func (p *runPlace) hasCheckpoints(ctx context.Context) (bool, error) {
	if p.checkpoints == nil {
		cps, err := train.Checkpoints(filepath.Join(p.local, "checkpoints"))
		return len(cps) > 0, err
	}
	cps, err := train.ObjectCheckpoints(ctx, p.checkpoints)
	return len(cps) > 0, err
}

// latest finds the newest intact checkpoint and returns a local folder holding
// it ("" when there is none): a store's is fetched into local/fetched first.
// A run folder kept in a store also gets its metrics.jsonl back, so the
// resumed run's history is whole on a new machine.
func (p *runPlace) latest(ctx context.Context, log *zap.Logger) (string, error) {
	if p.checkpoints == nil {
		return train.LatestCheckpoint(filepath.Join(p.local, "checkpoints"), log)
	}
	name, err := train.LatestObjectCheckpoint(ctx, p.checkpoints, log)
	if err != nil || name == "" {
		return "", err
	}
	if p.mirror != nil {
		metrics := filepath.Join(p.local, "metrics.jsonl")
		if _, err := os.Stat(metrics); errors.Is(err, fs.ErrNotExist) {
			b, err := p.mirror.GetObject(ctx, "metrics.jsonl", 1<<30)
			switch {
			case errors.Is(err, fs.ErrNotExist):
			case err != nil:
				return "", fmt.Errorf("--out %s: metrics.jsonl: %w", p.name, err)
			default:
				if err := os.WriteFile(metrics, b, 0o644); err != nil {
					return "", err
				}
			}
		}
	}
	log.Info("fetching checkpoint", zap.String("checkpoint", p.checkpoints.String()+"/"+name))
	return train.FetchCheckpoint(ctx, p.checkpoints, name, filepath.Join(p.local, "fetched"))
}
