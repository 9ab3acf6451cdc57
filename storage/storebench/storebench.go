// Package storebench measures how fast crdgo moves a dataset of small images into
// and out of MinIO: storage.Push and the dataset source (straight from the store,
// through the cache's first epoch and its second), beside the plainest loop of
// minio-go calls (one PutObject or GetObject after another, as mc mirror does per
// file) and beside reading the same files from a local folder.
package storebench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/crdgo/crdgo/storage"
)

// Config says what to measure.
type Config struct {
	Files   int // PNGs in the dataset
	Side    int // their width and height
	Runs    int // timed passes per row
	Warmup  int // untimed passes first
	Workers int // crdgo's concurrency (push workers, readers)

	// The server: Endpoint host:port with its keys, plain HTTP.
	Endpoint, AccessKey, SecretKey string
	Bucket                         string
	// Dir is a scratch folder for the dataset and the cache.
	Dir string
	Log *zap.Logger
}

// DefaultConfig: 2,000 PNGs of 128×128, 10 runs after 1 warm-up, 8 workers.
func DefaultConfig() Config {
	return Config{Files: 2000, Side: 128, Runs: 10, Warmup: 1, Workers: 8, Bucket: "crdgo-bench"}
}

// Validate reports every invalid field at once.
func (c Config) Validate() error {
	var errs []error
	if c.Files < 1 || c.Side < 8 || c.Side > 4096 {
		errs = append(errs, fmt.Errorf("storebench: %d files of %d×%d: want ≥ 1 file, side in [8, 4096]", c.Files, c.Side, c.Side))
	}
	if c.Runs < 1 || c.Warmup < 0 || c.Workers < 1 {
		errs = append(errs, fmt.Errorf("storebench: runs %d, warm-up %d, workers %d: want ≥ 1, ≥ 0, ≥ 1", c.Runs, c.Warmup, c.Workers))
	}
	if c.Endpoint == "" || c.Dir == "" {
		errs = append(errs, errors.New("storebench: an endpoint and a scratch folder are required"))
	}
	return errors.Join(errs...)
}

// Row is one measured way of moving the dataset: the time of each timed pass.
type Row struct {
	Name  string
	Times []time.Duration
}

// Report is the result of Run.
type Report struct {
	Config Config
	Bytes  int64 // the dataset's size
	Rows   []Row
}

