package storage_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/sync/errgroup"

	"github.com/crdgo/crdgo/crd/data"
	"github.com/crdgo/crdgo/storage"
	"github.com/crdgo/crdgo/storage/miniotest"
	"github.com/crdgo/crdgo/storage/storetest"
)

// counter is a transport that counts requests and the request body bytes sent,
// and calls onSent (once per threshold crossing) as bodies go out.
type counter struct {
	rt       http.RoundTripper
	requests atomic.Int64
	sent     atomic.Int64
	mu       sync.Mutex
	methods  map[string]int
	onSent   func(total int64)
}

func newCounter() *counter {
	t, _ := minio.DefaultTransport(false)
	return &counter{rt: t, methods: map[string]int{}}
}

func (c *counter) RoundTrip(req *http.Request) (*http.Response, error) {
	c.requests.Add(1)
	c.mu.Lock()
	m := req.Method
	if req.URL.Query().Has("uploadId") || req.URL.Query().Has("uploads") {
		m += " multipart"
	}
	c.methods[m]++
	c.mu.Unlock()
	if req.Body != nil && c.onSent != nil {
		req.Body = &countBody{ReadCloser: req.Body, c: c}
	}
	return c.rt.RoundTrip(req)
}

func (c *counter) count(method string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.methods[method]
}

type countBody struct {
	io.ReadCloser
	c *counter
}

func (b *countBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.c.onSent(b.c.sent.Add(int64(n)))
	return n, err
}

// minioEnv is one server and one bucket shared by a test's subtests.
type minioEnv struct {
	srv    *miniotest.Server
	bucket string
	admin  *minio.Client // plain minio-go, to look behind the store's back
}

func newMinio(t *testing.T) *minioEnv {
	srv := miniotest.New(t)
	admin, err := minio.New(srv.Endpoint(), &minio.Options{Creds: credentials.NewStaticV4(srv.AccessKey, srv.SecretKey, "")})
	if err != nil {
		t.Fatal(err)
	}
	e := &minioEnv{srv: srv, bucket: "crd", admin: admin}
	if err := admin.MakeBucket(t.Context(), e.bucket, minio.MakeBucketOptions{}); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *minioEnv) opts(t *testing.T) storage.Options {
	o := storage.DefaultOptions()
	o.AccessKey, o.SecretKey = e.srv.AccessKey, e.srv.SecretKey
	o.Log = zaptest.NewLogger(t)
	o.SpoolDir = t.TempDir()
	return o
}

