package data

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"

	"go.uber.org/zap"
)

// LoaderConfig says how a Loader walks its dataset.
type LoaderConfig struct {
	Seed      uint64 `yaml:"seed"`       // epoch permutations and augmentation
	BatchSize int    `yaml:"batch_size"` // examples per global batch; an epoch's last batch may be short
	Shuffle   bool   `yaml:"shuffle"`    // a seeded permutation per epoch; off: index order
	Workers   int    `yaml:"workers"`    // decoding goroutines; 0: GOMAXPROCS
	Prefetch  int    `yaml:"prefetch"`   // batches prepared ahead of Next; 0: 2
	// World and Rank make the loader deliver only rank's part of each global batch
	// (Split); 0 and 0 mean one process (world 1). World must not exceed BatchSize.
	World int `yaml:"world"`
	Rank  int `yaml:"rank"`
}

// Validate reports every invalid field at once.
func (c LoaderConfig) Validate() error {
	var errs []error
	if c.BatchSize < 1 {
		errs = append(errs, fmt.Errorf("data.batch_size: must be ≥ 1, got %d", c.BatchSize))
	}
	if c.Workers < 0 {
		errs = append(errs, fmt.Errorf("data.workers: must be ≥ 0 (0: one per CPU), got %d", c.Workers))
	}
	if c.Prefetch < 0 {
		errs = append(errs, fmt.Errorf("data.prefetch: must be ≥ 0 (0: 2 batches), got %d", c.Prefetch))
	}
	world := max(c.World, 1)
	switch {
	case c.World < 0:
		errs = append(errs, fmt.Errorf("data.world: must be ≥ 1 (0: one process), got %d", c.World))
	case c.BatchSize >= 1 && world > c.BatchSize:
		errs = append(errs, fmt.Errorf("data.world: %d ranks for a global batch of %d examples: want world ≤ batch (raise the batch)", c.World, c.BatchSize))
	}
	if c.Rank < 0 || c.Rank >= world {
		errs = append(errs, fmt.Errorf("data.rank: must be in [0, %d), got %d", world, c.Rank))
	}
	return errors.Join(errs...)
}

// Cursor is a position in the loader's infinite sequence of epochs: Pos is the position,
// in epoch Epoch's order, of the next example to load. Pos = Len means the epoch's
// examples are all delivered and its end is not yet: the next Next returns ErrEpochEnd.
// A checkpoint stores the Cursor after the last batch it trained on; Seek to it and the
// loader delivers exactly the batches that would have come next.
type Cursor struct {
	Epoch int `json:"epoch"`
	Pos   int `json:"pos"`
}

// Batch is this rank's part of one global batch, stacked: A and B are N×C×H×W float32
// in [−1, 1], contiguous (B is nil for a single dataset). The caller owns the slices.
// N may be 0: a rank whose part of the epoch's short last batch is empty still gets the
// batch, so that it takes part in the step's collective operations.
type Batch struct {
	A, B       []float32
	N, C, H, W int
	PathsA     []string // source keys, one per example
	PathsB     []string
	Indices    []int  // dataset indices
	Epoch      int    // the epoch the batch belongs to
	Cursor     Cursor // the loader's cursor after this batch
	// Total is the size of the global batch this is a part of, and Offset the position
	// of this part's first example in it: the part is [Offset, Offset+N) of Total.
	Total, Offset int
}

// ErrEpochEnd is returned by Next once after the last batch of each epoch; the following
// Next starts the next epoch. Per-epoch work (the learning-rate schedule, evaluation)
// goes there.
var ErrEpochEnd = errors.New("data: end of epoch")

// LoaderStats are a Loader's counters since it was made.
type LoaderStats struct {
	Batches  int64 // batches delivered by Next
	Examples int64 // examples in them
	Skipped  int64 // examples skipped because an image was unreadable (ImageError), up to Cursor
}

