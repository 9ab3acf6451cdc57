package allreduce

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sync/errgroup"
)

// Reducer sums float32 buffers across the ranks of a group with the ring algorithm
// (reduce-scatter, then all-gather: 2(N-1) steps, chunked and pipelined), over a
// Transport. Every rank ends with bit-identical bytes: the order in which each
// chunk is reduced is fixed by the Plan.
//
// Operations are identified by the generation and a number that counts the
// operations started in it, whatever their outcome: the ranks of a generation must
// make the same calls (same steps, phases and buffer lengths) in the same order.
// Every wait of an operation is bounded by Config.RingTimeout; a neighbour that does
// not deliver fails the operation with a *PeerError naming its rank and host.
//
// Operations are serialised: a call waits for the one in flight. Join and Close may
// be called at any time, from any goroutine; they abort the operation in flight.
//
// An operation returns when this rank has its result; its last frames may still be
// on their way to its right neighbour. A process must not exit right after an
// operation before its peers have their results too (the coordinator's commit of
// the step, or any barrier, says so).
type Reducer struct {
	t   Transport
	cfg Config
	log *zap.Logger

	opMu sync.Mutex // held by an operation, and by Join and Close while they swap links

	mu       sync.Mutex // guards the fields below
	cur      *generation
	latest   uint64 // newest generation passed to Join
	joined   bool   // whether Join was ever called
	cancelOp context.CancelCauseFunc
	closed   bool

	stats counters
}

// generation is the state of one joined group. Only the operation in flight
// touches next and stash, under opMu.
type generation struct {
	group Group
	link  Link
	log   *zap.Logger
	job   uint64
	next  uint64    // number of the next operation
	stash []stashed // per lane, a frame of a later operation read while an earlier one failed
}

// New returns a Reducer over t. It has no group until Join.
func New(t Transport, cfg Config, log *zap.Logger) (*Reducer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Reducer{t: t, cfg: cfg, log: log}, nil
}

// Join makes g the reducer's group: it aborts the operation in flight (which
// returns ErrStaleGeneration), closes the links of the previous generation and
// opens those of g. g.Gen must be newer than every generation joined before.
func (r *Reducer) Join(ctx context.Context, g Group) error {
	if err := g.Validate(); err != nil {
		return fmt.Errorf("allreduce: join: %w", err)
	}
	r.mu.Lock()
	switch {
	case r.closed:
		r.mu.Unlock()
		return fmt.Errorf("allreduce: join gen %d: %w", g.Gen, ErrClosed)
	case r.joined && (g.Gen < r.latest || g.Gen == r.latest && r.cur != nil):
		latest := r.latest
		r.mu.Unlock()
		return fmt.Errorf("allreduce: join gen %d: %w: gen %d was joined already", g.Gen, ErrStaleGeneration, latest)
	}
	r.latest, r.joined = g.Gen, true
	if r.cancelOp != nil {
		r.cancelOp(fmt.Errorf("%w: generation %d announced", ErrStaleGeneration, g.Gen))
	}
	r.mu.Unlock()

	r.opMu.Lock()
	defer r.opMu.Unlock()
	r.mu.Lock()
	old := r.cur
	r.cur = nil
	r.mu.Unlock()
	if old != nil {
		if err := old.link.Close(); err != nil {
			old.log.Warn("closing links of the previous generation", zap.Error(err))
		}
	}
	octx, cancel := context.WithTimeout(ctx, r.cfg.RingTimeout)
	link, err := r.t.Open(octx, g, r.cfg.FrameBytes())
	cancel()
	if err != nil {
		return fmt.Errorf("allreduce: job %s gen %d rank %d: open links: %w", g.Job, g.Gen, g.Rank, err)
	}
	log := r.log.With(zap.String("job", g.Job), zap.Uint64("gen", g.Gen), zap.Int("rank", g.Rank))
	r.mu.Lock()
	if r.closed || r.latest != g.Gen {
		r.mu.Unlock()
		link.Close()
		return fmt.Errorf("allreduce: join gen %d: %w: superseded while opening links", g.Gen, ErrStaleGeneration)
	}
	r.cur = &generation{group: g, link: link, log: log, job: nameHash(g.Job), stash: make([]stashed, link.Lanes())}
	r.mu.Unlock()
	log.Info("joined generation", zap.Int("world", g.World()), zap.String("left", g.Hosts[g.Left()]), zap.String("right", g.Hosts[g.Right()]))
	return nil
}

