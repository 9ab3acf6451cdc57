package storage

import (
	"bytes"
	"container/list"
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
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"
)

// Cache keeps copies of objects on local disk, so that a dataset's second epoch
// reads nothing from the network. It holds at most MaxBytes of objects and evicts
// the least recently used. Every entry carries its SHA-256 in its file name and is
// checked against it on every read; an entry that fails (a bad disk, a truncated
// file after a crash) is dropped and fetched again.
//
// Entries are keyed by store URL and key and are assumed not to change in the
// store while cached (datasets are written once); a changed object is seen after
// its entry is evicted or the cache folder is removed.
//
// One process uses a cache folder at a time (it holds a lock on DIR/lock); within
// it, Open is safe for concurrent use and fetches each object once however many
// goroutines ask for it together.
type Cache struct {
	dir string
	max int64
	log *zap.Logger
	lk  *os.File

	mu       sync.Mutex
	entries  map[string]*list.Element // id → element of lru holding *cacheEntry
	lru      *list.List               // front: most recently used
	size     int64
	inflight map[string]*cacheFetch

	hits, misses, dropped, evicted, uncached atomic.Int64
}

type cacheEntry struct {
	id, sha string
	size    int64
}

type cacheFetch struct {
	done chan struct{}
	err  error
}

// CacheStats counts what a Cache did since it was opened.
type CacheStats struct {
	Hits     int64 // reads served from disk
	Misses   int64 // reads that fetched the object
	Dropped  int64 // entries that failed their hash check and were fetched again
	Evicted  int64 // entries removed to stay under the size cap
	Uncached int64 // objects larger than the cap, streamed without a copy
	Entries  int
	Bytes    int64
}

// cacheMemory is the largest entry read into memory to be verified before it is
// handed out; larger ones are hashed in a first pass over the file.
const cacheMemory = 32 << 20

// NewCache opens (creating it if needed) the cache in dir, holding at most
// maxBytes of objects. Entries already there are kept, oldest written first out.
func NewCache(dir string, maxBytes int64, log *zap.Logger) (*Cache, error) {
	if maxBytes < 1 {
		return nil, fmt.Errorf("storage: cache %s: size cap %d: want ≥ 1 byte", dir, maxBytes)
	}
	if log == nil {
		log = zap.NewNop()
	}
	c := &Cache{dir: dir, max: maxBytes, log: log.With(zap.String("cache", dir)),
		entries: map[string]*list.Element{}, lru: list.New(), inflight: map[string]*cacheFetch{}}
	for _, d := range []string{c.objDir(), c.tmpDir()} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("storage: cache: %w", err)
		}
	}
	lk, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("storage: cache: %w", err)
	}
	if err := syscall.Flock(int(lk.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lk.Close()
		return nil, fmt.Errorf("storage: cache %s: in use by another process (%v): give each process its own folder", dir, err)
	}
	c.lk = lk
	if err := c.load(); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func (c *Cache) objDir() string { return filepath.Join(c.dir, "objects") }
func (c *Cache) tmpDir() string { return filepath.Join(c.dir, "tmp") }

func (c *Cache) path(e *cacheEntry) string {
	return filepath.Join(c.objDir(), e.id[:2], e.id+"-"+e.sha)
}

// load indexes the entries on disk, oldest first, and trims them to the cap.
func (c *Cache) load() error {
	os.RemoveAll(c.tmpDir()) // fetches cut short by a crash
	if err := os.MkdirAll(c.tmpDir(), 0o755); err != nil {
		return fmt.Errorf("storage: cache: %w", err)
	}
	type found struct {
		e   *cacheEntry
		mod time.Time
	}
	var all []found
	err := filepath.WalkDir(c.objDir(), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		id, sha, ok := parseCacheName(d.Name())
		if !ok || filepath.Base(filepath.Dir(p)) != id[:2] {
			return nil // not ours: leave it alone, uncounted
		}
		fi, err := d.Info()
		if err != nil {
			return nil
		}
		if _, dup := c.entries[id]; dup {
			os.Remove(p)
			return nil
		}
		e := &cacheEntry{id: id, sha: sha, size: fi.Size()}
		c.entries[id] = nil
		all = append(all, found{e, fi.ModTime()})
		return nil
	})
	if err != nil {
		return fmt.Errorf("storage: cache %s: %w", c.dir, err)
	}
	slices.SortFunc(all, func(a, b found) int { return a.mod.Compare(b.mod) })
	for _, f := range all {
		c.entries[f.e.id] = c.lru.PushFront(f.e)
		c.size += f.e.size
	}
	c.evict(nil)
	return nil
}