// Loader delivers a dataset in batches, epoch after epoch, with a bounded pool of
// goroutines decoding ahead. The order is a function of (Seed, epoch) alone and every
// example of (Seed, epoch, index) alone, so the batches do not depend on the number of
// workers, on timing, or on where the loader was started: Seek(c) followed by Next gives
// what a loader that got to c by calling Next would give.
//
// Global batches: step k of an epoch takes positions [k·BatchSize, (k+1)·BatchSize) of the
// epoch's order (the last one short). With World > 1 the loader decodes and delivers only
// Rank's part of each (Split), so the global batch is the same whatever the world size.
//
// An example whose image cannot be read is replaced by the example at the next position
// of the epoch's order (wrapping around) whose images can be read: a rule that looks at
// nothing but the dataset, so every world size makes the same replacement. The loader
// logs the file (at warn level the first time for each of the first 20 such files,
// otherwise at debug) and counts it in Stats().Skipped. An epoch in which no example can
// be read is an error.
//
// Next, Seek, Cursor and Close must not be called concurrently; Stats may be called from
// any goroutine. Close stops and waits for the goroutines.
type Loader struct {
	d   *Dataset
	cfg LoaderConfig
	log *zap.Logger

	cursor Cursor    // after the last batch or epoch end returned by Next
	run    *pipeline // nil until Next starts one at cursor

	batches, examples, skipped atomic.Int64
	warned                     map[string]bool // files logged at warn
}

// NewLoader returns a loader at Cursor{0, 0}. It starts no goroutine until the first Next.
func NewLoader(d *Dataset, cfg LoaderConfig, log *zap.Logger) (*Loader, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("data: loader for %s: %w", d, err)
	}
	if cfg.Workers == 0 {
		cfg.Workers = runtime.GOMAXPROCS(0)
	}
	if cfg.Prefetch == 0 {
		cfg.Prefetch = 2
	}
	return &Loader{d: d, cfg: cfg, log: log, warned: map[string]bool{}}, nil
}

// Order returns the dataset indices of epoch in the order the loader visits them.
func (l *Loader) Order(epoch int) []int {
	if l.cfg.Shuffle {
		return Permutation(l.cfg.Seed, epoch, l.d.Len())
	}
	p := make([]int, l.d.Len())
	for i := range p {
		p[i] = i
	}
	return p
}

// Cursor returns the position after the last batch (or epoch end) Next returned.
func (l *Loader) Cursor() Cursor { return l.cursor }

// Stats returns the loader's counters.
func (l *Loader) Stats() LoaderStats {
	return LoaderStats{Batches: l.batches.Load(), Examples: l.examples.Load(), Skipped: l.skipped.Load()}
}

// Seek moves the loader to c, dropping whatever was prepared ahead.
func (l *Loader) Seek(c Cursor) error {
	if c.Epoch < 0 || c.Pos < 0 || c.Pos > l.d.Len() {
		return fmt.Errorf("data: loader for %s: seek to epoch %d pos %d: want epoch ≥ 0 and pos in [0, %d]", l.d, c.Epoch, c.Pos, l.d.Len())
	}
	l.stop()
	l.cursor = c
	return nil
}

// Close stops the goroutines and waits for them. The loader can be used again: the next
// Next restarts at Cursor.
func (l *Loader) Close() error {
	l.stop()
	return nil
}

func (l *Loader) stop() {
	if l.run != nil {
		l.run.cancel()
		l.run.wg.Wait()
		l.run = nil
	}
}