// Close aborts the operation in flight (it returns ErrClosed), closes the links and
// returns once they are closed. Later calls fail with ErrClosed.
func (r *Reducer) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	if r.cancelOp != nil {
		r.cancelOp(fmt.Errorf("allreduce: reducer %w", ErrClosed))
	}
	r.mu.Unlock()
	r.opMu.Lock()
	defer r.opMu.Unlock()
	r.mu.Lock()
	old := r.cur
	r.cur = nil
	r.mu.Unlock()
	if old == nil {
		return nil
	}
	return old.link.Close()
}

// SumInPlace replaces buf, on every rank of the group, with the element-wise sum of
// the ranks' buffers. step and phase name the operation; they, len(buf) and the
// chunk size must be the same on every rank or the operation fails with
// ErrMismatch. On error buf holds partial sums and must not be used.
func (r *Reducer) SumInPlace(ctx context.Context, step uint64, phase string, buf []float32) error {
	return r.do(ctx, step, phase, buf, false)
}

// Average is SumInPlace followed by a division by the number of ranks.
func (r *Reducer) Average(ctx context.Context, step uint64, phase string, buf []float32) error {
	return r.do(ctx, step, phase, buf, true)
}

// World is the number of ranks of the joined group, 0 before Join.
func (r *Reducer) World() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cur == nil {
		return 0
	}
	return r.cur.group.World()
}

// Rank is this process's rank in the joined group, 0 before Join.
func (r *Reducer) Rank() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cur == nil {
		return 0
	}
	return r.cur.group.Rank
}

func (r *Reducer) do(ctx context.Context, step uint64, phase string, buf []float32, average bool) error {
	if len(buf) > math.MaxUint32 {
		return fmt.Errorf("allreduce: step %d phase %q: %d elements, at most %d", step, phase, len(buf), uint32(math.MaxUint32))
	}
	r.opMu.Lock()
	defer r.opMu.Unlock()
	r.mu.Lock()
	gen := r.cur
	switch {
	case r.closed:
		r.mu.Unlock()
		return fmt.Errorf("allreduce: step %d phase %q: reducer %w", step, phase, ErrClosed)
	case gen == nil:
		r.mu.Unlock()
		return fmt.Errorf("allreduce: step %d phase %q: %w", step, phase, ErrNotJoined)
	}
	op := gen.next
	gen.next++
	ctx, cancel := context.WithCancelCause(ctx)
	r.cancelOp = cancel
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.cancelOp = nil
		r.mu.Unlock()
		cancel(nil)
	}()

	r.stats.ops.Add(1)
	start := time.Now()
	err := r.ring(ctx, gen, op, step, phase, buf)
	if err != nil {
		r.stats.failed.Add(1)
		g := gen.group
		err = fmt.Errorf("allreduce: job %s gen %d rank %d (%s) step %d phase %q op %d: %w",
			g.Job, g.Gen, g.Rank, g.Hosts[g.Rank], step, phase, op, err)
		gen.log.Warn("allreduce failed", zap.Uint64("step", step), zap.String("phase", phase),
			zap.Uint64("op", op), zap.Duration("after", time.Since(start)), zap.Error(err))
		return err
	}
	if ce := gen.log.Check(zapcore.DebugLevel, "allreduce done"); ce != nil {
		ce.Write(zap.Uint64("step", step), zap.String("phase", phase), zap.Int("len", len(buf)), zap.Duration("took", time.Since(start)))
	}
	if average && gen.group.World() > 1 {
		w := float32(gen.group.World())
		for i := range buf {
			buf[i] /= w
		}
	}
	return nil
}

