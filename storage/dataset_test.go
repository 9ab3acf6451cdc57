package storage_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"go.uber.org/zap/zaptest"

	"github.com/crdgo/crdgo/crd/data"
	"github.com/crdgo/crdgo/storage"
	"github.com/crdgo/crdgo/storage/storetest"
)

// The dataset of a store is a crd/data Source.
var _ data.Source = (*storage.Dataset)(nil)

// counting is a Store that counts the calls that reach the store under it.
type counting struct {
	storage.Store
	gets, lists, stats, puts atomic.Int64
}

func (c *counting) Get(ctx context.Context, key string) (io.ReadCloser, storage.ObjectInfo, error) {
	c.gets.Add(1)
	return c.Store.Get(ctx, key)
}

func (c *counting) List(ctx context.Context, prefix, after string, limit int) (storage.Page, error) {
	c.lists.Add(1)
	return c.Store.List(ctx, prefix, after, limit)
}

func (c *counting) Stat(ctx context.Context, key string) (storage.ObjectInfo, error) {
	c.stats.Add(1)
	return c.Store.Stat(ctx, key)
}

func (c *counting) Put(ctx context.Context, key string, r io.Reader, size int64) (storage.ObjectInfo, error) {
	c.puts.Add(1)
	return c.Store.Put(ctx, key, r, size)
}

func (c *counting) EnsureRoot(ctx context.Context) (bool, error) {
	return storage.EnsureRoot(ctx, c.Store)
}

func (c *counting) requests() int64 {
	return c.gets.Load() + c.lists.Load() + c.stats.Load() + c.puts.Load()
}

// fillDataset writes n files in each of trainA and testA under prefix, plus a
// top-level file and a nested one, and returns the contents by key.
func fillDataset(t *testing.T, s storage.Store, prefix string, n int) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	for _, split := range []string{"trainA", "testA"} {
		for i := range n {
			files[fmt.Sprintf("%s/%03d.png", split, i)] = storetest.Bytes(uint64(len(split)*1000+i), 200+i)
		}
	}
	files["README"] = []byte("about")
	files["trainA/nested/x.png"] = []byte("deeper")
	for k, b := range files {
		key := k
		if prefix != "" {
			key = prefix + "/" + k
		}
		storetest.Put(t, s, key, b)
	}
	return files
}

