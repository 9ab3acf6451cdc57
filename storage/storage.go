// Package storage moves bytes between crdgo and where datasets and checkpoints live:
// a folder on local disk or a bucket in MinIO or any S3 store. It knows nothing of
// training: crd/data reads datasets through its own Source interface, which
// DatasetSource satisfies.
//
// # The Store contract
//
// A Store is a flat namespace of objects under a root (a folder, or a bucket and a
// prefix). Keys are slash-separated relative paths ("trainA/0001.jpg"): no empty, "."
// or ".." element, no leading or trailing slash (ValidKey). Every method takes a ctx
// and returns by its deadline; a store adds its own deadline when ctx has none.
//
//   - Put writes an object whole or not at all: readers see the previous object or the
//     new one, never a prefix of it. It computes the object's SHA-256 as it goes,
//     records it with the object, and checks the stored size before it returns.
//   - Get streams an object. The stream checks size and SHA-256 as it is read and
//     fails with ErrCorrupt at the end, instead of io.EOF, when they do not match.
//   - List returns objects in ascending key order, a page at a time.
//   - A missing object is ErrNotExist (which is fs.ErrNotExist), from Get, Stat and
//     nothing else: Delete of a missing key succeeds, as S3's does.
//   - Transient failures (a reset connection, a 5xx, a server restarting) are
//     retried with capped exponential backoff and jitter; permanent ones (no such
//     bucket, access denied, wrong key or signature) fail at once, naming the
//     bucket and key.
//
// All methods are safe for concurrent use.
package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"
	"time"
)

// Store is a flat namespace of objects. See the package documentation for the
// contract every implementation keeps; storetest checks it.
type Store interface {
	// Get opens the object at key for reading. The stream verifies size and SHA-256
	// as it is read (ErrCorrupt instead of io.EOF at the end). The caller closes it.
	Get(ctx context.Context, key string) (io.ReadCloser, ObjectInfo, error)
	// Put writes the object at key from r: size bytes, or up to EOF when size is
	// negative. A reader that ends before size bytes is an error and writes
	// nothing; bytes after the first size are left unread.
	Put(ctx context.Context, key string, r io.Reader, size int64) (ObjectInfo, error)
	// List returns, in ascending key order, up to limit objects whose keys start with
	// prefix and sort after after ("" for the first page). Page.More says whether
	// another page may follow: ask again with after set to the last key returned.
	List(ctx context.Context, prefix, after string, limit int) (Page, error)
	// Stat returns the object's size, hash and modification time.
	Stat(ctx context.Context, key string) (ObjectInfo, error)
	// Delete removes the object at key; a missing key is not an error.
	Delete(ctx context.Context, key string) error
	// String is the store's URL, with no credentials in it.
	String() string
}

// ObjectInfo describes an object.
type ObjectInfo struct {
	Key     string
	Size    int64     // bytes
	SHA256  string    // lower-case hex; "" when the store holds none (objects crdgo did not write)
	ModTime time.Time // last write, as the store reports it
}

// Page is one page of a listing.
type Page struct {
	Objects []ObjectInfo
	More    bool // another page may follow; List again after the last key
}

var (
	// ErrNotExist is the error of Get and Stat for a missing object. It is
	// fs.ErrNotExist, so callers may test either.
	ErrNotExist = fs.ErrNotExist
	// ErrCorrupt means an object's bytes do not match its recorded size or SHA-256.
	ErrCorrupt = errors.New("object corrupt: size or SHA-256 differs from the recorded one")
	// ErrNoBucket means the bucket of an S3 store does not exist.
	ErrNoBucket = errors.New("no such bucket")
	// ErrAccess means the store refused the credentials or the operation (access
	// denied, unknown access key, wrong secret).
	ErrAccess = errors.New("access denied")
)

// ValidKey reports whether key is a valid object key: a non-empty slash-separated
// relative path with no empty, "." or ".." element and no backslash or NUL.
func ValidKey(key string) bool {
	if key == "" || strings.ContainsAny(key, "\\\x00") {
		return false
	}
	for elem := range strings.SplitSeq(key, "/") {
		if elem == "" || elem == "." || elem == ".." {
			return false
		}
	}
	return true
}

// validPrefix reports whether prefix may start keys: "" or a valid key, optionally
// followed by one slash.
func validPrefix(prefix string) bool {
	return prefix == "" || ValidKey(strings.TrimSuffix(prefix, "/"))
}

func checkKey(s Store, op, key string) error {
	if !ValidKey(key) {
		return fmt.Errorf("storage: %s %s: key %q: want a slash-separated relative path with no empty, \".\" or \"..\" element", op, s, key)
	}
	return nil
}

func checkList(s Store, prefix string, limit int) error {
	if !validPrefix(prefix) {
		return fmt.Errorf("storage: list %s: prefix %q: want \"\" or a key, optionally ending in /", s, prefix)
	}
	if limit < 1 {
		return fmt.Errorf("storage: list %s: limit %d: want ≥ 1", s, limit)
	}
	return nil
}

// ListAll returns every object under prefix, in key order, asking for pages of
// 10,000 (S3 servers answer 1,000 keys a request; the fs store reads a folder's
// names once per page).
func ListAll(ctx context.Context, s Store, prefix string) ([]ObjectInfo, error) {
	var all []ObjectInfo
	after := ""
	for {
		p, err := s.List(ctx, prefix, after, 10000)
		if err != nil {
			return all, err
		}
		all = append(all, p.Objects...)
		if !p.More || len(p.Objects) == 0 {
			return all, nil
		}
		after = p.Objects[len(p.Objects)-1].Key
	}
}

// Verify reads the object at key back whole and checks its size and SHA-256
// against the ones recorded at write time; an object with no recorded hash is
// hashed and the hash returned. It costs a full read: Get already checks every
// stream, Verify is for objects nobody reads soon (checkpoints, pushed datasets).
func Verify(ctx context.Context, s Store, key string) (ObjectInfo, error) {
	rc, info, err := s.Get(ctx, key)
	if err != nil {
		return ObjectInfo{}, err
	}
	defer rc.Close()
	h := newHashReader(rc)
	if _, err := io.Copy(io.Discard, h); err != nil {
		return info, err
	}
	info.Size, info.SHA256 = h.n, h.sum()
	return info, nil
}

// EnsureRoot creates the root of a store (an S3 bucket, a folder) when it is
// missing, and says whether it did. Other stores are left as they are.
func EnsureRoot(ctx context.Context, s Store) (created bool, err error) {
	if r, ok := s.(interface {
		EnsureRoot(context.Context) (bool, error)
	}); ok {
		return r.EnsureRoot(ctx)
	}
	return false, nil
}