// ring runs one operation: a sender that sends the chunks in the order the plan
// makes them available, and a receiver that applies each expected chunk and hands
// it to the sender to forward.
func (r *Reducer) ring(ctx context.Context, gen *generation, op, step uint64, phase string, buf []float32) error {
	g := gen.group
	if err := context.Cause(ctx); err != nil {
		return err
	}
	if g.World() == 1 || len(buf) == 0 {
		return nil
	}
	p := NewPlan(g.World(), len(buf), r.cfg.chunkElems())
	base := Header{
		From: uint16(g.Rank), To: uint16(g.Right()),
		Job: gen.job, Gen: g.Gen, Step: step, Phase: nameHash(phase), Op: op, Total: uint32(len(buf)),
	}
	total := p.Sends(g.Rank)
	queue := make(chan chunkRef, total) // every chunk is queued once: the receiver never blocks on it
	s0 := p.SendSeg(g.Rank, 0)
	for j := range p.Chunks(s0) {
		queue <- chunkRef{0, j}
	}
	eg, ectx := errgroup.WithContext(ctx)
	eg.Go(func() error { return r.sendLoop(ectx, gen, p, base, buf, queue, total) })
	eg.Go(func() error { return r.recvLoop(ectx, gen, p, base, buf, queue) })
	err := eg.Wait()
	if cause := context.Cause(ctx); cause != nil {
		// Aborted from outside (caller's ctx, Join, Close): that is the reason,
		// whatever the loops saw while they were being stopped.
		return cause
	}
	return err
}

type chunkRef struct{ k, j int }

// stashed is a frame kept for the next operation.
type stashed struct{ hdr, payload []byte }

func (r *Reducer) sendLoop(ctx context.Context, gen *generation, p Plan, base Header, buf []float32, queue <-chan chunkRef, total int) error {
	g := gen.group
	hdr := make([]byte, HeaderSize)
	var scratch []byte
	if !littleEndian {
		scratch = make([]byte, r.cfg.ChunkBytes)
	}
	lanes := gen.link.Lanes()
	for seq := range total {
		var c chunkRef
		select {
		case c = <-queue:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
		s := p.SendSeg(g.Rank, c.k)
		lo, hi := p.ChunkRange(s, c.j)
		h := base
		h.RingStep, h.Chunk, h.Count = uint16(c.k), uint32(c.j), uint32(hi-lo)
		PutHeader(hdr, h)
		wctx, cancel := context.WithTimeout(ctx, r.cfg.RingTimeout)
		err := gen.link.Send(wctx, seq%lanes, hdr, wireBytes(buf[lo:hi], scratch))
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return context.Cause(ctx)
			}
			return r.peerErr(g, g.Right(), "to", fmt.Sprintf("sending ring step %d chunk %d", c.k, c.j), err)
		}
		r.stats.framesSent.Add(1)
		r.stats.bytesSent.Add(uint64(4 * (hi - lo)))
	}
	return nil
}

func (r *Reducer) recvLoop(ctx context.Context, gen *generation, p Plan, base Header, buf []float32, queue chan<- chunkRef) error {
	g := gen.group
	want := base
	want.From, want.To = uint16(g.Left()), uint16(g.Rank)
	lanes, seq := gen.link.Lanes(), 0
	for k := range p.Steps() {
		s := p.RecvSeg(g.Rank, k)
		for j := range p.Chunks(s) {
			lo, hi := p.ChunkRange(s, j)
			want.RingStep, want.Chunk, want.Count = uint16(k), uint32(j), uint32(hi-lo)
			// The i-th frame of an operation travels on lane i mod lanes.
			payload, err := r.recvFrame(ctx, gen, seq%lanes, want)
			if err != nil {
				return err
			}
			seq++
			if p.Reduces(k) {
				addWire(buf[lo:hi], payload)
			} else {
				copyWire(buf[lo:hi], payload)
			}
			r.stats.framesRecv.Add(1)
			r.stats.bytesRecv.Add(uint64(len(payload)))
			if k+1 < p.Steps() {
				queue <- chunkRef{k + 1, j}
			}
		}
	}
	return nil
}