// Next returns the next batch, or ErrEpochEnd after an epoch's last batch, or the error
// that stopped the loader (a cancelled ctx only ends this wait; the loader can go on).
func (l *Loader) Next(ctx context.Context) (Batch, error) {
	if err := ctx.Err(); err != nil {
		return Batch{}, err // before the select, which might otherwise take a ready batch
	}
	if l.run == nil {
		l.run = l.start(l.cursor)
	}
	select {
	case <-ctx.Done():
		return Batch{}, ctx.Err()
	case it, ok := <-l.run.out:
		if !ok { // the pipeline ended without an item, which only stop should cause
			l.stop()
			return Batch{}, fmt.Errorf("data: loader for %s: pipeline stopped unexpectedly at epoch %d pos %d", l.d, l.cursor.Epoch, l.cursor.Pos)
		}
		if it.err != nil {
			for _, sk := range it.skipped {
				l.logSkip(sk)
			}
			l.stop() // a later Next retries from the cursor of the last good batch
			return Batch{}, it.err
		}
		for _, sk := range it.skipped {
			l.logSkip(sk)
		}
		l.skipped.Add(int64(len(it.skipped)))
		l.cursor = it.cursor
		if it.end {
			return Batch{}, ErrEpochEnd
		}
		l.batches.Add(1)
		l.examples.Add(int64(it.batch.N))
		return it.batch, nil
	}
}

// pipeline is one run of the loader's goroutines from a cursor: a feeder that walks the
// positions of this rank's parts of the global batches and hands them to the workers in
// order, the workers that decode examples, and an assembler that collects the results in
// position order into batches.
type pipeline struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	out    chan item
}

// item is what the assembler delivers: a batch, an epoch end, or an error, with the
// examples skipped since the previous item. Next logs and counts the skips when it
// delivers the item, so the counters cover exactly the positions up to Cursor, however
// far ahead the pipeline has read.
type item struct {
	batch   Batch
	end     bool
	cursor  Cursor
	err     error
	skipped []skip
}

type skip struct {
	err          *ImageError
	epoch, index int
}

// marker says what a job without a result channel stands for.
type marker int

const (
	example  marker = iota // a position to decode
	batchEnd               // the end of this rank's part of a global batch
	epochEnd               // the end of an epoch
)

// job is one position to load (res receives its result), or a marker. For a batchEnd,
// pos is the cursor after the global batch, total its size and offset this rank's first
// position in it.
type job struct {
	kind          marker
	epoch, pos    int
	order         []int // the epoch's order, shared read-only
	total, offset int
	res           chan result
}

type result struct {
	ex      Example
	skipped []skip
	err     error
}

func (l *Loader) start(from Cursor) *pipeline {
	ctx, cancel := context.WithCancel(context.Background())
	p := &pipeline{cancel: cancel, out: make(chan item, l.cfg.Prefetch)}
	world := max(l.cfg.World, 1)
	window := l.cfg.Prefetch * max(1, l.cfg.BatchSize/world) // examples decoded ahead of the assembler
	jobs := make(chan job)
	ordered := make(chan job, window)
	p.wg.Add(2 + l.cfg.Workers)
	go func() { // feeder
		defer p.wg.Done()
		defer close(jobs)
		defer close(ordered)
		put := func(j job) bool {
			select { // ordered first: its capacity is the prefetch bound
			case ordered <- j:
			case <-ctx.Done():
				return false
			}
			if j.kind != example {
				return true
			}
			select {
			case jobs <- j:
				return true
			case <-ctx.Done():
				return false
			}
		}
		c := from
		for {
			order := l.Order(c.Epoch)
			for pos := c.Pos; pos < len(order); {
				total := min(l.cfg.BatchSize, len(order)-pos)
				lo, hi := Split(total, world, l.cfg.Rank)
				for q := pos + lo; q < pos+hi; q++ {
					if !put(job{kind: example, epoch: c.Epoch, pos: q, order: order, res: make(chan result, 1)}) {
						return
					}
				}
				pos += total
				if !put(job{kind: batchEnd, epoch: c.Epoch, pos: pos, total: total, offset: lo}) {
					return
				}
			}
			if !put(job{kind: epochEnd, epoch: c.Epoch, pos: len(order)}) {
				return
			}
			c = Cursor{Epoch: c.Epoch + 1}
		}
	}()
	for range l.cfg.Workers {
		go func() {
			defer p.wg.Done()
			for j := range jobs {
				j.res <- l.decode(ctx, j)
			}
		}()
	}
	go func() { // assembler
		defer p.wg.Done()
		defer close(p.out)
		l.assemble(ctx, ordered, p.out)
	}()
	return p
}

