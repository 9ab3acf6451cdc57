package allreduce

import (
	"context"
	"fmt"
	"sync"
)

// MemNetwork connects ranks in one process through bounded channels: a real
// transport, not a mock, so whole rings run in a test. Each link holds at most
// window frames; a sender beyond that blocks, as it would on a full socket.
type MemNetwork struct {
	window int

	mu    sync.Mutex
	links map[memKey]*memQueue
}

type memKey struct {
	job      string
	gen      uint64
	from, to int
}

type memQueue struct {
	ch   chan []byte
	free chan []byte // frames the receiver is done with, for the sender to reuse
	refs int         // ends attached: the sender's link and the receiver's link
}

// NewMemNetwork returns an empty network whose links hold window frames (>= 1).
func NewMemNetwork(window int) *MemNetwork {
	return &MemNetwork{window: max(window, 1), links: map[memKey]*memQueue{}}
}

// attach returns the queue of k, creating it, and counts one more end on it.
func (m *MemNetwork) attach(k memKey) *memQueue {
	m.mu.Lock()
	defer m.mu.Unlock()
	q := m.links[k]
	if q == nil {
		q = &memQueue{ch: make(chan []byte, m.window), free: make(chan []byte, m.window+1)}
		m.links[k] = q
	}
	q.refs++
	return q
}

// detach drops one end of k; the queue and the frames in it go with the last end.
func (m *MemNetwork) detach(k memKey) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if q := m.links[k]; q != nil {
		if q.refs--; q.refs == 0 {
			delete(m.links, k)
		}
	}
}

// Links is the number of link queues that exist; 0 once every link is closed.
func (m *MemNetwork) Links() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.links)
}

// Open implements Transport.
func (m *MemNetwork) Open(ctx context.Context, g Group, frameBytes int) (Link, error) {
	if err := g.Validate(); err != nil {
		return nil, err
	}
	l := &memLink{
		net:    m,
		out:    memKey{g.Job, g.Gen, g.Rank, g.Right()},
		in:     memKey{g.Job, g.Gen, g.Left(), g.Rank},
		closed: make(chan struct{}),
	}
	l.outQ, l.inQ = m.attach(l.out), m.attach(l.in)
	return l, nil
}

type memLink struct {
	net       *MemNetwork
	out, in   memKey
	outQ, inQ *memQueue
	last      []byte // the frame Recv returned last, recycled by the next Recv
	closeOnce sync.Once
	closed    chan struct{}
}

// Lanes implements Link: one channel per link.
func (l *memLink) Lanes() int { return 1 }

func (l *memLink) Send(ctx context.Context, _ int, hdr, payload []byte) error {
	var frame []byte
	select {
	case frame = <-l.outQ.free:
	default:
	}
	frame = append(append(frame[:0], hdr...), payload...)
	select {
	case l.outQ.ch <- frame:
		return nil
	case <-l.closed:
		return fmt.Errorf("mem link to rank %d: %w", l.out.to, ErrClosed)
	case <-ctx.Done():
		return fmt.Errorf("mem link to rank %d: queue full: %w", l.out.to, ctx.Err())
	}
}

func (l *memLink) Recv(ctx context.Context, _ int) (hdr, payload []byte, err error) {
	if l.last != nil {
		select {
		case l.inQ.free <- l.last:
		default:
		}
		l.last = nil
	}
	select {
	case f := <-l.inQ.ch:
		l.last = f
		hdr, payload = splitFrame(f)
		return hdr, payload, nil
	case <-l.closed:
		return nil, nil, fmt.Errorf("mem link from rank %d: %w", l.in.from, ErrClosed)
	case <-ctx.Done():
		return nil, nil, fmt.Errorf("mem link from rank %d: %w", l.in.from, ctx.Err())
	}
}

func (l *memLink) Close() error {
	l.closeOnce.Do(func() {
		close(l.closed)
		l.net.detach(l.out)
		l.net.detach(l.in)
	})
	return nil
}
