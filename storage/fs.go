package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// FS is the Store of the files under a folder. Put writes a temporary file beside
// the target, fsyncs it, renames it over the target and fsyncs the folder, so a
// crash leaves the old object or the new one. The SHA-256 goes in the file's
// user.crdgo.sha256 extended attribute; on a filesystem without user attributes
// objects have no recorded hash (ObjectInfo.SHA256 is "", Get checks the size only).
// Symbolic links under the folder are followed. A folder cannot hold both "a" and
// "a/b", which S3 can; nothing crdgo writes does that.
type FS struct {
	dir  string
	opts Options
}

const (
	fsTempPrefix = ".crdgo-put-"
	fsHashXattr  = "user.crdgo.sha256"
)

// NewFS returns the store of the files under dir (absolute or relative; created by
// the first Put or by EnsureRoot).
func NewFS(dir string, opts Options) (*FS, error) {
	opts = opts.withDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("storage: folder %s: %w", dir, err)
	}
	return &FS{dir: abs, opts: opts}, nil
}

func (s *FS) String() string { return Location{Scheme: "file", Dir: s.dir}.String() }

// Dir is the folder.
func (s *FS) Dir() string { return s.dir }

func (s *FS) path(key string) string { return filepath.Join(s.dir, filepath.FromSlash(key)) }

func (s *FS) checkKey(op, key string) error {
	if err := checkKey(s, op, key); err != nil {
		return err
	}
	for elem := range strings.SplitSeq(key, "/") {
		if strings.HasPrefix(elem, fsTempPrefix) {
			return fmt.Errorf("storage: %s %s: key %q: names starting %s are the store's temporary files", op, s, key, fsTempPrefix)
		}
	}
	return nil
}

func (s *FS) Get(ctx context.Context, key string) (io.ReadCloser, ObjectInfo, error) {
	if err := s.checkKey("get", key); err != nil {
		return nil, ObjectInfo{}, err
	}
	if err := ctx.Err(); err != nil {
		return nil, ObjectInfo{}, fmt.Errorf("storage: get %s/%s: %w", s, key, err)
	}
	f, err := os.Open(s.path(key))
	if err != nil {
		return nil, ObjectInfo{}, s.fail("get", key, err)
	}
	info, err := s.statFile(f, key)
	if err != nil {
		f.Close()
		return nil, ObjectInfo{}, s.fail("get", key, err)
	}
	return &ctxReader{ctx: ctx, r: newVerifyReader(f, info, s.String()+"/"+key)}, info, nil
}

func (s *FS) Stat(ctx context.Context, key string) (ObjectInfo, error) {
	if err := s.checkKey("stat", key); err != nil {
		return ObjectInfo{}, err
	}
	if err := ctx.Err(); err != nil {
		return ObjectInfo{}, fmt.Errorf("storage: stat %s/%s: %w", s, key, err)
	}
	f, err := os.Open(s.path(key))
	if err != nil {
		return ObjectInfo{}, s.fail("stat", key, err)
	}
	defer f.Close()
	info, err := s.statFile(f, key)
	if err != nil {
		return ObjectInfo{}, s.fail("stat", key, err)
	}
	return info, nil
}

// statFile describes an open file; a folder is not an object.
func (s *FS) statFile(f *os.File, key string) (ObjectInfo, error) {
	fi, err := f.Stat()
	if err != nil {
		return ObjectInfo{}, err
	}
	if !fi.Mode().IsRegular() {
		return ObjectInfo{}, fmt.Errorf("%s is not a regular file: %w", fi.Mode().Type(), ErrNotExist)
	}
	return ObjectInfo{Key: key, Size: fi.Size(), SHA256: readHashXattr(int(f.Fd())), ModTime: fi.ModTime()}, nil
}

// readHashXattr returns the recorded hash of an open file, or "".
func readHashXattr(fd int) string {
	var buf [64]byte
	n, err := unix.Fgetxattr(fd, fsHashXattr, buf[:])
	if err != nil || n != len(buf) || !isHexSHA256(string(buf[:n])) {
		return ""
	}
	return string(buf[:n])
}

func isHexSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

func (s *FS) Put(ctx context.Context, key string, r io.Reader, size int64) (ObjectInfo, error) {
	if err := s.checkKey("put", key); err != nil {
		return ObjectInfo{}, err
	}
	ctx, cancel := s.opts.deadline(ctx, size)
	defer cancel()
	dst := s.path(key)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return ObjectInfo{}, s.fail("put", key, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(dst), fsTempPrefix+"*")
	if err != nil {
		return ObjectInfo{}, s.fail("put", key, err)
	}
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	h := newHashReader(r)
	var src io.Reader = h
	if size >= 0 {
		src = io.LimitReader(h, size)
	}
	n, err := copyCtx(ctx, tmp, src)
	switch {
	case err != nil:
		return ObjectInfo{}, s.fail("put", key, err)
	case size >= 0 && n != size:
		return ObjectInfo{}, fmt.Errorf("storage: put %s/%s: the reader ended after %d bytes, declared %d", s, key, n, size)
	}
	sum := h.sum()
	if err := unix.Fsetxattr(int(tmp.Fd()), fsHashXattr, []byte(sum), 0); err != nil &&
		!errors.Is(err, unix.ENOTSUP) && !errors.Is(err, unix.EOPNOTSUPP) {
		return ObjectInfo{}, s.fail("put", key, fmt.Errorf("record SHA-256: %w", err))
	}
	if err := tmp.Sync(); err != nil {
		return ObjectInfo{}, s.fail("put", key, err)
	}
	fi, err := tmp.Stat()
	if err != nil {
		return ObjectInfo{}, s.fail("put", key, err)
	}
	if fi.Size() != n {
		return ObjectInfo{}, fmt.Errorf("storage: put %s/%s: wrote %d bytes, the file holds %d: %w", s, key, n, fi.Size(), ErrCorrupt)
	}
	if err := tmp.Close(); err != nil {
		return ObjectInfo{}, s.fail("put", key, err)
	}
	if err := ctx.Err(); err != nil {
		return ObjectInfo{}, s.fail("put", key, err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return ObjectInfo{}, s.fail("put", key, err)
	}
	ok = true
	if err := syncDir(filepath.Dir(dst)); err != nil {
		return ObjectInfo{}, s.fail("put", key, err)
	}
	return ObjectInfo{Key: key, Size: n, SHA256: sum, ModTime: fi.ModTime()}, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) { // EINVAL: filesystems that cannot sync a folder
		return err
	}
	return nil
}

func (s *FS) Delete(ctx context.Context, key string) error {
	if err := s.checkKey("delete", key); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("storage: delete %s/%s: %w", s, key, err)
	}
	p := s.path(key)
	if fi, err := os.Lstat(p); err == nil && fi.IsDir() {
		return nil // a folder is not an object: nothing to delete
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return s.fail("delete", key, err)
	}
	return syncDir(filepath.Dir(p))
}

func (s *FS) List(ctx context.Context, prefix, after string, limit int) (Page, error) {
	if err := checkList(s, prefix, limit); err != nil {
		return Page{}, err
	}
	// Walk the deepest folder that holds every key with the prefix.
	base := ""
	if i := strings.LastIndex(prefix, "/"); i >= 0 {
		base = prefix[:i]
	}
	root := s.dir
	if base != "" {
		root = s.path(base)
	}
	var objs []ObjectInfo
	match := func(key string) bool { return strings.HasPrefix(key, prefix) && key > after }
	err := s.walk(ctx, root, base, nil, match, func(key string, fi fs.FileInfo) error {
		objs = append(objs, ObjectInfo{Key: key, Size: fi.Size(), ModTime: fi.ModTime()})
		return nil
	}, func(dirKey string) bool {
		// Skip a folder whose keys all sort at or before after, or none has the prefix.
		d := dirKey + "/"
		if after > d && !strings.HasPrefix(after, d) {
			return false
		}
		return strings.HasPrefix(d, prefix) || strings.HasPrefix(prefix, d)
	})
	if err != nil {
		return Page{}, fmt.Errorf("storage: list %s prefix %q: %w", s, prefix, err)
	}
	slices.SortFunc(objs, func(a, b ObjectInfo) int { return strings.Compare(a.Key, b.Key) })
	p := Page{Objects: objs}
	if len(objs) > limit {
		p.Objects, p.More = objs[:limit:limit], true
	}
	for i := range p.Objects {
		p.Objects[i].SHA256 = s.hashOf(p.Objects[i].Key)
	}
	return p, nil
}