// decode loads the example at position j.pos of its epoch's order, or, when its images
// cannot be read, the one at the next readable position (wrapping around).
func (l *Loader) decode(ctx context.Context, j job) result {
	var r result
	n := len(j.order)
	for k := range n {
		idx := j.order[(j.pos+k)%n]
		ex, err := l.d.Example(ctx, l.cfg.Seed, j.epoch, idx)
		if err == nil {
			r.ex = ex
			return r
		}
		var ie *ImageError
		if !errors.As(err, &ie) {
			r.err = fmt.Errorf("data: %s: epoch %d position %d (example %d): %w", l.d, j.epoch, (j.pos+k)%n, idx, err)
			return r
		}
		r.skipped = append(r.skipped, skip{ie, j.epoch, idx})
	}
	r.err = fmt.Errorf("data: %s: no readable images: all %d examples of epoch %d are unreadable", l.d, n, j.epoch)
	return r
}

// assemble turns the ordered results into items on out until ctx ends or an error.
func (l *Loader) assemble(ctx context.Context, ordered <-chan job, out chan<- item) {
	var skipped []skip // since the last item sent
	send := func(it item) bool {
		it.skipped, skipped = skipped, nil
		select {
		case out <- it:
			return true
		case <-ctx.Done():
			return false
		}
	}
	var pending []Example
	for j := range ordered {
		switch j.kind {
		case batchEnd:
			c := Cursor{j.epoch, j.pos}
			b := l.stack(pending, j.epoch, c)
			b.Total, b.Offset = j.total, j.offset
			if !send(item{batch: b, cursor: c}) {
				return
			}
			pending = nil
			continue
		case epochEnd:
			if !send(item{end: true, cursor: Cursor{Epoch: j.epoch + 1}}) {
				return
			}
			continue
		}
		var r result
		select {
		case r = <-j.res:
		case <-ctx.Done():
			return
		}
		skipped = append(skipped, r.skipped...)
		if r.err != nil {
			if ctx.Err() == nil {
				send(item{err: r.err})
			}
			return
		}
		pending = append(pending, r.ex)
	}
}

// maxWarned is how many distinct unreadable files a loader logs at warn level; the rest go
// to debug, so a split of a thousand broken files does not bury the log.
const maxWarned = 20

func (l *Loader) logSkip(sk skip) {
	ie := sk.err
	lvl := zap.DebugLevel
	if !l.warned[ie.Key] && len(l.warned) < maxWarned {
		l.warned[ie.Key] = true
		lvl = zap.WarnLevel
		if len(l.warned) == maxWarned {
			defer l.log.Warn("further unreadable images are logged at debug level only; Stats().Skipped counts them all",
				zap.String("dataset", l.d.String()))
		}
	}
	if ce := l.log.Check(lvl, "skipping unreadable image"); ce != nil {
		ce.Write(zap.String("file", ie.Source+"/"+ie.Key), zap.Int("epoch", sk.epoch), zap.Int("example", sk.index), zap.Error(ie.Err))
	}
}

// stack copies examples into one batch.
func (l *Loader) stack(exs []Example, epoch int, c Cursor) Batch {
	n, ch, s := len(exs), l.d.Channels(), l.d.Size()
	per := ch * s * s
	b := Batch{N: n, C: ch, H: s, W: s, Epoch: epoch, Cursor: c,
		A: make([]float32, n*per), PathsA: make([]string, n), Indices: make([]int, n)}
	if l.d.Paired() {
		b.B = make([]float32, n*per)
		b.PathsB = make([]string, n)
	}
	for k, ex := range exs {
		copy(b.A[k*per:(k+1)*per], ex.A)
		b.PathsA[k] = ex.PathA
		b.Indices[k] = ex.Index
		if b.B != nil {
			copy(b.B[k*per:(k+1)*per], ex.B)
			b.PathsB[k] = ex.PathB
		}
	}
	return b
}