func newCache(t *testing.T, max int64) *storage.Cache {
	c, err := storage.NewCache(filepath.Join(t.TempDir(), "cache"), max, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func readAll(t *testing.T, src data.Source, key string) []byte {
	t.Helper()
	rc, err := src.Open(t.Context(), key)
	if err != nil {
		t.Fatalf("Open(%q): %v", key, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("Open(%q): read: %v", key, err)
	}
	return b
}

func TestDatasetSource(t *testing.T) {
	for _, prefix := range []string{"", "datasets/toy"} {
		t.Run("prefix="+prefix, func(t *testing.T) {
			s := newFS(t)
			files := fillDataset(t, s, prefix, 5)
			for _, c := range []*storage.Cache{nil, newCache(t, 1<<20)} {
				src := storage.DatasetSource(s, prefix, c)
				keys, err := src.List(t.Context(), "trainA")
				if err != nil {
					t.Fatal(err)
				}
				want := []string{"trainA/000.png", "trainA/001.png", "trainA/002.png", "trainA/003.png", "trainA/004.png"}
				if !slices.Equal(keys, want) {
					t.Errorf("List(trainA) = %q; want %q", keys, want)
				}
				if keys, err := src.List(t.Context(), "."); err != nil || !slices.Equal(keys, []string{"README"}) {
					t.Errorf("List(.) = %q, %v; want [README]", keys, err)
				}
				if keys, err := src.List(t.Context(), "nothing"); err != nil || len(keys) != 0 {
					t.Errorf("List(nothing) = %q, %v; want empty", keys, err)
				}
				for k, b := range files {
					if got := readAll(t, src, k); !bytes.Equal(got, b) {
						t.Errorf("Open(%q) = %d bytes; want %d", k, len(got), len(b))
					}
				}
				if _, err := src.Open(t.Context(), "trainA/missing.png"); !errors.Is(err, storage.ErrNotExist) {
					t.Errorf("Open(missing) = %v; want ErrNotExist", err)
				}
				for _, bad := range []string{"../x", "/x", "a//b", "."} {
					if _, err := src.Open(t.Context(), bad); err == nil || errors.Is(err, storage.ErrNotExist) {
						t.Errorf("Open(%q) = %v; want an invalid-key error", bad, err)
					}
				}
				if prefix != "" && !strings.HasSuffix(src.String(), "/datasets/toy") {
					t.Errorf("String() = %q; want the store URL with the prefix", src.String())
				}
			}
		})
	}
}

// TestCacheSecondEpoch: the second pass over a dataset reads nothing from the store.
func TestCacheSecondEpoch(t *testing.T) {
	fsys := newFS(t)
	files := fillDataset(t, fsys, "d", 20)
	s := &counting{Store: fsys}
	c := newCache(t, 10<<20)
	src := storage.DatasetSource(s, "d", c)
	keys, err := src.List(t.Context(), "trainA")
	if err != nil {
		t.Fatal(err)
	}
	for epoch := range 3 {
		before := s.requests()
		for _, k := range keys {
			if got := readAll(t, src, k); !bytes.Equal(got, files[k]) {
				t.Fatalf("epoch %d: %s: wrong bytes", epoch, k)
			}
		}
		got := s.requests() - before
		if want := []int64{20, 0, 0}[epoch]; got != want {
			t.Errorf("epoch %d: %d store requests; want %d", epoch, got, want)
		}
	}
	if st := c.Stats(); st.Misses != 20 || st.Hits != 40 || st.Entries != 20 {
		t.Errorf("Stats = %+v; want 20 misses, 40 hits, 20 entries", st)
	}
}

// TestCacheCorruptEntry: an entry damaged on disk is dropped and fetched again.
func TestCacheCorruptEntry(t *testing.T) {
	fsys := newFS(t)
	files := fillDataset(t, fsys, "", 3)
	s := &counting{Store: fsys}
	dir := filepath.Join(t.TempDir(), "cache")
	c, err := storage.NewCache(dir, 1<<20, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	src := storage.DatasetSource(s, "", c)
	readAll(t, src, "testA/001.png")
	var entries []string
	filepath.WalkDir(filepath.Join(dir, "objects"), func(p string, d os.DirEntry, err error) error {
		if !d.IsDir() {
			entries = append(entries, p)
		}
		return nil
	})
	if len(entries) != 1 {
		t.Fatalf("cache files = %q; want one", entries)
	}
	for _, damage := range []func(p string){
		func(p string) { b, _ := os.ReadFile(p); b[10] ^= 0x40; os.WriteFile(p, b, 0o644) },
		func(p string) { os.Truncate(p, 5) },
		func(p string) { f, _ := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0); f.Write([]byte("x")); f.Close() },
		func(p string) { os.Remove(p) },
	} {
		damage(entries[0])
		before := s.gets.Load()
		if got := readAll(t, src, "testA/001.png"); !bytes.Equal(got, files["testA/001.png"]) {
			t.Fatalf("read after damage: wrong bytes")
		}
		if n := s.gets.Load() - before; n != 1 {
			t.Errorf("read after damage: %d fetches; want 1", n)
		}
		if got := readAll(t, src, "testA/001.png"); !bytes.Equal(got, files["testA/001.png"]) {
			t.Fatalf("read after refetch: wrong bytes")
		}
	}
	if st := c.Stats(); st.Dropped != 4 {
		t.Errorf("Stats.Dropped = %d; want 4", st.Dropped)
	}
}

// TestCacheEvicts: the cache stays under its cap and evicts the least recently used.
func TestCacheEvicts(t *testing.T) {
	fsys := newFS(t)
	for i := range 10 {
		storetest.Put(t, fsys, fmt.Sprintf("o%d", i), storetest.Bytes(uint64(i), 1000))
	}
	s := &counting{Store: fsys}
	c := newCache(t, 3500) // three objects fit
	src := storage.DatasetSource(s, "", c)
	for _, k := range []string{"o0", "o1", "o2", "o0", "o3"} { // o1 is the least recent when o3 comes
		readAll(t, src, k)
	}
	if st := c.Stats(); st.Bytes > 3500 || st.Entries != 3 || st.Evicted != 1 {
		t.Errorf("Stats = %+v; want 3 entries within 3500 bytes, 1 evicted", st)
	}
	before := s.gets.Load()
	for _, k := range []string{"o0", "o2", "o3"} {
		readAll(t, src, k)
	}
	if n := s.gets.Load() - before; n != 0 {
		t.Errorf("reading o0, o2, o3: %d fetches; want 0 (o1 was the one evicted)", n)
	}
	readAll(t, src, "o1")
	if n := s.gets.Load() - before; n != 1 {
		t.Errorf("reading o1: %d fetches; want 1", n)
	}
	// An object larger than the whole cache is streamed and not kept.
	storetest.Put(t, fsys, "huge", storetest.Bytes(99, 5000))
	if got := readAll(t, src, "huge"); len(got) != 5000 {
		t.Errorf("huge: %d bytes", len(got))
	}
	if st := c.Stats(); st.Uncached != 1 || st.Bytes > 3500 {
		t.Errorf("Stats after huge = %+v; want 1 uncached, within 3500 bytes", st)
	}
}

// TestCacheReopen: entries survive a restart; a second process is kept out.
func TestCacheReopen(t *testing.T) {
	fsys := newFS(t)
	fillDataset(t, fsys, "", 4)
	dir := filepath.Join(t.TempDir(), "cache")
	c, err := storage.NewCache(dir, 1<<20, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	src := storage.DatasetSource(fsys, "", c)
	keys, _ := src.List(t.Context(), "trainA")
	for _, k := range keys {
		readAll(t, src, k)
	}
	if _, err := storage.NewCache(dir, 1<<20, nil); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("a second NewCache on the folder = %v; want an in-use error", err)
	}
	c.Close()
	c2, err := storage.NewCache(dir, 1<<20, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	s := &counting{Store: fsys}
	src = storage.DatasetSource(s, "", c2)
	for _, k := range keys {
		readAll(t, src, k)
	}
	if n := s.gets.Load(); n != 0 {
		t.Errorf("reads after reopening the cache: %d fetches; want 0", n)
	}
	if st := c2.Stats(); st.Entries != 4 || st.Hits != 4 {
		t.Errorf("Stats after reopening = %+v; want 4 entries, 4 hits", st)
	}
}

// TestCacheConcurrent: goroutines reading the same keys together fetch each once.
func TestCacheConcurrent(t *testing.T) {
	fsys := newFS(t)
	files := fillDataset(t, fsys, "", 30)
	s := &counting{Store: fsys}
	c := newCache(t, 1<<20)
	src := storage.DatasetSource(s, "", c)
	keys, _ := src.List(t.Context(), "trainA")
	var wg sync.WaitGroup
	errs := make(chan error, 16*len(keys))
	for w := range 16 {
		wg.Go(func() {
			for i := range keys {
				k := keys[(i+w)%len(keys)]
				rc, err := src.Open(t.Context(), k)
				if err != nil {
					errs <- err
					continue
				}
				b, err := io.ReadAll(rc)
				rc.Close()
				if err != nil || !bytes.Equal(b, files[k]) {
					errs <- fmt.Errorf("%s: %d bytes, %v", k, len(b), err)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := s.gets.Load(); n != int64(len(keys)) {
		t.Errorf("16 readers of %d keys: %d fetches; want %d", len(keys), n, len(keys))
	}
}

// TestPush: a folder goes into a store; a second push sends nothing; a changed
// file is sent again; links to folders inside are not copied twice.
func TestPush(t *testing.T) {
	dir := t.TempDir()
	write := func(rel string, b []byte) {
		p := filepath.Join(dir, filepath.FromSlash(rel))
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 12 {
		write(fmt.Sprintf("trainA/%02d.png", i), storetest.Bytes(uint64(i), 500+i))
		write(fmt.Sprintf("testA/%02d.png", i), storetest.Bytes(uint64(100+i), 300))
	}
	if err := os.Symlink("testA", filepath.Join(dir, "valA")); err != nil {
		t.Fatal(err)
	}
	other := t.TempDir() // a split linked from another disk is followed
	os.WriteFile(filepath.Join(other, "x.png"), []byte("elsewhere"), 0o644)
	if err := os.Symlink(other, filepath.Join(dir, "trainB")); err != nil {
		t.Fatal(err)
	}
	dst, err := storage.NewFS(filepath.Join(t.TempDir(), "store"), storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s := &counting{Store: dst}
	var progressed atomic.Int64
	opts := storage.PushOptions{Workers: 3, Verify: true, Progress: func(n int64) { progressed.Add(n) }, Log: zaptest.NewLogger(t)}
	rep, err := storage.Push(t.Context(), dir, s, opts)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Created || rep.Files != 25 || rep.Uploaded != 25 || rep.Skipped != 0 || !slices.Equal(rep.LinksSkipped, []string{"valA"}) {
		t.Errorf("first push = %+v; want created, 25 files uploaded, valA skipped", rep)
	}
	if progressed.Load() != rep.Bytes {
		t.Errorf("progress = %d bytes; want %d", progressed.Load(), rep.Bytes)
	}
	if b := storetest.Get(t, dst, "trainB/x.png"); string(b) != "elsewhere" {
		t.Errorf("trainB/x.png = %q", b)
	}
	puts := s.puts.Load()
	rep, err = storage.Push(t.Context(), dir, s, opts)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Created || rep.Uploaded != 0 || rep.Skipped != 25 || s.puts.Load() != puts {
		t.Errorf("second push = %+v, %d puts; want everything skipped", rep, s.puts.Load()-puts)
	}
	write("trainA/03.png", storetest.Bytes(1000, 503)) // same size, other bytes
	write("trainA/04.png", []byte("shorter"))
	rep, err = storage.Push(t.Context(), dir, s, opts)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Uploaded != 2 || rep.Skipped != 23 {
		t.Errorf("push after changing two files = %+v; want 2 uploaded, 23 skipped", rep)
	}
	if b := storetest.Get(t, dst, "trainA/03.png"); !bytes.Equal(b, storetest.Bytes(1000, 503)) {
		t.Errorf("trainA/03.png not updated")
	}
}

// TestPushLinks: a link back into the folder is skipped, a loop outside it is an
// error, not a hang.
func TestPushLinks(t *testing.T) {
	dir, other := t.TempDir(), t.TempDir()
	os.Symlink(dir, filepath.Join(other, "back"))
	os.Symlink(other, filepath.Join(dir, "out"))
	os.WriteFile(filepath.Join(other, "f"), []byte("f"), 0o644)
	files, links, err := storage.PushPlan(dir)
	if err != nil || len(files) != 1 || files[0].Key != "out/f" || !slices.Equal(links, []string{"out/back"}) {
		t.Errorf("PushPlan = %+v, %q, %v; want out/f, out/back skipped", files, links, err)
	}
	os.Symlink(other, filepath.Join(other, "self"))
	if _, _, err := storage.PushPlan(dir); err == nil || !strings.Contains(err.Error(), "loop") {
		t.Errorf("PushPlan with a loop = %v; want a loop error", err)
	}
}