func (e *minioEnv) open(t *testing.T, prefix string, o storage.Options) *storage.S3 {
	t.Helper()
	loc, err := storage.ParseURL(e.srv.URL(e.bucket, prefix))
	if err != nil {
		t.Fatal(err)
	}
	s, err := storage.NewS3(t.Context(), loc, o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

var prefixes atomic.Int64

func TestS3(t *testing.T) {
	e := newMinio(t)
	storetest.Run(t, func(t *testing.T) storage.Store {
		return e.open(t, fmt.Sprintf("conformance/%d", prefixes.Add(1)), e.opts(t))
	})
	t.Run("Corrupt", func(t *testing.T) { testS3Corrupt(t, e) })
	t.Run("ManyObjects", func(t *testing.T) { testS3ManyObjects(t, e) })
	t.Run("WrongCredentials", func(t *testing.T) { testS3WrongCredentials(t, e) })
	t.Run("NoBucket", func(t *testing.T) { testS3NoBucket(t, e) })
	t.Run("DatasetPushAndRead", func(t *testing.T) { testS3Dataset(t, e) })
	t.Run("Large", func(t *testing.T) { testS3Large(t, e) })
	t.Run("KillDuringUpload", func(t *testing.T) { testS3KillDuringUpload(t, e) })
	t.Run("KillDuringDownload", func(t *testing.T) { testS3KillDuringDownload(t, e) })
}

// testS3Corrupt: an object whose bytes do not match its recorded hash fails its
// read at the end; one written by another tool (no hash) reads fine.
func testS3Corrupt(t *testing.T, e *minioEnv) {
	s := e.open(t, "corrupt", e.opts(t))
	ctx := t.Context()
	b := storetest.Bytes(1, 3000)
	wrong := storetest.SHA256([]byte("something else"))
	if _, err := e.admin.PutObject(ctx, e.bucket, "corrupt/bad", bytes.NewReader(b), int64(len(b)),
		minio.PutObjectOptions{UserMetadata: map[string]string{"Crdgo-Sha256": wrong}}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.admin.PutObject(ctx, e.bucket, "corrupt/foreign", bytes.NewReader(b), int64(len(b)), minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	rc, info, err := s.Get(ctx, "bad")
	if err != nil {
		t.Fatal(err)
	}
	if info.SHA256 != wrong {
		t.Errorf("Get(bad).SHA256 = %s; want the recorded %s", info.SHA256, wrong)
	}
	_, err = io.ReadAll(rc)
	rc.Close()
	if !errors.Is(err, storage.ErrCorrupt) || !strings.Contains(err.Error(), "s3://crd/corrupt/bad") {
		t.Errorf("read of a mismatched object = %v; want ErrCorrupt naming s3://crd/corrupt/bad", err)
	}
	if got := storetest.Get(t, s, "foreign"); !bytes.Equal(got, b) {
		t.Errorf("Get(foreign) = %d bytes; want %d", len(got), len(b))
	}
	if info, err := storage.Verify(ctx, s, "foreign"); err != nil || info.SHA256 != storetest.SHA256(b) {
		t.Errorf("Verify(foreign) = %+v, %v; want its hash computed", info, err)
	}
}

// testS3ManyObjects: 1,000 small objects put, listed by pages and read back.
func testS3ManyObjects(t *testing.T, e *minioEnv) {
	const n = 1000
	cnt := newCounter()
	o := e.opts(t)
	o.Transport = cnt
	s := e.open(t, "many", o)
	ctx := t.Context()
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for i := range n {
		g.Go(func() error {
			b := storetest.Bytes(uint64(i), 100+i%300)
			_, err := s.Put(gctx, fmt.Sprintf("img/%04d.png", i), bytes.NewReader(b), int64(len(b)))
			return err
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	if got := cnt.count("PUT"); got != n {
		t.Errorf("%d puts took %d PUT requests; want %d (one each, no retries)", n, got, n)
	}
	var keys []string
	after := ""
	pages := 0
	for {
		p, err := s.List(ctx, "img/", after, 300)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, o := range p.Objects {
			i := len(keys)
			if want := fmt.Sprintf("img/%04d.png", i); o.Key != want || o.Size != int64(100+i%300) {
				t.Fatalf("List: object %d = %q size %d; want %q size %d", i, o.Key, o.Size, want, 100+i%300)
			}
			if want := storetest.SHA256(storetest.Bytes(uint64(i), 100+i%300)); o.SHA256 != want {
				t.Fatalf("List: object %d SHA256 = %q; want %s (MinIO lists metadata)", i, o.SHA256, want)
			}
			keys = append(keys, o.Key)
			after = o.Key
		}
		if !p.More {
			break
		}
	}
	if len(keys) != n || pages != 4 {
		t.Errorf("List by 300: %d keys in %d pages; want %d in 4", len(keys), pages, n)
	}
	g, gctx = errgroup.WithContext(ctx)
	g.SetLimit(8)
	for i := range n {
		g.Go(func() error {
			rc, _, err := s.Get(gctx, fmt.Sprintf("img/%04d.png", i))
			if err != nil {
				return err
			}
			defer rc.Close()
			got, err := io.ReadAll(rc)
			if err != nil {
				return err
			}
			if !bytes.Equal(got, storetest.Bytes(uint64(i), 100+i%300)) {
				return fmt.Errorf("img/%04d.png: wrong bytes", i)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
}

// testS3WrongCredentials: a wrong key or secret fails every call at once, with
// ErrAccess, naming bucket and key, in one request per call, and the secret shows
// nowhere.
func testS3WrongCredentials(t *testing.T, e *minioEnv) {
	for _, c := range []struct{ name, ak, sk string }{
		{"secret", e.srv.AccessKey, "wrong-secret-0123456789"},
		{"key", "no-such-access-key", "wrong-secret-0123456789"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cnt := newCounter()
			core, logs := observer.New(zap.DebugLevel)
			o := e.opts(t)
			o.AccessKey, o.SecretKey, o.Transport, o.Log = c.ak, c.sk, cnt, zap.New(core)
			s := e.open(t, "creds", o)
			ctx := t.Context()
			calls := []struct {
				name string
				f    func() error
			}{
				{"put", func() error { _, err := s.Put(ctx, "k/x", strings.NewReader("abc"), 3); return err }},
				{"get", func() error { _, _, err := s.Get(ctx, "k/x"); return err }},
				{"stat", func() error { _, err := s.Stat(ctx, "k/x"); return err }},
				{"list", func() error { _, err := s.List(ctx, "k/", "", 10); return err }},
				{"delete", func() error { return s.Delete(ctx, "k/x") }},
			}
			for _, call := range calls {
				before := cnt.requests.Load()
				start := time.Now()
				err := call.f()
				took, reqs := time.Since(start), cnt.requests.Load()-before
				if !errors.Is(err, storage.ErrAccess) {
					t.Errorf("%s with a wrong %s = %v; want ErrAccess", call.name, c.name, err)
					continue
				}
				if want := "s3://crd/creds/k"; !strings.Contains(err.Error(), want) {
					t.Errorf("%s: %v; want the message to name %s", call.name, err, want)
				}
				if strings.Contains(err.Error(), c.sk) {
					t.Errorf("%s: %v: the error shows the secret", call.name, err)
				}
				if reqs > 2 || took > 2*time.Second {
					t.Errorf("%s with a wrong %s: %d requests in %v; want ≤ 2 (no retries) at once", call.name, c.name, reqs, took)
				}
				t.Logf("%s: %d request(s), %v: %v", call.name, reqs, took.Round(time.Millisecond), err)
			}
			for _, l := range logs.All() {
				for _, f := range l.Context {
					if strings.Contains(fmt.Sprint(f.String, f.Interface), c.sk) {
						t.Errorf("log %q field %s shows the secret", l.Message, f.Key)
					}
				}
				if strings.Contains(l.Message, "retrying") {
					t.Errorf("log %q: a permanent failure was retried", l.Message)
				}
			}
		})
	}
}

// testS3NoBucket: a missing bucket fails at once with ErrNoBucket; EnsureRoot
// makes it.
func testS3NoBucket(t *testing.T, e *minioEnv) {
	cnt := newCounter()
	o := e.opts(t)
	o.Transport = cnt
	loc, _ := storage.ParseURL(e.srv.URL("no-such-bucket", "p"))
	s, err := storage.NewS3(t.Context(), loc, o)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	for name, f := range map[string]func() error{
		"put":  func() error { _, err := s.Put(ctx, "k", strings.NewReader("abc"), 3); return err },
		"get":  func() error { _, _, err := s.Get(ctx, "k"); return err },
		"stat": func() error { _, err := s.Stat(ctx, "k"); return err },
		"list": func() error { _, err := s.List(ctx, "", "", 10); return err },
	} {
		before := cnt.requests.Load()
		err := f()
		if !errors.Is(err, storage.ErrNoBucket) || !strings.Contains(err.Error(), "s3://no-such-bucket/p") {
			t.Errorf("%s in a missing bucket = %v; want ErrNoBucket naming s3://no-such-bucket/p", name, err)
		}
		if n := cnt.requests.Load() - before; n > 2 {
			t.Errorf("%s in a missing bucket: %d requests; want ≤ 2", name, n)
		}
	}
	for i, want := range []bool{true, false} {
		created, err := storage.EnsureRoot(ctx, s)
		if err != nil || created != want {
			t.Errorf("EnsureRoot #%d = %v, %v; want %v", i+1, created, err, want)
		}
	}
	storetest.Put(t, s, "k", []byte("abc"))
}

// stream is a deterministic stream of n pseudo-random bytes that is not held in
// memory and cannot seek.
type stream struct {
	rng *rand.ChaCha8
	n   int64
}

func newStream(seed byte, n int64) *stream {
	var s [32]byte
	s[0] = seed
	return &stream{rng: rand.NewChaCha8(s), n: n}
}

func (s *stream) Read(p []byte) (int, error) {
	if s.n == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > s.n {
		p = p[:s.n]
	}
	s.rng.Read(p)
	s.n -= int64(len(p))
	return len(p), nil
}

func streamSHA(seed byte, n int64) string {
	h := sha256.New()
	io.Copy(h, newStream(seed, n))
	return hex.EncodeToString(h.Sum(nil))
}

// testS3Large: a 200 MiB object of unknown size goes up in parts and comes back
// with the same SHA-256.
func testS3Large(t *testing.T, e *minioEnv) {
	const n = 200 << 20
	cnt := newCounter()
	o := e.opts(t)
	o.Transport = cnt
	s := e.open(t, "large", o)
	want := streamSHA(1, n)
	start := time.Now()
	info, err := s.Put(t.Context(), "big.bin", newStream(1, n), -1)
	if err != nil {
		t.Fatal(err)
	}
	up := time.Since(start)
	if info.Size != n || info.SHA256 != want {
		t.Errorf("Put(200 MiB) = size %d sha %s; want %d %s", info.Size, info.SHA256, n, want)
	}
	if parts := cnt.count("PUT multipart"); parts != 13 { // 12 parts of 16 MiB and one of 8
		t.Errorf("Put(200 MiB): %d part uploads; want 13 of 16 MiB", parts)
	}
	start = time.Now()
	got, err := storage.Verify(t.Context(), s, "big.bin")
	if err != nil || got.Size != n || got.SHA256 != want {
		t.Errorf("Verify(200 MiB) = %+v, %v; want size %d sha %s", got, err, n, want)
	}
	t.Logf("200 MiB: put %v (%.0f MiB/s, with the spool), read back and hashed %v", up.Round(time.Millisecond),
		200/up.Seconds(), time.Since(start).Round(time.Millisecond))
}

// testS3KillDuringUpload: the server dies with a large upload in flight and comes
// back; the upload is retried and succeeds, and all along the key holds the old
// object or the new one, intact.
func testS3KillDuringUpload(t *testing.T, e *minioEnv) {
	const n = 48 << 20
	cnt := newCounter()
	core, logs := observer.New(zap.InfoLevel)
	o := e.opts(t)
	o.Transport, o.PartSize, o.Log = cnt, 5<<20, zap.New(core)
	o.Retry = storage.Retry{Attempts: 40, Base: 50 * time.Millisecond, Cap: time.Second}
	s := e.open(t, "kill", o)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	old := storetest.Bytes(7, 1000)
	storetest.Put(t, s, "ckpt/model.safetensors", old)
	oldSHA, newSHA := storetest.SHA256(old), streamSHA(2, n)

	restarted := make(chan error, 1)
	var once sync.Once
	cnt.onSent = func(total int64) {
		if total > 20<<20 {
			once.Do(func() {
				go func() {
					e.srv.Kill()
					restarted <- e.srv.Restart(ctx)
				}()
			})
		}
	}
	// A watcher looks at the key the whole time through its own store (the
	// counting transport would count its reads).
	watch := e.open(t, "kill", e.opts(t))
	stop := make(chan struct{})
	var seen sync.Map
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			wctx, wcancel := context.WithTimeout(ctx, 2*time.Second)
			info, err := watch.Stat(wctx, "ckpt/model.safetensors")
			wcancel()
			switch {
			case err != nil:
				seen.Store("error", err.Error())
			case info.Size == int64(len(old)) && info.SHA256 == oldSHA:
				seen.Store("old", true)
			case info.Size == n && info.SHA256 == newSHA:
				seen.Store("new", true)
			default:
				seen.Store("corrupt", fmt.Sprintf("size %d sha %s", info.Size, info.SHA256))
			}
		}
	})
	info, err := s.Put(ctx, "ckpt/model.safetensors", newStream(2, n), -1)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatalf("Put across a server restart: %v\nserver: %s", err, e.srv.Output())
	}
	if err := <-restarted; err != nil {
		t.Fatalf("restart: %v", err)
	}
	if info.SHA256 != newSHA {
		t.Errorf("Put = sha %s; want %s", info.SHA256, newSHA)
	}
	if v, ok := seen.Load("corrupt"); ok {
		t.Errorf("the key showed %v: neither the old object nor the new one", v)
	}
	if _, ok := seen.Load("old"); !ok {
		t.Errorf("the watcher never saw the old object")
	}
	got, err := storage.Verify(ctx, s, "ckpt/model.safetensors")
	if err != nil || got.SHA256 != newSHA || got.Size != n {
		t.Errorf("Verify after the restart = %+v, %v; want size %d sha %s", got, err, n, newSHA)
	}
	all, err := storage.ListAll(ctx, s, "")
	if err != nil || len(all) != 1 {
		t.Errorf("ListAll after the restart = %+v, %v; want the one object", all, err)
	}
	retries := logs.FilterMessage("storage: transient failure, retrying").Len()
	if retries == 0 {
		t.Errorf("no retry logged: the kill did not hit the upload")
	}
	t.Logf("upload retried %d times across the restart; %d part uploads, %d requests in all", retries, cnt.count("PUT multipart"), cnt.requests.Load())
}

// testS3KillDuringDownload: a stream broken by a server restart resumes where it
// stopped and still verifies.
func testS3KillDuringDownload(t *testing.T, e *minioEnv) {
	const n = 40 << 20
	core, logs := observer.New(zap.InfoLevel)
	o := e.opts(t)
	o.Log = zap.New(core)
	o.Retry = storage.Retry{Attempts: 40, Base: 50 * time.Millisecond, Cap: time.Second}
	s := e.open(t, "killget", o)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	if _, err := s.Put(ctx, "x", newStream(3, n), -1); err != nil {
		t.Fatal(err)
	}
	rc, _, err := s.Get(ctx, "x")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	h := sha256.New()
	if _, err := io.CopyN(h, rc, 4<<20); err != nil {
		t.Fatal(err)
	}
	e.srv.Kill()
	if err := e.srv.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(h, rc); err != nil {
		t.Fatalf("reading on after a restart: %v", err)
	}
	if got, want := hex.EncodeToString(h.Sum(nil)), streamSHA(3, n); got != want {
		t.Errorf("read across a restart: sha %s; want %s", got, want)
	}
	if logs.FilterMessage("storage: stream broken, resuming").Len() == 0 {
		t.Errorf("the stream was never broken: the kill came too late to test resuming")
	}
}

// testS3Dataset: a synthetic dataset pushed into a new bucket trains the loader
// through the cache exactly as from the folder, and its second epoch sends nothing
// to the server.
func testS3Dataset(t *testing.T, e *minioEnv) {
	ctx := t.Context()
	log := zaptest.NewLogger(t)
	dir := filepath.Join(t.TempDir(), "edges2shapes")
	cfg := data.SynthConfig{Kind: data.SynthEdges2Shapes, Size: 32, N: 24, NTest: 4, Seed: 3, Workers: 1}
	if err := data.Synthesize(ctx, dir, cfg, nil, log); err != nil {
		t.Fatal(err)
	}
	loc, _ := storage.ParseURL(e.srv.URL("datasets", "edges2shapes"))
	s3, err := storage.NewS3(ctx, loc, e.opts(t))
	if err != nil {
		t.Fatal(err)
	}
	rep, err := storage.Push(ctx, dir, s3, storage.PushOptions{Log: log})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Created || rep.Uploaded != rep.Files || rep.Files != 24+4+1 {
		t.Errorf("push = %+v; want the bucket created and 29 files uploaded", rep)
	}
	if rep, err = storage.Push(ctx, dir, s3, storage.PushOptions{Log: log}); err != nil || rep.Skipped != rep.Files || rep.Created {
		t.Errorf("second push = %+v, %v; want every file skipped", rep, err)
	}

	opt := data.Options{LoadSize: 36, CropSize: 32, Flip: true, Channels: 3}
	lc := data.LoaderConfig{Seed: 5, BatchSize: 4, Shuffle: true, Workers: 3}
	epochs := func(src data.Source, after func(epoch int)) [][]float32 {
		ds, err := data.OpenAligned(ctx, src, "train", opt, log)
		if err != nil {
			t.Fatal(err)
		}
		l, err := data.NewLoader(ds, lc, log)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		var out [][]float32
		for epoch := 0; epoch < 2; {
			b, err := l.Next(ctx)
			if errors.Is(err, data.ErrEpochEnd) {
				after(epoch)
				epoch++
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, append(b.A, b.B...))
		}
		return out
	}
	want := epochs(data.Dir(dir), func(int) {})
	cs := &counting{Store: s3}
	cache := newCache(t, 64<<20)
	var perEpoch []int64
	last := int64(0)
	got := epochs(storage.DatasetSource(cs, "", cache), func(int) {
		perEpoch = append(perEpoch, cs.requests()-last)
		last = cs.requests()
	})
	if len(got) != len(want) {
		t.Fatalf("batches from MinIO: %d; from the folder: %d", len(got), len(want))
	}
	for i := range got {
		if !slices.Equal(got[i], want[i]) {
			t.Fatalf("batch %d from MinIO differs from the folder's", i)
		}
	}
	if len(perEpoch) != 2 || perEpoch[1] != 0 {
		t.Errorf("store requests per epoch = %v; want none in the second", perEpoch)
	}
	t.Logf("store requests per epoch: %v; cache %+v", perEpoch, cache.Stats())
}
