package storage

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"strings"
)

// Dataset is a dataset's files in a store, under a prefix, read through a Cache
// when one is given. It satisfies crd/data's Source (without storage importing
// crd): List gives the files directly in a folder, sorted; Open streams one.
// Safe for concurrent use, as the loader's workers need.
type Dataset struct {
	store  Store
	prefix string // "" or a key prefix with no trailing slash
	cache  *Cache
	name   string
}

// DatasetSource returns the dataset under prefix ("" for the store's root) of s,
// reading through c (nil: straight from the store).
func DatasetSource(s Store, prefix string, c *Cache) *Dataset {
	prefix = strings.Trim(prefix, "/")
	name := s.String()
	if prefix != "" {
		if loc, err := ParseURL(name); err == nil {
			name = loc.Join(prefix).String()
		} else {
			name += "/" + prefix
		}
	}
	return &Dataset{store: s, prefix: prefix, cache: c, name: name}
}

// String is the dataset's URL.
func (d *Dataset) String() string { return d.name }

func (d *Dataset) full(key string) string {
	if d.prefix == "" {
		return key
	}
	return d.prefix + "/" + key
}

// List returns the keys of the objects directly in dir ("." or "" for the top),
// relative to the dataset, sorted. A folder with nothing in it is empty, not an
// error, as S3 cannot tell an empty folder from a missing one.
func (d *Dataset) List(ctx context.Context, dir string) ([]string, error) {
	if dir == "" {
		dir = "."
	}
	if !fs.ValidPath(dir) {
		return nil, fmt.Errorf("storage: %s: list %q: not a valid slash-separated relative path", d, dir)
	}
	p := ""
	if dir != "." {
		p = dir + "/"
	}
	all, err := ListAll(ctx, d.store, d.full(p))
	if err != nil {
		return nil, err
	}
	cut := len(d.full(p))
	keys := make([]string, 0, len(all))
	for _, o := range all {
		rest := o.Key[cut:]
		if strings.Contains(rest, "/") {
			continue // in a sub-folder
		}
		keys = append(keys, p+rest)
	}
	return keys, nil // in key order: the store lists so, and all share the prefix
}

// Open opens the file at key (relative to the dataset); the caller closes it.
func (d *Dataset) Open(ctx context.Context, key string) (io.ReadCloser, error) {
	if !fs.ValidPath(key) || key == "." {
		return nil, fmt.Errorf("storage: %s: open %q: not a valid slash-separated relative path", d, key)
	}
	if d.cache != nil {
		return d.cache.Open(ctx, d.store, d.full(key))
	}
	rc, _, err := d.store.Get(ctx, d.full(key))
	return rc, err
}