// Run writes the dataset, then makes Warmup + Runs passes, each timing every row
// once in turn; the first Warmup passes are not kept.
func Run(ctx context.Context, c Config) (Report, error) {
	if err := c.Validate(); err != nil {
		return Report{}, err
	}
	log := c.Log
	if log == nil {
		log = zap.NewNop()
	}
	rep := Report{Config: c}
	dir := filepath.Join(c.Dir, "dataset")
	files, n, err := writeDataset(dir, c.Files, c.Side)
	if err != nil {
		return rep, err
	}
	rep.Bytes = n
	client, err := minio.New(c.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(c.AccessKey, c.SecretKey, "")})
	if err != nil {
		return rep, fmt.Errorf("storebench: %w", err)
	}
	opts := storage.DefaultOptions()
	opts.AccessKey, opts.SecretKey, opts.Log = c.AccessKey, c.SecretKey, log
	open := func(prefix string) (storage.Store, error) {
		return storage.Open(ctx, fmt.Sprintf("s3://%s/%s?endpoint=%s&tls=false&path-style=true", c.Bucket, prefix, c.Endpoint), opts)
	}
	// The copy every read row reads.
	src, err := open("read")
	if err != nil {
		return rep, err
	}
	if _, err := storage.Push(ctx, dir, src, storage.PushOptions{Workers: c.Workers}); err != nil {
		return rep, err
	}
	var keys []string
	for _, f := range files {
		keys = append(keys, f.key)
	}
	run := 0
	fresh := func() (storage.Store, string, error) { // an empty prefix per push pass
		run++
		p := fmt.Sprintf("push/%d", run)
		s, err := open(p)
		return s, p, err
	}
	clear := func(prefix string) error { // untimed: keep the server's disk small
		objs := client.ListObjects(ctx, c.Bucket, minio.ListObjectsOptions{Prefix: prefix + "/", Recursive: true})
		var err error
		for e := range client.RemoveObjects(ctx, c.Bucket, objs, minio.RemoveObjectsOptions{}) {
			if err == nil { // drain the rest: the channel's goroutine must end
				err = e.Err
			}
		}
		return err
	}
	pushRow := func(workers int) func() (time.Duration, error) {
		return func() (time.Duration, error) {
			s, p, err := fresh()
			if err != nil {
				return 0, err
			}
			start := time.Now()
			_, err = storage.Push(ctx, dir, s, storage.PushOptions{Workers: workers})
			d := time.Since(start)
			if err == nil {
				err = clear(p)
			}
			return d, err
		}
	}
	plainPut := func() (time.Duration, error) {
		run++
		p := fmt.Sprintf("push/%d", run)
		start := time.Now()
		for _, f := range files {
			fh, err := os.Open(f.path)
			if err != nil {
				return 0, err
			}
			_, err = client.PutObject(ctx, c.Bucket, p+"/"+f.key, fh, f.size, minio.PutObjectOptions{})
			fh.Close()
			if err != nil {
				return 0, err
			}
		}
		d := time.Since(start)
		return d, clear(p)
	}
	plainGet := func() (time.Duration, error) {
		start := time.Now()
		for _, k := range keys {
			obj, err := client.GetObject(ctx, c.Bucket, "read/"+k, minio.GetObjectOptions{})
			if err != nil {
				return 0, err
			}
			_, err = io.Copy(io.Discard, obj)
			obj.Close()
			if err != nil {
				return 0, err
			}
		}
		return time.Since(start), nil
	}
	readAll := func(open func(context.Context, string) (io.ReadCloser, error), workers int) (time.Duration, error) {
		start := time.Now()
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(workers)
		for _, k := range keys {
			g.Go(func() error {
				rc, err := open(gctx, k)
				if err != nil {
					return err
				}
				defer rc.Close()
				_, err = io.Copy(io.Discard, rc)
				return err
			})
		}
		err := g.Wait()
		return time.Since(start), err
	}
	direct := storage.DatasetSource(src, "", nil)
	local := func(_ context.Context, k string) (io.ReadCloser, error) {
		return os.Open(filepath.Join(dir, filepath.FromSlash(k)))
	}
	cacheRun := 0
	var cache *storage.Cache
	firstEpoch := func() (time.Duration, error) { // a fresh cache each pass
		if cache != nil {
			cache.Close()
		}
		cacheRun++
		var err error
		cache, err = storage.NewCache(filepath.Join(c.Dir, fmt.Sprintf("cache-%d", cacheRun)), 1<<40, log)
		if err != nil {
			return 0, err
		}
		return readAll(storage.DatasetSource(src, "", cache).Open, c.Workers)
	}
	secondEpoch := func() (time.Duration, error) {
		if cache == nil {
			if _, err := firstEpoch(); err != nil {
				return 0, err
			}
		}
		before := cache.Stats().Misses
		d, err := readAll(storage.DatasetSource(src, "", cache).Open, c.Workers)
		if err == nil && cache.Stats().Misses != before {
			err = fmt.Errorf("storebench: the second epoch fetched %d objects", cache.Stats().Misses-before)
		}
		return d, err
	}
	defer func() {
		if cache != nil {
			cache.Close()
		}
	}()
	w := c.Workers
	rows := []struct {
		name string
		f    func() (time.Duration, error)
	}{
		{"push: minio-go PutObject, one after another (mc mirror-style)", plainPut},
		{"push: crdgo data push, 1 worker", pushRow(1)},
		{fmt.Sprintf("push: crdgo data push, %d workers", w), pushRow(w)},
		{"read: minio-go GetObject, one after another", plainGet},
		{"read: crdgo dataset source, no cache, 1 worker", func() (time.Duration, error) { return readAll(direct.Open, 1) }},
		{fmt.Sprintf("read: crdgo dataset source, no cache, %d workers", w), func() (time.Duration, error) { return readAll(direct.Open, w) }},
		{fmt.Sprintf("read: crdgo cache, first epoch (fetch + keep), %d workers", w), firstEpoch},
		{fmt.Sprintf("read: crdgo cache, second epoch (disk, verified), %d workers", w), secondEpoch},
		{fmt.Sprintf("read: local folder (os.Open), %d workers", w), func() (time.Duration, error) { return readAll(local, w) }},
	}
	// Rows take turns, pass by pass, so that a change in the machine's load (it is
	// shared) falls on every row alike rather than on the rows that ran then.
	rep.Rows = make([]Row, len(rows))
	for i, r := range rows {
		rep.Rows[i].Name = r.name
	}
	for pass := range c.Warmup + c.Runs {
		for i, r := range rows {
			d, err := r.f()
			if err != nil {
				return rep, fmt.Errorf("storebench: %s: %w", r.name, err)
			}
			if pass >= c.Warmup {
				rep.Rows[i].Times = append(rep.Rows[i].Times, d)
			}
		}
		log.Info("storebench: pass done", zap.Int("pass", pass+1), zap.Int("of", c.Warmup+c.Runs))
	}
	return rep, nil
}

