package allreduce

import (
	"context"
	"time"

	"github.com/nats-io/nats.go"
)

// Transport connects one rank to its ring neighbours. This package has three: Mem
// (channels, for tests and single-process runs), NATS (through a server or a
// cluster of them) and TCP (direct connections between neighbours, addresses
// exchanged over NATS). The Reducer runs the same code over each.
type Transport interface {
	// Open returns the links of g.Rank for generation g. Frames are at most
	// frameBytes long; Open fails if the transport cannot carry them. Open does
	// not wait for the neighbours: the first Send and Recv do, under their
	// context.
	Open(ctx context.Context, g Group, frameBytes int) (Link, error)
}

// Link carries one rank's frames for one generation: Send to the right neighbour,
// Recv from the left one. A link has one or more lanes, each FIFO; the Reducer
// puts the i-th frame of an operation on lane i mod Lanes() on both sides, so a
// link may spread its frames over several connections (and the cores that serve
// them) and still deliver them in order. Frames are atomic: after an interrupted
// Send or Recv the lane is still framed, so the next call starts at a frame
// boundary. Send and Recv may run concurrently with each other, but neither with
// itself. Close may be called concurrently with both and makes them return.
type Link interface {
	// Lanes is the number of lanes, >= 1; the same on every rank of a group.
	Lanes() int
	// Send delivers the frame hdr+payload on lane to the right neighbour,
	// blocking under flow control until ctx ends. It does not keep hdr or payload
	// after it returns.
	Send(ctx context.Context, lane int, hdr, payload []byte) error
	// Recv returns the next frame of lane from the left neighbour, blocking until
	// ctx ends: its header (HeaderSize bytes if it is well formed) and its
	// payload, both valid until the next call to Recv.
	Recv(ctx context.Context, lane int) (hdr, payload []byte, err error)
	// Close releases the link's connections, subscriptions and goroutines, and
	// returns after they are gone.
	Close() error
}

// aLongTimeAgo is a deadline in the past: setting it on a connection makes its
// blocked Read or Write return at once.
var aLongTimeAgo = time.Unix(1, 0)

// deadliner is the part of net.Conn that interrupts I/O.
type deadliner interface {
	SetReadDeadline(time.Time) error
	SetWriteDeadline(time.Time) error
}

// watch makes a blocked read (or write) on c return when ctx ends: it sets c's
// deadline to ctx's deadline now and to the past when ctx is cancelled. The stop
// function it returns waits until the cancellation hook cannot run any more, so a
// later call may set its own deadline safely.
func watch(ctx context.Context, c deadliner, write bool) (stop func()) {
	set := c.SetReadDeadline
	if write {
		set = c.SetWriteDeadline
	}
	d, _ := ctx.Deadline() // zero: no deadline
	set(d)
	done := make(chan struct{})
	s := context.AfterFunc(ctx, func() {
		set(aLongTimeAgo)
		close(done)
	})
	return func() {
		if !s() {
			<-done
		}
	}
}

// flushTimeout bounds a NATS flush whose context has no deadline.
const flushTimeout = 10 * time.Second

// flush waits until the server has processed everything nc sent (subscriptions
// included), under ctx's deadline or flushTimeout.
func flush(ctx context.Context, nc *nats.Conn) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, flushTimeout)
		defer cancel()
	}
	return nc.FlushWithContext(ctx)
}
