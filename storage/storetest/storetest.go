// Package storetest is the conformance suite of storage.Store, as fstest.TestFS is
// for fs.FS: every backend's test calls Run, and a backend passes when it keeps the
// contract of storage's package documentation.
package storetest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/crdgo/crdgo/storage"
)

// Run checks the store contract. newStore returns an empty store that no other
// subtest uses (a fresh folder, a fresh prefix); Run calls it once per subtest.
func Run(t *testing.T, newStore func(t *testing.T) storage.Store) {
	tests := []struct {
		name string
		f    func(*testing.T, storage.Store)
	}{
		{"PutGetStat", testPutGetStat},
		{"UnknownSize", testUnknownSize},
		{"SizeMismatch", testSizeMismatch},
		{"Overwrite", testOverwrite},
		{"Missing", testMissing},
		{"Delete", testDelete},
		{"List", testList},
		{"ListPages", testListPages},
		{"InvalidKeys", testInvalidKeys},
		{"SpecialKeys", testSpecialKeys},
		{"Canceled", testCanceled},
		{"Concurrent", testConcurrent},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.f(t, newStore(t)) })
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// Bytes returns n reproducible pseudo-random bytes of seed.
func Bytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 0x5eed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// SHA256 is the lower-case hex SHA-256 of b.
func SHA256(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// onlyReader hides every method but Read (a stream that cannot seek or ReadAt).
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

// Put writes b at key through a plain stream of known size and checks the returned info.
func Put(t *testing.T, s storage.Store, key string, b []byte) storage.ObjectInfo {
	t.Helper()
	info, err := s.Put(ctxT(t), key, onlyReader{bytes.NewReader(b)}, int64(len(b)))
	if err != nil {
		t.Fatalf("Put(%q, %d bytes): %v", key, len(b), err)
	}
	if info.Key != key || info.Size != int64(len(b)) || info.SHA256 != SHA256(b) {
		t.Fatalf("Put(%q, %d bytes) = key %q size %d sha %s; want %q %d %s", key, len(b), info.Key, info.Size, info.SHA256, key, len(b), SHA256(b))
	}
	return info
}

// Get reads key whole, checking the info Get returns against what it read.
func Get(t *testing.T, s storage.Store, key string) []byte {
	t.Helper()
	rc, info, err := s.Get(ctxT(t), key)
	if err != nil {
		t.Fatalf("Get(%q): %v", key, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("Get(%q): read: %v", key, err)
	}
	if info.Key != key || info.Size != int64(len(b)) || info.SHA256 != "" && info.SHA256 != SHA256(b) {
		t.Fatalf("Get(%q) info = key %q size %d sha %s; read %d bytes sha %s", key, info.Key, info.Size, info.SHA256, len(b), SHA256(b))
	}
	return b
}

func wantBytes(t *testing.T, s storage.Store, key string, want []byte) {
	t.Helper()
	if got := Get(t, s, key); !bytes.Equal(got, want) {
		t.Fatalf("Get(%q) = %d bytes sha %s; want %d bytes sha %s", key, len(got), SHA256(got), len(want), SHA256(want))
	}
}

func wantMissing(t *testing.T, s storage.Store, key string) {
	t.Helper()
	if _, err := s.Stat(ctxT(t), key); !errors.Is(err, storage.ErrNotExist) || !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Stat(%q) = %v; want ErrNotExist", key, err)
	}
	if rc, _, err := s.Get(ctxT(t), key); !errors.Is(err, storage.ErrNotExist) {
		if rc != nil {
			rc.Close()
		}
		t.Fatalf("Get(%q) = %v; want ErrNotExist", key, err)
	}
}

func testPutGetStat(t *testing.T, s storage.Store) {
	for i, n := range []int{0, 1, 1000, 300 << 10} {
		key := fmt.Sprintf("dir/obj-%d.bin", i)
		b := Bytes(uint64(i), n)
		before := time.Now().Add(-time.Minute)
		Put(t, s, key, b)
		wantBytes(t, s, key, b)
		info, err := s.Stat(ctxT(t), key)
		if err != nil {
			t.Fatalf("Stat(%q): %v", key, err)
		}
		if info.Key != key || info.Size != int64(n) || info.SHA256 != SHA256(b) {
			t.Errorf("Stat(%q) = key %q size %d sha %s; want %q %d %s", key, info.Key, info.Size, info.SHA256, key, n, SHA256(b))
		}
		if info.ModTime.Before(before) || info.ModTime.After(time.Now().Add(time.Minute)) {
			t.Errorf("Stat(%q).ModTime = %v; want about now", key, info.ModTime)
		}
	}
	// A reader that can seek and read at offsets, positioned after its start.
	b := Bytes(9, 5000)
	r := bytes.NewReader(b)
	r.Seek(1000, io.SeekStart)
	info, err := s.Put(ctxT(t), "seeker", r, 3000)
	if err != nil {
		t.Fatalf("Put(seeker at 1000, 3000 bytes): %v", err)
	}
	if info.Size != 3000 || info.SHA256 != SHA256(b[1000:4000]) {
		t.Errorf("Put(seeker at 1000, 3000 bytes) = size %d sha %s; want 3000 %s", info.Size, info.SHA256, SHA256(b[1000:4000]))
	}
	wantBytes(t, s, "seeker", b[1000:4000])
}

func testUnknownSize(t *testing.T, s storage.Store) {
	for i, n := range []int{0, 1, 70 << 10, 9 << 20} { // 9 MiB: over an 8 MiB memory spool
		key := fmt.Sprintf("unknown-%d", i)
		b := Bytes(uint64(100+i), n)
		info, err := s.Put(ctxT(t), key, onlyReader{bytes.NewReader(b)}, -1)
		if err != nil {
			t.Fatalf("Put(%q, size -1, %d bytes): %v", key, n, err)
		}
		if info.Size != int64(n) || info.SHA256 != SHA256(b) {
			t.Errorf("Put(%q, size -1) = size %d sha %s; want %d %s", key, info.Size, info.SHA256, n, SHA256(b))
		}
		wantBytes(t, s, key, b)
	}
}

func testSizeMismatch(t *testing.T, s storage.Store) {
	old := Bytes(1, 100)
	Put(t, s, "kept", old)
	for _, c := range []struct {
		have     int
		declared int64
	}{{5, 10}, {0, 1}, {9 << 20, 10 << 20}} {
		for _, key := range []string{"absent", "kept"} {
			b := Bytes(2, c.have)
			if _, err := s.Put(ctxT(t), key, onlyReader{bytes.NewReader(b)}, c.declared); err == nil {
				t.Errorf("Put(%q, %d bytes, declared %d) = nil error; want an error", key, c.have, c.declared)
			}
			if _, err := s.Put(ctxT(t), key, bytes.NewReader(b), c.declared); err == nil {
				t.Errorf("Put(%q, bytes.Reader of %d, declared %d) = nil error; want an error", key, c.have, c.declared)
			}
		}
		wantMissing(t, s, "absent")
		wantBytes(t, s, "kept", old)
	}
	// A longer reader gives its first size bytes.
	long := Bytes(3, 100)
	r := onlyReader{bytes.NewReader(long)}
	if info, err := s.Put(ctxT(t), "long", r, 60); err != nil || info.Size != 60 || info.SHA256 != SHA256(long[:60]) {
		t.Errorf("Put(100-byte reader, declared 60) = %+v, %v; want the first 60 bytes", info, err)
	}
	wantBytes(t, s, "long", long[:60])
	if rest, _ := io.ReadAll(r); len(rest) > 40 {
		t.Errorf("Put(100-byte reader, declared 60) left %d bytes unread; want at most 40", len(rest))
	}
}

func testOverwrite(t *testing.T, s storage.Store) {
	a, b := Bytes(1, 2000), Bytes(2, 10)
	Put(t, s, "k", a)
	Put(t, s, "k", b)
	wantBytes(t, s, "k", b)
	info, err := s.Stat(ctxT(t), "k")
	if err != nil || info.Size != 10 || info.SHA256 != SHA256(b) {
		t.Errorf("Stat(k) after overwrite = %+v, %v; want size 10 sha %s", info, err, SHA256(b))
	}
	Put(t, s, "k", a)
	wantBytes(t, s, "k", a)
}

func testMissing(t *testing.T, s storage.Store) {
	wantMissing(t, s, "nothing")
	wantMissing(t, s, "no/such/key.png")
	Put(t, s, "dir/x", []byte("x"))
	wantMissing(t, s, "dir") // a prefix of keys is not an object
	if err := s.Delete(ctxT(t), "nothing"); err != nil {
		t.Errorf("Delete(missing) = %v; want nil", err)
	}
}

func testDelete(t *testing.T, s storage.Store) {
	Put(t, s, "a/1", []byte("one"))
	Put(t, s, "a/2", []byte("two"))
	if err := s.Delete(ctxT(t), "a/1"); err != nil {
		t.Fatalf("Delete(a/1): %v", err)
	}
	wantMissing(t, s, "a/1")
	wantBytes(t, s, "a/2", []byte("two"))
	if keys := listKeys(t, s, "", 100); !slices.Equal(keys, []string{"a/2"}) {
		t.Errorf("List after Delete = %q; want [a/2]", keys)
	}
	if err := s.Delete(ctxT(t), "a/1"); err != nil {
		t.Errorf("Delete(a/1) again = %v; want nil", err)
	}
}

// listKeys pages through prefix, limit keys at a time, checking order and More.
func listKeys(t *testing.T, s storage.Store, prefix string, limit int) []string {
	t.Helper()
	var keys []string
	after := ""
	for pages := 0; ; pages++ {
		if pages > 10000 {
			t.Fatalf("List(%q, limit %d): no end after %d pages", prefix, limit, pages)
		}
		p, err := s.List(ctxT(t), prefix, after, limit)
		if err != nil {
			t.Fatalf("List(%q, after %q, %d): %v", prefix, after, limit, err)
		}
		if len(p.Objects) > limit {
			t.Fatalf("List(%q, after %q, %d) gave %d objects", prefix, after, limit, len(p.Objects))
		}
		if p.More && len(p.Objects) == 0 {
			t.Fatalf("List(%q, after %q, %d): More with an empty page", prefix, after, limit)
		}
		for _, o := range p.Objects {
			if o.Key <= after {
				t.Fatalf("List(%q, after %q, %d): key %q not after %q", prefix, after, limit, o.Key, after)
			}
			after = o.Key
			keys = append(keys, o.Key)
		}
		if !p.More {
			return keys
		}
	}
}

func testList(t *testing.T, s storage.Store) {
	if p, err := s.List(ctxT(t), "", "", 10); err != nil || len(p.Objects) != 0 || p.More {
		t.Fatalf("List(empty store) = %+v, %v; want no objects, no more", p, err)
	}
	// Keys whose order differs from a folder walk's: "a.b" < "a/…" < "ab" bytewise.
	keys := []string{"a/b/c", "a/b.txt", "a.b", "ab", "a/a", "b/1", "b/10", "b/2", "a-", "trainA/0001.png", "trainAB/x", "z"}
	sizes := map[string]int{}
	for i, k := range keys {
		sizes[k] = i * 3
		Put(t, s, k, Bytes(uint64(i), i*3))
	}
	sorted := slices.Sorted(slices.Values(keys))
	for _, c := range []struct {
		prefix string
		want   []string
	}{
		{"", sorted},
		{"a", []string{"a-", "a.b", "a/a", "a/b.txt", "a/b/c", "ab"}},
		{"a/", []string{"a/a", "a/b.txt", "a/b/c"}},
		{"a/b", []string{"a/b.txt", "a/b/c"}},
		{"a/b/", []string{"a/b/c"}},
		{"b/", []string{"b/1", "b/10", "b/2"}},
		{"trainA/", []string{"trainA/0001.png"}},
		{"trainA", []string{"trainA/0001.png", "trainAB/x"}},
		{"nothing/", nil},
	} {
		if got := listKeys(t, s, c.prefix, 1000); !slices.Equal(got, c.want) {
			t.Errorf("List(%q) = %q; want %q", c.prefix, got, c.want)
		}
	}
	p, err := s.List(ctxT(t), "", "", 1000)
	if err != nil {
		t.Fatal(err)
	}
	for i, o := range p.Objects {
		b := Bytes(uint64(slices.Index(keys, o.Key)), sizes[o.Key])
		if o.Size != int64(len(b)) || o.SHA256 != "" && o.SHA256 != SHA256(b) {
			t.Errorf("List()[%d] = %q size %d sha %s; want size %d sha %s", i, o.Key, o.Size, o.SHA256, len(b), SHA256(b))
		}
	}
	// after between keys and past the end.
	if p, err := s.List(ctxT(t), "b/", "b/10", 10); err != nil || len(p.Objects) != 1 || p.Objects[0].Key != "b/2" || p.More {
		t.Errorf("List(b/, after b/10) = %+v, %v; want [b/2], no more", p, err)
	}
	if p, err := s.List(ctxT(t), "", "zz", 10); err != nil || len(p.Objects) != 0 || p.More {
		t.Errorf("List(after zz) = %+v, %v; want nothing", p, err)
	}
	if _, err := s.List(ctxT(t), "", "", 0); err == nil {
		t.Errorf("List(limit 0) = nil error; want an error")
	}
	if _, err := s.List(ctxT(t), "/a", "", 1); err == nil {
		t.Errorf("List(prefix /a) = nil error; want an error")
	}
}

func testListPages(t *testing.T, s storage.Store) {
	var want []string
	for i := range 23 {
		k := fmt.Sprintf("p/%02d", i)
		want = append(want, k)
		Put(t, s, k, []byte{byte(i)})
	}
	Put(t, s, "q", nil)
	for _, limit := range []int{1, 2, 3, 7, 22, 23, 24, 1000} {
		if got := listKeys(t, s, "p/", limit); !slices.Equal(got, want) {
			t.Errorf("List(p/) by pages of %d = %q; want %q", limit, got, want)
		}
	}
	all, err := storage.ListAll(ctxT(t), s, "")
	if err != nil || len(all) != 24 || all[23].Key != "q" {
		t.Errorf("ListAll = %d objects, %v; want 24 ending in q", len(all), err)
	}
}

func testInvalidKeys(t *testing.T, s storage.Store) {
	Put(t, s, "a/b", []byte("x"))
	for _, key := range []string{"", "/a", "a/", "a//b", ".", "..", "../a", "a/../b", "a/./b", "a\\b", "a\x00b"} {
		ctx := ctxT(t)
		if _, err := s.Put(ctx, key, strings.NewReader("y"), 1); err == nil || errors.Is(err, storage.ErrNotExist) {
			t.Errorf("Put(%q) = %v; want an invalid-key error", key, err)
		}
		if rc, _, err := s.Get(ctx, key); err == nil || errors.Is(err, storage.ErrNotExist) {
			if rc != nil {
				rc.Close()
			}
			t.Errorf("Get(%q) = %v; want an invalid-key error", key, err)
		}
		if _, err := s.Stat(ctx, key); err == nil || errors.Is(err, storage.ErrNotExist) {
			t.Errorf("Stat(%q) = %v; want an invalid-key error", key, err)
		}
		if err := s.Delete(ctx, key); err == nil {
			t.Errorf("Delete(%q) = nil; want an invalid-key error", key)
		}
	}
	if keys := listKeys(t, s, "", 10); !slices.Equal(keys, []string{"a/b"}) {
		t.Errorf("List after invalid puts = %q; want [a/b]", keys)
	}
	wantBytes(t, s, "a/b", []byte("x"))
}

func testSpecialKeys(t *testing.T, s storage.Store) {
	keys := []string{"with space/ü ñ.png", "a+b=c&d;e.jpg", "percent%20x", "question?mark", "hash#tag", "quote\"'", "..dots", "x/.hidden"}
	for i, k := range keys {
		Put(t, s, k, Bytes(uint64(i), 10+i))
	}
	for i, k := range keys {
		wantBytes(t, s, k, Bytes(uint64(i), 10+i))
	}
	if got, want := listKeys(t, s, "", 3), slices.Sorted(slices.Values(keys)); !slices.Equal(got, want) {
		t.Errorf("List = %q; want %q", got, want)
	}
}

func testCanceled(t *testing.T, s storage.Store) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := s.Put(ctx, "c", bytes.NewReader([]byte("abc")), 3); err == nil {
		t.Errorf("Put(canceled ctx) = nil error")
	}
	if _, err := s.Stat(ctx, "c"); err == nil {
		t.Errorf("Stat(canceled ctx) = nil error")
	}
	wantMissing(t, s, "c")
	// A reader that fails half-way writes nothing.
	failing := io.MultiReader(bytes.NewReader(Bytes(3, 1000)), errReader{})
	if _, err := s.Put(ctxT(t), "c", failing, 2000); err == nil {
		t.Errorf("Put(reader failing at 1000 of 2000) = nil error")
	}
	if _, err := s.Put(ctxT(t), "c", io.MultiReader(bytes.NewReader(Bytes(3, 1000)), errReader{}), -1); err == nil {
		t.Errorf("Put(reader failing at 1000, size -1) = nil error")
	}
	wantMissing(t, s, "c")
}