type file struct {
	key, path string
	size      int64
}

// writeDataset writes n PNGs of side×side (smooth colour gradients with noise, as
// compressible as photos are) into dir, in two splits.
func writeDataset(dir string, n, side int) ([]file, int64, error) {
	rng := rand.New(rand.NewPCG(1, 2))
	var files []file
	var total int64
	for i := range n {
		split := "trainA"
		if i%2 == 1 {
			split = "trainB"
		}
		key := fmt.Sprintf("%s/%05d.png", split, i)
		p := filepath.Join(dir, filepath.FromSlash(key))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return nil, 0, err
		}
		img := image.NewRGBA(image.Rect(0, 0, side, side))
		r0, g0, b0 := rng.IntN(128), rng.IntN(128), rng.IntN(128)
		for y := range side {
			for x := range side {
				img.Set(x, y, color.RGBA{uint8(r0 + x*127/side + rng.IntN(8)), uint8(g0 + y*127/side + rng.IntN(8)), uint8(b0 + rng.IntN(8)), 255})
			}
		}
		var buf bytes.Buffer
		if err := png.Encode(&buf, img); err != nil {
			return nil, 0, err
		}
		if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
			return nil, 0, err
		}
		files = append(files, file{key: key, path: p, size: int64(buf.Len())})
		total += int64(buf.Len())
	}
	return files, total, nil
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// Print writes the report as a Markdown table with the machine and the method.
func (r Report) Print(w io.Writer, machine, server string) {
	c := r.Config
	fmt.Fprintf(w, "machine: %s\n", machine)
	fmt.Fprintf(w, "server: %s\n", server)
	fmt.Fprintf(w, "dataset: %d PNGs of %d×%d, %.1f MiB (%.1f KiB each); %d timed passes after %d warm-up, the rows taking turns in each; medians, and the range over the passes\n\n",
		c.Files, c.Side, c.Side, float64(r.Bytes)/(1<<20), float64(r.Bytes)/float64(c.Files)/1024, c.Runs, c.Warmup)
	tw := tabwriter.NewWriter(w, 0, 8, 1, ' ', 0)
	fmt.Fprintln(tw, "| way\t| files/s\t| MiB/s\t| s per pass (min–max)\t|")
	fmt.Fprintln(tw, "|---\t|---\t|---\t|---\t|")
	for _, row := range r.Rows {
		m := median(row.Times).Seconds()
		lo, hi := slices.Min(row.Times), slices.Max(row.Times)
		fmt.Fprintf(tw, "| %s\t| %.0f\t| %.1f\t| %.3f (%.3f–%.3f)\t|\n", row.Name, float64(c.Files)/m, float64(r.Bytes)/(1<<20)/m, m, lo.Seconds(), hi.Seconds())
	}
	tw.Flush()
}
