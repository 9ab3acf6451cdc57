package data

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/crdgo/crdgo/internal/fuzzmin"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"
)

// TestMain shortens the fuzzer's minimisation (internal/fuzzmin) and checks that
// no goroutine outlives a test.
func TestMain(m *testing.M) {
	fuzzmin.Default()
	goleak.VerifyTestMain(m)
}

// singleSet is a single dataset of n small noise images named 00.png, 01.png, …; the
// files listed in bad are corrupt.
func singleSet(t *testing.T, n int, bad ...int) *Dataset {
	t.Helper()
	files := map[string][]byte{}
	for i := range n {
		files[fmt.Sprintf("trainA/%02d.png", i)] = encodePNG(t, noise(uint64(i), 6, 6))
	}
	for _, i := range bad {
		files[fmt.Sprintf("trainA/%02d.png", i)] = []byte("\x89PNG\r\n\x1a\n corrupt")
	}
	d, err := OpenSingle(context.Background(), memSource(files), "trainA",
		Options{LoadSize: 8, CropSize: 6, Flip: true, Channels: 3}, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func newLoader(t *testing.T, d *Dataset, cfg LoaderConfig, log *zap.Logger) *Loader {
	t.Helper()
	if log == nil {
		log = zaptest.NewLogger(t)
	}
	l, err := NewLoader(d, cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// epochs reads whole epochs from l: per epoch, the batches.
func epochs(t *testing.T, l *Loader, n int) [][]Batch {
	t.Helper()
	ctx := context.Background()
	var out [][]Batch
	var cur []Batch
	for len(out) < n {
		b, err := l.Next(ctx)
		if errors.Is(err, ErrEpochEnd) {
			out = append(out, cur)
			cur = nil
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		cur = append(cur, b)
	}
	return out
}

func indices(bs []Batch) []int {
	var idx []int
	for _, b := range bs {
		idx = append(idx, b.Indices...)
	}
	return idx
}

func sizes(bs []Batch) []int {
	var s []int
	for _, b := range bs {
		s = append(s, b.N)
	}
	return s
}

func TestLoaderOrderAndBatching(t *testing.T) {
	d := singleSet(t, 10)
	// In order: 10 examples in batches of 4, 4, 2, then the epoch's end.
	l := newLoader(t, d, LoaderConfig{Seed: 1, BatchSize: 4, Workers: 2}, nil)
	eps := epochs(t, l, 2)
	for e, bs := range eps {
		if got, want := sizes(bs), []int{4, 4, 2}; !slices.Equal(got, want) {
			t.Errorf("epoch %d: batch sizes %v; want %v", e, got, want)
		}
		if got, want := indices(bs), []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}; !slices.Equal(got, want) {
			t.Errorf("epoch %d: indices %v; want %v", e, got, want)
		}
		for _, b := range bs {
			if b.Epoch != e || b.C != 3 || b.H != 6 || b.W != 6 || len(b.A) != b.N*3*6*6 || b.B != nil {
				t.Errorf("epoch %d: batch epoch %d shape N%d C%d H%d W%d len(A) %d len(B) %d", e, b.Epoch, b.N, b.C, b.H, b.W, len(b.A), len(b.B))
			}
		}
	}
	// Shuffled: each epoch is its Permutation.
	l = newLoader(t, d, LoaderConfig{Seed: 9, BatchSize: 3, Shuffle: true, Workers: 3}, nil)
	eps = epochs(t, l, 3)
	for e, bs := range eps {
		if got, want := indices(bs), Permutation(9, e, 10); !slices.Equal(got, want) {
			t.Errorf("shuffled epoch %d: indices %v; want Permutation(9, %d, 10) = %v", e, got, e, want)
		}
	}
	if slices.Equal(indices(eps[0]), indices(eps[1])) {
		t.Errorf("shuffled epochs 0 and 1 have the same order %v", indices(eps[0]))
	}
	// Every batch's example is the dataset's Example for (seed, epoch, index).
	b := eps[1][0]
	ex, err := d.Example(context.Background(), 9, 1, b.Indices[1])
	if err != nil {
		t.Fatal(err)
	}
	if per := 3 * 6 * 6; !equalF32(b.A[per:2*per], ex.A) || b.PathsA[1] != ex.PathA {
		t.Errorf("batch 0 of epoch 1, example 1 is not Example(9, 1, %d)", b.Indices[1])
	}
}

func TestLoaderDoesNotDependOnWorkersOrPrefetch(t *testing.T) {
	d := singleSet(t, 11)
	ref := epochs(t, newLoader(t, d, LoaderConfig{Seed: 4, BatchSize: 3, Shuffle: true, Workers: 1, Prefetch: 1}, nil), 2)
	for _, cfg := range []LoaderConfig{
		{Seed: 4, BatchSize: 3, Shuffle: true, Workers: 4, Prefetch: 1},
		{Seed: 4, BatchSize: 3, Shuffle: true, Workers: 3, Prefetch: 5},
	} {
		got := epochs(t, newLoader(t, d, cfg, nil), 2)
		if !reflect.DeepEqual(got, ref) {
			t.Errorf("workers %d prefetch %d: batches differ from workers 1 prefetch 1", cfg.Workers, cfg.Prefetch)
		}
	}
}

// TestLoaderSeekResumesExactly records every batch and cursor of a run, then starts a
// fresh loader at each recorded cursor and checks that it delivers exactly what followed.
func TestLoaderSeekResumesExactly(t *testing.T) {
	d := singleSet(t, 7)
	cfg := LoaderConfig{Seed: 2, BatchSize: 3, Shuffle: true, Workers: 2}
	ctx := context.Background()
	type step struct {
		batch  Batch
		end    bool
		cursor Cursor // after this step
	}
	run := newLoader(t, d, cfg, nil)
	var steps []step
	starts := []Cursor{run.Cursor()}
	for len(steps) < 12 { // three epochs of 3, 3, 1 and their ends
		b, err := run.Next(ctx)
		s := step{batch: b, end: errors.Is(err, ErrEpochEnd), cursor: run.Cursor()}
		if err != nil && !s.end {
			t.Fatal(err)
		}
		if !s.end && b.Cursor != s.cursor {
			t.Errorf("batch %d: Batch.Cursor %v, Loader.Cursor() %v; want equal", len(steps), b.Cursor, s.cursor)
		}
		steps = append(steps, s)
		starts = append(starts, s.cursor)
	}
	wantCursors := []Cursor{{0, 3}, {0, 6}, {0, 7}, {1, 0}, {1, 3}, {1, 6}, {1, 7}, {2, 0}}
	for i, c := range wantCursors {
		if steps[i].cursor != c {
			t.Errorf("after step %d: cursor %v; want %v", i, steps[i].cursor, c)
		}
	}
	for k, c := range starts[:len(steps)] {
		l := newLoader(t, d, cfg, nil)
		if err := l.Seek(c); err != nil {
			t.Fatal(err)
		}
		for i := k; i < min(k+4, len(steps)); i++ {
			b, err := l.Next(ctx)
			if end := errors.Is(err, ErrEpochEnd); end != steps[i].end || (!end && err != nil) {
				t.Fatalf("resumed at %v: step %d: err %v; want end of epoch %v", c, i, err, steps[i].end)
			}
			if !reflect.DeepEqual(b, steps[i].batch) || l.Cursor() != steps[i].cursor {
				t.Errorf("resumed at %v: step %d differs from the uninterrupted run (cursor %v, want %v)", c, i, l.Cursor(), steps[i].cursor)
			}
		}
	}
	// Seeking the running loader backwards replays too.
	if err := run.Seek(Cursor{1, 3}); err != nil {
		t.Fatal(err)
	}
	if b, err := run.Next(ctx); err != nil || !reflect.DeepEqual(b, steps[5].batch) {
		t.Errorf("Seek({1, 3}) on a running loader, Next = %v; want step 5's batch", err)
	}
	for _, c := range []Cursor{{-1, 0}, {0, 8}, {0, -1}} {
		if err := run.Seek(c); err == nil {
			t.Errorf("Seek(%v) with 7 examples succeeded; want an error", c)
		}
	}
}

func TestLoaderReplacesUnreadableImages(t *testing.T) {
	d := singleSet(t, 8, 2, 5)
	core, logs := observer.New(zapcore.DebugLevel)
	l := newLoader(t, d, LoaderConfig{Seed: 1, BatchSize: 3, Workers: 2}, zap.New(core))
	eps := epochs(t, l, 2)
	for e, bs := range eps {
		// Positions 2 and 5 are replaced by the examples at the next positions; the
		// batches keep their positions, so the global batch does not depend on who reads.
		if got, want := indices(bs), []int{0, 1, 3, 3, 4, 6, 6, 7}; !slices.Equal(got, want) {
			t.Errorf("epoch %d: indices %v; want %v", e, got, want)
		}
		if got, want := sizes(bs), []int{3, 3, 2}; !slices.Equal(got, want) {
			t.Errorf("epoch %d: batch sizes %v; want %v", e, got, want)
		}
	}
	if got, want := l.Stats(), (LoaderStats{Batches: 6, Examples: 16, Skipped: 4}); got != want {
		t.Errorf("Stats() = %+v; want %+v", got, want)
	}
	warns := logs.FilterMessage("skipping unreadable image").FilterLevelExact(zapcore.WarnLevel).All()
	var files []string
	for _, w := range warns {
		files = append(files, w.ContextMap()["file"].(string))
	}
	if want := []string{"mem://test/trainA/02.png", "mem://test/trainA/05.png"}; !slices.Equal(files, want) {
		t.Errorf("warned about %v; want each bad file once: %v", files, want)
	}
	if n := logs.FilterMessage("skipping unreadable image").Len(); n != 4 {
		t.Errorf("%d skip log entries (warn + debug); want 4, one per skip", n)
	}
}

// TestLoaderRankPartsMakeTheGlobalBatch is the data-parallel sampler's contract: for
// every world size, the ranks' parts of each step, concatenated in rank order, are the
// one-process batch of that step — the same examples with the same augmentation — and
// every part says where it lies in the global batch. Includes unreadable images and an
// epoch whose short last batch leaves some ranks an empty part.
func TestLoaderRankPartsMakeTheGlobalBatch(t *testing.T) {
	ctx := context.Background()
	d := singleSet(t, 10, 4)
	const batch = 4
	read := func(world, rank int) [][]Batch {
		l := newLoader(t, d, LoaderConfig{Seed: 3, BatchSize: batch, Shuffle: true, Workers: 2, World: world, Rank: rank}, zap.NewNop())
		return epochs(t, l, 2)
	}
	want := read(1, 0)
	if got := sizes(want[0]); !slices.Equal(got, []int{4, 4, 2}) {
		t.Fatalf("world 1: batch sizes %v; want [4 4 2]", got)
	}
	for world := 2; world <= batch; world++ {
		parts := make([][][]Batch, world)
		for r := range world {
			parts[r] = read(world, r)
		}
		for e := range want {
			for s, w := range want[e] {
				var idx []int
				var pix []float32
				for r := range world {
					p := parts[r][e][s]
					lo, hi := Split(w.N, world, r)
					if p.Total != w.N || p.Offset != lo || p.N != hi-lo || p.Cursor != w.Cursor {
						t.Errorf("world %d rank %d epoch %d step %d: N %d, Total %d, Offset %d, cursor %v; want %d, %d, %d, %v",
							world, r, e, s, p.N, p.Total, p.Offset, p.Cursor, hi-lo, w.N, lo, w.Cursor)
					}
					idx = append(idx, p.Indices...)
					pix = append(pix, p.A...)
				}
				if !slices.Equal(idx, w.Indices) || !equalF32(pix, w.A) {
					t.Errorf("world %d epoch %d step %d: ranks' parts hold %v; want the global batch %v, bit for bit", world, e, s, idx, w.Indices)
				}
			}
		}
	}
	// A rank can resume mid-epoch from a cursor written by a run of another world size.
	l := newLoader(t, d, LoaderConfig{Seed: 3, BatchSize: batch, Shuffle: true, Workers: 1, World: 2, Rank: 1}, zap.NewNop())
	if err := l.Seek(want[1][0].Cursor); err != nil {
		t.Fatal(err)
	}
	b, err := l.Next(ctx)
	if err != nil || !slices.Equal(b.Indices, want[1][1].Indices[2:]) {
		t.Errorf("rank 1 of 2 after Seek(%v): %v, %v; want %v", want[1][0].Cursor, b.Indices, err, want[1][1].Indices[2:])
	}
}

func TestLoaderNoReadableImagesIsAnError(t *testing.T) {
	d := singleSet(t, 3, 0, 1, 2)
	l := newLoader(t, d, LoaderConfig{Seed: 1, BatchSize: 2, Workers: 1}, zap.NewNop())
	_, err := l.Next(context.Background())
	if err == nil || errors.Is(err, ErrEpochEnd) || !strings.Contains(err.Error(), "mem://test trainA") || !strings.Contains(err.Error(), "no readable images") {
		t.Errorf("Next on a split of corrupt files = %v; want a no-readable-images error naming mem://test trainA", err)
	}
}

func TestLoaderUnalignedBatches(t *testing.T) {
	ctx := context.Background()
	files := map[string][]byte{}
	for i := range 3 {
		files[fmt.Sprintf("trainA/%d.png", i)] = encodePNG(t, noise(uint64(i), 6, 6))
		files[fmt.Sprintf("trainB/%d.png", i)] = encodePNG(t, noise(uint64(10+i), 6, 6))
	}
	d, err := OpenUnaligned(ctx, memSource(files), "trainA", "trainB", Options{LoadSize: 6, CropSize: 4, Channels: 3}, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	l := newLoader(t, d, LoaderConfig{Seed: 1, BatchSize: 2, Workers: 2}, nil)
	b, err := l.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if b.N != 2 || len(b.A) != 2*3*4*4 || len(b.B) != len(b.A) || len(b.PathsB) != 2 {
		t.Errorf("unaligned batch: N %d, len(A) %d, len(B) %d, PathsB %v; want 2, 96, 96, two paths", b.N, len(b.A), len(b.B), b.PathsB)
	}
	for k := range 2 {
		ex, _ := d.Example(ctx, 1, 0, k)
		if !equalF32(b.B[k*48:(k+1)*48], ex.B) || b.PathsB[k] != ex.PathB {
			t.Errorf("batch B %d is not Example(1, 0, %d).B", k, k)
		}
	}
}

func TestLoaderNextHonoursContextAndClose(t *testing.T) {
	d := singleSet(t, 5)
	l := newLoader(t, d, LoaderConfig{Seed: 1, BatchSize: 2, Workers: 2}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := l.Next(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Next(cancelled) = %v; want context.Canceled", err)
	}
	// The loader goes on where it was: nothing was delivered.
	b, err := l.Next(context.Background())
	if err != nil || !slices.Equal(b.Indices, []int{0, 1}) {
		t.Errorf("Next after a cancelled Next = %v, %v; want indices [0 1]", b.Indices, err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	// After Close, Next restarts at the cursor.
	b, err = l.Next(context.Background())
	if err != nil || !slices.Equal(b.Indices, []int{2, 3}) {
		t.Errorf("Next after Close = %v, %v; want indices [2 3]", b.Indices, err)
	}
}

func TestLoaderConfigValidate(t *testing.T) {
	d := singleSet(t, 2)
	_, err := NewLoader(d, LoaderConfig{BatchSize: 0, Workers: -1, Prefetch: -2, World: -1}, zap.NewNop())
	for _, w := range []string{"data.batch_size", "data.workers", "data.prefetch", "data.world", "mem://test trainA"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("NewLoader(bad config) = %v; want it to mention %s", err, w)
		}
	}
	_, err = NewLoader(d, LoaderConfig{BatchSize: 2, World: 3, Rank: 3}, zap.NewNop())
	for _, w := range []string{"data.world: 3 ranks for a global batch of 2 examples", "data.rank: must be in [0, 3), got 3"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("NewLoader(world 3 > batch 2, rank 3) = %v; want it to say %q", err, w)
		}
	}
}