// read reads key whole (for goroutines, which must not call t.Fatal).
func read(ctx context.Context, s storage.Store, key string) ([]byte, error) {
	rc, _, err := s.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("source broken") }

func testConcurrent(t *testing.T, s storage.Store) {
	const workers, each = 8, 6
	a, b := Bytes(10, 40<<10), Bytes(11, 50<<10)
	Put(t, s, "shared", a)
	var wg sync.WaitGroup
	errs := make(chan error, workers*each*3)
	for w := range workers {
		wg.Go(func() {
			ctx := ctxT(t)
			for i := range each {
				key := fmt.Sprintf("w%d/%d", w, i)
				data := Bytes(uint64(w*100+i), 1000+w*10+i)
				if _, err := s.Put(ctx, key, bytes.NewReader(data), int64(len(data))); err != nil {
					errs <- err
					continue
				}
				// Writers and readers of one key: a reader sees one version whole.
				v := a
				if (w+i)%2 == 1 {
					v = b
				}
				if _, err := s.Put(ctx, "shared", bytes.NewReader(v), int64(len(v))); err != nil {
					errs <- err
				}
				if got, err := read(ctx, s, "shared"); err != nil {
					errs <- err
				} else if !bytes.Equal(got, a) && !bytes.Equal(got, b) {
					errs <- fmt.Errorf("shared: read %d bytes sha %s, neither version", len(got), SHA256(got))
				}
				if got, err := read(ctx, s, key); err != nil {
					errs <- err
				} else if !bytes.Equal(got, data) {
					errs <- fmt.Errorf("%s: read back %d bytes, wrote %d", key, len(got), len(data))
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if keys := listKeys(t, s, "w3/", 2); len(keys) != each {
		t.Errorf("List(w3/) = %q; want %d keys", keys, each)
	}
}