// recvFrame returns the payload of the frame want describes. Frames that belong to
// something else (another job, an older generation or operation) are dropped and
// counted; a frame that contradicts want fails the operation. The whole wait,
// dropped frames included, is bounded by the ring timeout.
func (r *Reducer) recvFrame(ctx context.Context, gen *generation, lane int, want Header) ([]byte, error) {
	g := gen.group
	left := g.Left()
	what := fmt.Sprintf("waiting for ring step %d chunk %d", want.RingStep, want.Chunk)
	wctx, cancel := context.WithTimeout(ctx, r.cfg.RingTimeout)
	defer cancel()
	for {
		var hdr, payload []byte
		if st := &gen.stash[lane]; st.hdr != nil {
			hdr, payload = st.hdr, st.payload
			*st = stashed{}
		} else {
			var err error
			hdr, payload, err = gen.link.Recv(wctx, lane)
			if err != nil {
				if ctx.Err() != nil {
					return nil, context.Cause(ctx)
				}
				return nil, r.peerErr(g, left, "from", what, err)
			}
		}
		h, err := ParseHeader(hdr)
		if err == nil {
			h, payload, err = decodeParts(h, hdr, payload)
		}
		if err != nil {
			r.stats.drop(dropMalformed)
			if ce := gen.log.Check(zapcore.DebugLevel, "dropped malformed frame"); ce != nil {
				ce.Write(zap.Int("from", left), zap.Error(err))
			}
			continue
		}
		v := judge(h, want)
		switch v {
		case accept:
			return payload, nil
		case dropForeign, dropMisrouted, dropStaleGen, dropStaleOp:
			r.stats.drop(v)
			if ce := gen.log.Check(zapcore.DebugLevel, "dropped frame"); ce != nil {
				ce.Write(zap.Stringer("reason", v), zap.Uint64("frame_gen", h.Gen), zap.Uint64("frame_op", h.Op), zap.Int("from", int(h.From)))
			}
			continue
		case failNewerGen:
			return nil, r.peerErr(g, left, "from", what, fmt.Errorf("%w: it sends in generation %d", ErrStaleGeneration, h.Gen))
		case failLaterOp:
			// The neighbour gave up on this operation; its frame belongs to the
			// next one, which gets it from the stash.
			gen.stash[lane] = stashed{hdr: append([]byte(nil), hdr...), payload: append([]byte(nil), payload...)}
			return nil, r.peerErr(g, left, "from", what, fmt.Errorf("%w: it moved on to operation %d", ErrChunkLost, h.Op))
		case failOrder:
			return nil, r.peerErr(g, left, "from", what, fmt.Errorf("%w: got ring step %d chunk %d", ErrChunkLost, h.RingStep, h.Chunk))
		default: // failMismatch
			return nil, r.peerErr(g, left, "from", what, fmt.Errorf("%w: it reduces step %d phase %#x of %d elements in chunks of %d, we step %d phase %#x of %d elements in chunks of %d",
				ErrMismatch, h.Step, h.Phase, h.Total, h.Count, want.Step, want.Phase, want.Total, want.Count))
		}
	}
}

func (r *Reducer) peerErr(g Group, rank int, dir, what string, err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		err = fmt.Errorf("%w: nothing for %v: %w", ErrPeerTimeout, r.cfg.RingTimeout, err)
	}
	return &PeerError{Rank: rank, Host: g.Hosts[rank], Dir: dir, What: what, Err: err}
}

// verdict is what a receiver does with a frame.
type verdict int

