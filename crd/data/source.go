package data

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
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