// hashOf reads the recorded hash of a file by key, or "".
func (s *FS) hashOf(key string) string {
	var buf [64]byte
	n, err := unix.Getxattr(s.path(key), fsHashXattr, buf[:])
	if err != nil || !isHexSHA256(string(buf[:n])) {
		return ""
	}
	return string(buf[:n])
}

// walk calls file for every regular file (or link to one) under dir whose key
// (dirKey/name) match accepts, and descends into the folders enter accepts,
// following links but never into a folder it is already inside (a link to an
// ancestor). Only the files that match are stat'ed, so that a page deep into a
// large folder costs a read of its names, not a stat of every file. A missing dir
// is empty.
func (s *FS) walk(ctx context.Context, dir, dirKey string, path []fileID, match func(string) bool, file func(string, fs.FileInfo) error, enter func(string) bool) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if fi, err := os.Stat(dir); err == nil {
		id := idOf(fi)
		if slices.Contains(path, id) {
			return nil
		}
		path = append(path, id)
	}
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, fsTempPrefix) {
			continue
		}
		key := name
		if dirKey != "" {
			key = dirKey + "/" + name
		}
		t := e.Type()
		if t.IsRegular() && !match(key) {
			continue
		}
		var fi fs.FileInfo
		if t&fs.ModeSymlink != 0 {
			fi, err = os.Stat(filepath.Join(dir, name))
		} else {
			fi, err = e.Info()
		}
		if err != nil {
			continue // removed since ReadDir, or a dangling link: no object
		}
		switch {
		case fi.Mode().IsRegular():
			if !match(key) {
				continue
			}
			if err := file(key, fi); err != nil {
				return err
			}
		case fi.IsDir():
			if enter(key) {
				if err := s.walk(ctx, filepath.Join(dir, name), key, path, match, file, enter); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// fileID identifies a folder across links.
type fileID struct{ dev, ino uint64 }

func idOf(fi fs.FileInfo) fileID {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return fileID{uint64(st.Dev), st.Ino}
	}
	return fileID{}
}

// EnsureRoot creates the folder if it is missing and says whether it did.
func (s *FS) EnsureRoot(ctx context.Context) (created bool, err error) {
	if _, err := os.Stat(s.dir); err == nil {
		return false, nil
	}
	if err := os.MkdirAll(s.dir, 0o755); err != nil {
		return false, fmt.Errorf("storage: create %s: %w", s, err)
	}
	return true, nil
}

func (s *FS) fail(op, key string, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("storage: %s %s/%s: %w", op, s, key, ErrNotExist)
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err // the path is the key's, already in the message
	}
	return fmt.Errorf("storage: %s %s/%s: %w", op, s, key, err)
}

// copyCtx copies src to dst, checking ctx between blocks.
func copyCtx(ctx context.Context, dst io.Writer, src io.Reader) (int64, error) {
	buf := make([]byte, 256<<10)
	var n int64
	for {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		m, rerr := src.Read(buf)
		if m > 0 {
			w, werr := dst.Write(buf[:m])
			n += int64(w)
			if werr != nil {
				return n, werr
			}
		}
		if rerr == io.EOF {
			return n, nil
		}
		if rerr != nil {
			return n, rerr
		}
	}
}

// ctxReader fails reads once ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.ReadCloser
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

func (c *ctxReader) Close() error { return c.r.Close() }