const (
	accept        verdict = iota
	dropMalformed         // does not decode
	dropForeign           // another job
	dropMisrouted         // not addressed to us, or not from our left neighbour
	dropStaleGen          // an older generation
	dropStaleOp           // an older operation of this generation
	failNewerGen          // the sender is in a newer generation: ours is over
	failLaterOp           // the sender is in a later operation: ours lost a chunk
	failOrder             // this operation, but not the chunk that comes next
	failMismatch          // this operation and chunk, but the ranks disagree on its shape
	numVerdicts
)

func (v verdict) String() string {
	switch v {
	case accept:
		return "accept"
	case dropMalformed:
		return "malformed"
	case dropForeign:
		return "foreign job"
	case dropMisrouted:
		return "misrouted"
	case dropStaleGen:
		return "stale generation"
	case dropStaleOp:
		return "stale operation"
	case failNewerGen:
		return "newer generation"
	case failLaterOp:
		return "later operation"
	case failOrder:
		return "out of order"
	case failMismatch:
		return "mismatch"
	}
	return fmt.Sprintf("verdict(%d)", int(v))
}

// judge compares a received header h with the one the receiver expects next. It is
// pure; the order of the checks is the protocol.
func judge(h, want Header) verdict {
	switch {
	case h.Job != want.Job:
		return dropForeign
	case h.To != want.To || h.From != want.From:
		return dropMisrouted
	case h.Gen < want.Gen:
		return dropStaleGen
	case h.Gen > want.Gen:
		return failNewerGen
	case h.Op < want.Op:
		return dropStaleOp
	case h.Op > want.Op:
		return failLaterOp
	case h.Step != want.Step || h.Phase != want.Phase || h.Total != want.Total:
		return failMismatch
	case h.RingStep != want.RingStep || h.Chunk != want.Chunk:
		return failOrder
	case h.Count != want.Count:
		return failMismatch
	}
	return accept
}

// Stats are a Reducer's counters since New.
type Stats struct {
	Ops, Failed            uint64 // operations started, and failed
	FramesSent, FramesRecv uint64 // chunk frames sent and applied
	BytesSent, BytesRecv   uint64 // payload bytes sent and applied
	DroppedMalformed       uint64 // frames that did not decode
	DroppedForeign         uint64 // frames of another job
	DroppedMisrouted       uint64 // frames for another rank or from a rank that is not our left neighbour
	DroppedStaleGen        uint64 // frames of an older generation
	DroppedStaleOp         uint64 // frames of an older operation (one that failed or was aborted)
}

// Dropped is the number of frames dropped for any reason.
func (s Stats) Dropped() uint64 {
	return s.DroppedMalformed + s.DroppedForeign + s.DroppedMisrouted + s.DroppedStaleGen + s.DroppedStaleOp
}

// Stats returns the counters; safe to call concurrently with operations.
func (r *Reducer) Stats() Stats {
	c := &r.stats
	return Stats{
		Ops: c.ops.Load(), Failed: c.failed.Load(),
		FramesSent: c.framesSent.Load(), FramesRecv: c.framesRecv.Load(),
		BytesSent: c.bytesSent.Load(), BytesRecv: c.bytesRecv.Load(),
		DroppedMalformed: c.dropped[dropMalformed].Load(),
		DroppedForeign:   c.dropped[dropForeign].Load(),
		DroppedMisrouted: c.dropped[dropMisrouted].Load(),
		DroppedStaleGen:  c.dropped[dropStaleGen].Load(),
		DroppedStaleOp:   c.dropped[dropStaleOp].Load(),
	}
}

type counters struct {
	ops, failed            atomic.Uint64
	framesSent, framesRecv atomic.Uint64
	bytesSent, bytesRecv   atomic.Uint64
	dropped                [numVerdicts]atomic.Uint64
}

func (c *counters) drop(v verdict) { c.dropped[v].Add(1) }
