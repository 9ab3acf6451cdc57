package storage

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"

	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"
)

// PushOptions says how Push copies a folder into a store.
type PushOptions struct {
	Workers int  // uploads at once (4 when 0)
	Verify  bool // read every uploaded object back whole and check it (Verify)
	// Progress, when set, is called from the workers with the bytes of each file
	// done (uploaded or found already there).
	Progress func(bytes int64)
	Log      *zap.Logger
}

// PushReport says what Push did.
type PushReport struct {
	Created       bool // the store's root (bucket, folder) was missing and was made
	Files         int
	Bytes         int64
	Uploaded      int
	UploadedBytes int64
	Skipped       int      // already in the store with the same size and SHA-256
	LinksSkipped  []string // links to folders inside the pushed folder (valA → testA), not copied twice
}

// PushPlan lists a folder's files as Push would copy them: keys relative to the
// folder, slash-separated, in key order; links to files and to folders outside the
// folder are followed, links to folders inside it are skipped (they would copy the
// same files twice) and returned.
func PushPlan(dir string) (files []PushFile, linksSkipped []string, err error) {
	root, err := filepath.Abs(dir)
	if err != nil {
		return nil, nil, err
	}
	real, err := filepath.EvalSymlinks(root)
	if err != nil {
		return nil, nil, fmt.Errorf("storage: push %s: %w", dir, err)
	}
	var walk func(path, key string, seen []string) error
	walk = func(path, key string, seen []string) error {
		entries, err := os.ReadDir(path)
		if err != nil {
			return err
		}
		for _, e := range entries {
			p := filepath.Join(path, e.Name())
			k := e.Name()
			if key != "" {
				k = key + "/" + e.Name()
			}
			fi, err := os.Stat(p) // follows links
			if err != nil {
				return fmt.Errorf("storage: push %s: %s: %w", dir, k, err)
			}
			switch {
			case fi.Mode().IsRegular():
				if !ValidKey(k) {
					return fmt.Errorf("storage: push %s: %q cannot be a key", dir, k)
				}
				files = append(files, PushFile{Key: k, Path: p, Size: fi.Size()})
			case fi.IsDir():
				target, err := filepath.EvalSymlinks(p)
				if err != nil {
					return fmt.Errorf("storage: push %s: %s: %w", dir, k, err)
				}
				if e.Type()&fs.ModeSymlink != 0 && (target == real || strings.HasPrefix(target, real+string(filepath.Separator))) {
					linksSkipped = append(linksSkipped, k)
					continue
				}
				if slices.Contains(seen, target) {
					return fmt.Errorf("storage: push %s: %s: a link loop back to %s", dir, k, target)
				}
				if err := walk(p, k, append(seen, target)); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if err := walk(root, "", []string{real}); err != nil {
		return nil, nil, err
	}
	slices.SortFunc(files, func(a, b PushFile) int { return strings.Compare(a.Key, b.Key) })
	return files, linksSkipped, nil
}

// PushFile is one file of a push.
type PushFile struct {
	Key  string
	Path string
	Size int64
}

// Push copies the files under dir into s (key = path relative to dir), creating
// the store's root when it is missing. It can be run again after a failure: an
// object already in the store with the same size and SHA-256 is not sent again.
// It stops at the first error, reporting what it had done.
func Push(ctx context.Context, dir string, s Store, opts PushOptions) (PushReport, error) {
	log := opts.Log
	if log == nil {
		log = zap.NewNop()
	}
	workers := opts.Workers
	if workers <= 0 {
		workers = 4
	}
	var rep PushReport
	files, links, err := PushPlan(dir)
	if err != nil {
		return rep, err
	}
	rep.Files, rep.LinksSkipped = len(files), links
	for _, f := range files {
		rep.Bytes += f.Size
	}
	if rep.Created, err = EnsureRoot(ctx, s); err != nil {
		return rep, err
	}
	have := map[string]ObjectInfo{}
	if !rep.Created {
		objs, err := ListAll(ctx, s, "")
		if err != nil {
			return rep, err
		}
		for _, o := range objs {
			have[o.Key] = o
		}
	}
	var uploaded, skipped atomic.Int64
	var upBytes atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(workers)
	for _, f := range files {
		g.Go(func() error {
			up, err := pushFile(gctx, s, f, have, opts.Verify)
			if err != nil {
				return err
			}
			if up {
				uploaded.Add(1)
				upBytes.Add(f.Size)
			} else {
				skipped.Add(1)
			}
			if opts.Progress != nil {
				opts.Progress(f.Size)
			}
			return nil
		})
	}
	err = g.Wait()
	rep.Uploaded, rep.Skipped, rep.UploadedBytes = int(uploaded.Load()), int(skipped.Load()), upBytes.Load()
	if err != nil {
		return rep, err
	}
	log.Info("storage: pushed", zap.String("dir", dir), zap.String("store", s.String()),
		zap.Int("files", rep.Files), zap.Int("uploaded", rep.Uploaded), zap.Int("skipped", rep.Skipped))
	return rep, nil
}

// pushFile sends one file unless the store holds it already; it says whether it sent.
func pushFile(ctx context.Context, s Store, f PushFile, have map[string]ObjectInfo, verify bool) (bool, error) {
	fh, err := os.Open(f.Path)
	if err != nil {
		return false, fmt.Errorf("storage: push: %w", err)
	}
	defer fh.Close()
	if o, ok := have[f.Key]; ok && o.Size == f.Size {
		remote := o.SHA256
		if remote == "" { // a listing without metadata (not MinIO): ask
			info, err := s.Stat(ctx, f.Key)
			if err != nil && !errors.Is(err, ErrNotExist) {
				return false, err
			}
			remote = info.SHA256
		}
		if remote != "" {
			h := sha256.New()
			if _, err := copyCtx(ctx, h, fh); err != nil {
				return false, fmt.Errorf("storage: push: %s: %w", f.Path, err)
			}
			if hex.EncodeToString(h.Sum(nil)) == remote {
				return false, nil
			}
			if _, err := fh.Seek(0, io.SeekStart); err != nil {
				return false, err
			}
		}
	}
	info, err := s.Put(ctx, f.Key, fh, f.Size)
	if err != nil {
		return false, err
	}
	if verify {
		got, err := Verify(ctx, s, f.Key)
		if err != nil {
			return true, err
		}
		if got.SHA256 != info.SHA256 || got.Size != info.Size {
			return true, fmt.Errorf("storage: push: %s/%s reads back as %d bytes %s; sent %d bytes %s: %w",
				s, f.Key, got.Size, got.SHA256, info.Size, info.SHA256, ErrCorrupt)
		}
	}
	return true, nil
}