// parseCacheName splits an entry's file name, "<id>-<sha256>", id 40 hex digits.
func parseCacheName(name string) (id, sha string, ok bool) {
	id, sha, ok = strings.Cut(name, "-")
	if !ok || len(id) != 40 || !isHexSHA256(sha) || !isHexSHA256(id+strings.Repeat("0", 24)) {
		return "", "", false
	}
	return id, sha, true
}

func cacheID(store, key string) string {
	h := sha256.Sum256([]byte(store + "\n" + key))
	return hex.EncodeToString(h[:20])
}

// Close releases the folder's lock. Readers already handed out stay valid.
func (c *Cache) Close() error {
	if c.lk == nil {
		return nil
	}
	err := c.lk.Close() // closing drops the flock
	c.lk = nil
	return err
}

// Stats returns the counters.
func (c *Cache) Stats() CacheStats {
	c.mu.Lock()
	n, b := c.lru.Len(), c.size
	c.mu.Unlock()
	return CacheStats{Hits: c.hits.Load(), Misses: c.misses.Load(), Dropped: c.dropped.Load(),
		Evicted: c.evicted.Load(), Uncached: c.uncached.Load(), Entries: n, Bytes: b}
}

// Open returns the object at key of s, from disk when cached, else fetched from
// s and kept. The bytes handed out have passed their hash check (objects over 32
// MiB are checked in a first pass, then streamed).
func (c *Cache) Open(ctx context.Context, s Store, key string) (io.ReadCloser, error) {
	id := cacheID(s.String(), key)
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		c.mu.Lock()
		if el := c.entries[id]; el != nil {
			e := el.Value.(*cacheEntry)
			c.lru.MoveToFront(el)
			c.mu.Unlock()
			rc, err := c.read(e)
			if err == nil {
				c.hits.Add(1)
				return rc, nil
			}
			c.drop(e, err)
			continue
		}
		if f := c.inflight[id]; f != nil {
			c.mu.Unlock()
			select {
			case <-f.done:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			if f.err != nil && (errors.Is(f.err, ErrNotExist) || isPermanent(f.err) || errors.Is(f.err, ErrAccess) || errors.Is(f.err, ErrNoBucket)) {
				return nil, f.err
			}
			continue // its entry is in, or its fetch failed for its own reasons: try again
		}
		f := &cacheFetch{done: make(chan struct{})}
		c.inflight[id] = f
		c.mu.Unlock()
		rc, err := c.fetch(ctx, s, key, id)
		c.mu.Lock()
		delete(c.inflight, id)
		c.mu.Unlock()
		f.err = err
		close(f.done)
		return rc, err
	}
}

