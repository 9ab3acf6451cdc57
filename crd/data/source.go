package data

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// Source is where a dataset's files come from: a local directory now, an object store
// later (implemented in another package; crd/data never imports it). Keys are
// slash-separated paths relative to the source's root, e.g. "trainA/0001.jpg".
//
// Implementations must be safe for concurrent use: the Loader opens files from several
// goroutines. A Source that talks to a network should retry transient failures itself:
// the dataset treats any failed Open or Read of an image as an unreadable image and
// skips it.
type Source interface {
	// List returns the keys of the files (not directories) directly in dir, sorted by
	// key. The dataset picks the image files among them by extension.
	List(ctx context.Context, dir string) ([]string, error)
	// Open opens the file at key. The caller closes it.
	Open(ctx context.Context, key string) (io.ReadCloser, error)
	// String names the source for errors and logs, e.g. "file:///data/horse2zebra".
	String() string
}

// Dir is the Source of the files under root on local disk. Symbolic links are followed
// (dataset scripts link valA to testA, and users link splits to other disks), but keys
// are confined to root lexically: a key with a ".." element or a leading slash is
// rejected.
func Dir(root string) Source {
	name := root
	if abs, err := filepath.Abs(root); err == nil {
		name = abs
	}
	return FS(os.DirFS(name), "file://"+filepath.ToSlash(name))
}

// FS is the Source of the files in fsys (fstest.MapFS in tests, an embed.FS, os.DirFS),
// named name in errors and logs.
func FS(fsys fs.FS, name string) Source {
	return &fsSource{fsys: fsys, name: name}
}

type fsSource struct {
	fsys fs.FS
	name string
}

func (s *fsSource) String() string { return s.name }

func (s *fsSource) List(ctx context.Context, dir string) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if !fs.ValidPath(dir) {
		return nil, fmt.Errorf("data: %s: list %q: not a valid slash-separated relative path", s.name, dir)
	}
	entries, err := fs.ReadDir(s.fsys, dir) // sorted by name, which sorts the keys
	if err != nil {
		return nil, fmt.Errorf("data: %s: list %s: %w", s.name, dir, err)
	}
	keys := make([]string, 0, len(entries))
	for _, e := range entries {
		key := path.Join(dir, e.Name())
		switch {
		case e.Type().IsRegular():
		case e.Type()&fs.ModeSymlink != 0:
			fi, err := fs.Stat(s.fsys, key)
			if err != nil || !fi.Mode().IsRegular() {
				continue // a dangling link or a link to a directory is not a file
			}
		default:
			continue
		}
		keys = append(keys, key)
	}
	return keys, nil
}

func (s *fsSource) Open(ctx context.Context, key string) (io.ReadCloser, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if !fs.ValidPath(key) {
		return nil, fmt.Errorf("data: %s: open %q: not a valid slash-separated relative path", s.name, key)
	}
	return s.fsys.Open(key)
}

// Sub is the Source of the files under dir in src: keys are relative to dir.
// A dataset root holds one folder per dataset; Sub(root, "horse2zebra") is that
// dataset's Source.
func Sub(src Source, dir string) Source {
	return &subSource{src: src, dir: path.Clean(dir)}
}

type subSource struct {
	src Source
	dir string
}

func (s *subSource) String() string { return strings.TrimSuffix(s.src.String(), "/") + "/" + s.dir }

func (s *subSource) List(ctx context.Context, dir string) ([]string, error) {
	if !fs.ValidPath(dir) {
		return nil, fmt.Errorf("data: %s: list %q: not a valid slash-separated relative path", s, dir)
	}
	keys, err := s.src.List(ctx, path.Join(s.dir, dir))
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(keys))
	for _, k := range keys {
		rel, ok := strings.CutPrefix(k, s.dir+"/")
		if !ok {
			return nil, fmt.Errorf("data: %s: listed %q outside %s", s, k, s.dir)
		}
		out = append(out, rel)
	}
	return out, nil
}

func (s *subSource) Open(ctx context.Context, key string) (io.ReadCloser, error) {
	if !fs.ValidPath(key) || key == "." {
		return nil, fmt.Errorf("data: %s: open %q: not a valid slash-separated relative path", s, key)
	}
	return s.src.Open(ctx, path.Join(s.dir, key))
}
