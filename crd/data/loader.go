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
	BatchSize int    `yaml:"batch_size"` // examples per batch; an epoch's last batch may be short
	Shuffle   bool   `yaml:"shuffle"`    // a seeded permutation per epoch; off: index order
	Workers   int    `yaml:"workers"`    // decoding goroutines; 0: GOMAXPROCS
	Prefetch  int    `yaml:"prefetch"`   // batches prepared ahead of Next; 0: 2
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

// Batch is a batch of examples, stacked: A and B are N×C×H×W float32 in [−1, 1],
// contiguous (B is nil for a single dataset). The caller owns the slices.
type Batch struct {
	A, B       []float32
	N, C, H, W int
	PathsA     []string // source keys, one per example
	PathsB     []string
	Indices    []int  // dataset indices
	Epoch      int    // the epoch the batch belongs to
	Cursor     Cursor // the loader's cursor after this batch
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
// An example whose image cannot be read is skipped: the loader logs the file (at warn
// level the first time for each of the first 20 such files, otherwise at debug), counts
// it in Stats().Skipped, and fills the batch from the next positions. An epoch in which
// no example can be read is an error.
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
// positions and hands them to the workers in order, the workers that decode examples,
// and an assembler that collects the results in position order into batches.
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

// job is one position to load; res receives its result.
type job struct {
	epoch, pos, index int
	res               chan result
}

type result struct {
	ex  Example
	err error
}

func (l *Loader) start(from Cursor) *pipeline {
	ctx, cancel := context.WithCancel(context.Background())
	p := &pipeline{cancel: cancel, out: make(chan item, l.cfg.Prefetch)}
	window := l.cfg.Prefetch * l.cfg.BatchSize // examples decoded ahead of the assembler
	jobs := make(chan job)
	ordered := make(chan job, window)
	p.wg.Add(2 + l.cfg.Workers)
	go func() { // feeder
		defer p.wg.Done()
		defer close(jobs)
		defer close(ordered)
		c := from
		for {
			order := l.Order(c.Epoch)
			for ; c.Pos < len(order); c.Pos++ {
				j := job{epoch: c.Epoch, pos: c.Pos, index: order[c.Pos], res: make(chan result, 1)}
				select { // ordered first: its capacity is the prefetch bound
				case ordered <- j:
				case <-ctx.Done():
					return
				}
				select {
				case jobs <- j:
				case <-ctx.Done():
					return
				}
			}
			// An epoch marker: a job with no result channel.
			select {
			case ordered <- job{epoch: c.Epoch, pos: c.Pos}:
			case <-ctx.Done():
				return
			}
			c = Cursor{Epoch: c.Epoch + 1}
		}
	}()
	for range l.cfg.Workers {
		go func() {
			defer p.wg.Done()
			for j := range jobs {
				ex, err := l.d.Example(ctx, l.cfg.Seed, j.epoch, j.index)
				j.res <- result{ex, err}
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
	visited, good := 0, 0 // positions of this epoch seen by this pipeline, and how many were readable
	for j := range ordered {
		if j.res == nil { // end of epoch j.epoch
			if len(pending) > 0 {
				if !send(item{batch: l.stack(pending, j.epoch, Cursor{j.epoch, j.pos}), cursor: Cursor{j.epoch, j.pos}}) {
					return
				}
				pending = nil
			}
			if visited > 0 && good == 0 {
				send(item{err: fmt.Errorf("data: %s: no readable images: all %d examples of epoch %d skipped", l.d, visited, j.epoch)})
				return
			}
			if !send(item{end: true, cursor: Cursor{Epoch: j.epoch + 1}}) {
				return
			}
			visited, good = 0, 0
			continue
		}
		visited++
		var r result
		select {
		case r = <-j.res:
		case <-ctx.Done():
			return
		}
		if r.err != nil {
			var ie *ImageError
			if !errors.As(r.err, &ie) {
				if ctx.Err() == nil {
					send(item{err: fmt.Errorf("data: %s: epoch %d position %d (example %d): %w", l.d, j.epoch, j.pos, j.index, r.err)})
				}
				return
			}
			skipped = append(skipped, skip{ie, j.epoch, j.index})
			continue
		}
		good++
		pending = append(pending, r.ex)
		if len(pending) == l.cfg.BatchSize {
			c := Cursor{j.epoch, j.pos + 1}
			if !send(item{batch: l.stack(pending, j.epoch, c), cursor: c}) {
				return
			}
			pending = nil
		}
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