// read opens an entry and checks its hash.
func (c *Cache) read(e *cacheEntry) (io.ReadCloser, error) {
	f, err := os.Open(c.path(e))
	if err != nil {
		return nil, err
	}
	if e.size <= cacheMemory {
		defer f.Close()
		b := make([]byte, e.size+1)
		n, err := io.ReadFull(f, b)
		switch {
		case err == nil:
			return nil, fmt.Errorf("longer than %d bytes: %w", e.size, ErrCorrupt)
		case err != io.ErrUnexpectedEOF && err != io.EOF:
			return nil, err
		}
		b = b[:n]
		if sum := sha256.Sum256(b); int64(n) != e.size || hex.EncodeToString(sum[:]) != e.sha {
			return nil, fmt.Errorf("%d bytes, SHA-256 %x; want %d bytes, %s: %w", n, sum, e.size, e.sha, ErrCorrupt)
		}
		return io.NopCloser(bytes.NewReader(b)), nil
	}
	h := newHashReader(f)
	if _, err := io.Copy(io.Discard, h); err != nil {
		f.Close()
		return nil, err
	}
	if h.n != e.size || h.sum() != e.sha {
		f.Close()
		return nil, fmt.Errorf("%d bytes, SHA-256 %s; want %d bytes, %s: %w", h.n, h.sum(), e.size, e.sha, ErrCorrupt)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// drop removes an entry that failed to read, if it is still the one indexed.
func (c *Cache) drop(e *cacheEntry, why error) {
	c.mu.Lock()
	if el := c.entries[e.id]; el != nil && el.Value.(*cacheEntry) == e {
		c.lru.Remove(el)
		delete(c.entries, e.id)
		c.size -= e.size
		os.Remove(c.path(e))
	}
	c.mu.Unlock()
	c.dropped.Add(1)
	c.log.Warn("storage: cache entry failed its check, fetching it again", zap.String("file", c.path(e)), zap.Error(why))
}

// fetch gets an object, keeps a copy, and returns its bytes.
func (c *Cache) fetch(ctx context.Context, s Store, key, id string) (io.ReadCloser, error) {
	c.misses.Add(1)
	rc, info, err := s.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	if info.Size > c.max {
		c.uncached.Add(1)
		return rc, nil // larger than the whole cache: stream it, keep nothing
	}
	defer rc.Close()
	tmp, err := os.CreateTemp(c.tmpDir(), "fetch-*")
	if err != nil {
		return nil, fmt.Errorf("storage: cache: %w", err)
	}
	defer os.Remove(tmp.Name()) // a no-op once renamed
	defer tmp.Close()
	h := newHashReader(rc) // rc checks the store's recorded hash; h gives it when there is none
	var buf *bytes.Buffer
	var w io.Writer = tmp
	if info.Size <= cacheMemory {
		buf = bytes.NewBuffer(make([]byte, 0, info.Size))
		w = io.MultiWriter(tmp, buf)
	}
	if _, err := copyCtx(ctx, w, h); err != nil {
		return nil, err
	}
	if h.n > c.max {
		c.uncached.Add(1)
		return nil, fmt.Errorf("storage: cache: %s/%s grew to %d bytes while read, over the cache's %d", s, key, h.n, c.max)
	}
	e := &cacheEntry{id: id, sha: h.sum(), size: h.n}
	p := c.path(e)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return nil, fmt.Errorf("storage: cache: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return nil, fmt.Errorf("storage: cache: %w", err)
	}
	// No fsync: a file cut short by a crash fails its check and is fetched again.
	if err := os.Rename(tmp.Name(), p); err != nil {
		return nil, fmt.Errorf("storage: cache: %w", err)
	}
	c.mu.Lock()
	if old := c.entries[id]; old != nil { // cannot happen while fetches are single; stay consistent anyway
		oe := old.Value.(*cacheEntry)
		c.lru.Remove(old)
		c.size -= oe.size
		if oe.sha != e.sha {
			os.Remove(c.path(oe))
		}
	}
	c.entries[id] = c.lru.PushFront(e)
	c.size += e.size
	c.evict(e)
	c.mu.Unlock()
	if buf != nil {
		return io.NopCloser(bytes.NewReader(buf.Bytes())), nil
	}
	return c.read(e)
}

// evict removes least recently used entries, never keep, until the cache fits.
// The caller holds c.mu (or has the cache to itself).
func (c *Cache) evict(keep *cacheEntry) {
	for c.size > c.max {
		el := c.lru.Back()
		if el == nil {
			return
		}
		e := el.Value.(*cacheEntry)
		if e == keep {
			if el = el.Prev(); el == nil {
				return
			}
			e = el.Value.(*cacheEntry)
		}
		c.lru.Remove(el)
		delete(c.entries, e.id)
		c.size -= e.size
		os.Remove(c.path(e)) // a reader holding it open keeps its bytes
		c.evicted.Add(1)
	}
}
