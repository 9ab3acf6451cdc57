package allreduce

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"
)

// TCPConfig configures the direct TCP transport.
type TCPConfig struct {
	// Listen is the address each link listens on for its left neighbour, one
	// listener per generation ("127.0.0.1:0": loopback, a free port).
	Listen string
	// Advertise is the host the left neighbour dials, when Listen's host is not
	// one it can reach (unspecified, or behind NAT). The port is the listener's.
	Advertise string
	// HandshakeTimeout bounds reading the hello of an accepted connection.
	HandshakeTimeout time.Duration
}

// DefaultTCPConfig returns the defaults: loopback, any free port, 5 s handshakes.
func DefaultTCPConfig() TCPConfig {
	return TCPConfig{Listen: "127.0.0.1:0", HandshakeTimeout: 5 * time.Second}
}

// Validate reports every problem of c at once.
func (c TCPConfig) Validate() error {
	var errs []error
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		errs = append(errs, fmt.Errorf("allreduce.tcp.listen %q: %w", c.Listen, err))
	}
	if c.HandshakeTimeout <= 0 {
		errs = append(errs, fmt.Errorf("allreduce.tcp.handshake_timeout: must be > 0, got %v", c.HandshakeTimeout))
	}
	return errors.Join(errs...)
}

// TCP is the Transport over direct TCP connections between ring neighbours: rank r
// listens for rank r-1 and dials rank r+1. Addresses are exchanged over NATS: a
// rank answers hellos on crdgo.<job>.ar.<gen>.<rank>.addr with its listener's
// address. Each connection starts with a hello that names job, generation and
// both ranks; the listener drops any other. TCP's own flow control is the window.
//
// A connection outlives failed operations: a Send or Recv interrupted mid-frame
// finishes that frame on the next call, so the stream stays framed and the frames
// of an aborted operation reach the receiver whole, to be dropped there. A broken
// connection is dropped; the sender dials again on its next Send.
type TCP struct {
	nc  *nats.Conn
	cfg TCPConfig
	log *zap.Logger

	dropped atomic.Uint64
}

// NewTCP returns the TCP transport; nc is used to exchange addresses only.
func NewTCP(nc *nats.Conn, cfg TCPConfig, log *zap.Logger) (*TCP, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &TCP{nc: nc, cfg: cfg, log: log}, nil
}

// Dropped is the number of connections refused (bad hello) or dropped (a stream
// that does not frame) and of address messages rejected.
func (t *TCP) Dropped() uint64 { return t.dropped.Load() }

// Open implements Transport: it listens, and answers address requests for rank
// g.Rank of generation g.Gen.
func (t *TCP) Open(ctx context.Context, g Group, frameBytes int) (Link, error) {
	if err := g.Validate(); err != nil {
		return nil, err
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", t.cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("tcp: listen for rank %d: %w", g.Left(), err)
	}
	addr := ln.Addr().String()
	if t.cfg.Advertise != "" {
		_, port, _ := net.SplitHostPort(addr)
		addr = net.JoinHostPort(t.cfg.Advertise, port)
	}
	l := &tcpLink{
		t: t, g: g, job: nameHash(g.Job), maxFrame: frameBytes, ln: ln, addr: addr,
		incoming: make(chan struct{}, 1),
		closed:   make(chan struct{}),
		log:      t.log.With(zap.String("job", g.Job), zap.Uint64("gen", g.Gen), zap.Int("rank", g.Rank)),
	}
	l.sub, err = t.nc.Subscribe(subject(g.Job, g.Gen, g.Rank, "addr"), l.onAddrRequest)
	if err == nil {
		err = flush(ctx, t.nc)
	}
	if err != nil {
		ln.Close()
		if l.sub != nil {
			l.sub.Unsubscribe()
		}
		return nil, fmt.Errorf("tcp: announce address of rank %d: %w", g.Rank, err)
	}
	l.wg.Add(1)
	go l.acceptLoop()
	return l, nil
}

type tcpLink struct {
	t        *TCP
	g        Group
	job      uint64
	maxFrame int
	ln       net.Listener
	addr     string
	sub      *nats.Subscription
	log      *zap.Logger
	wg       sync.WaitGroup // the accept loop and the handshakes it started

	mu       sync.Mutex // guards pending, in, out and isClosed
	pending  net.Conn   // the newest accepted connection, not yet read
	in, out  net.Conn   // written by Recv and Send only, under mu
	isClosed bool

	incoming  chan struct{} // a connection was accepted
	closed    chan struct{}
	closeOnce sync.Once

	// Recv side: a frame being read, kept across interrupted calls.
	rbuf    []byte
	rhave   int
	rsize   int   // frame size once the header is in, else 0
	lastErr error // why the last incoming connection was dropped

	// Send side: the unwritten rest of an interrupted frame.
	rest []byte
}

func (l *tcpLink) onAddrRequest(m *nats.Msg) {
	c, err := decodeCtl(m.Data)
	if err == nil {
		err = c.expect(ctlHello, l.job, l.g.Gen, l.g.Left(), l.g.Rank, 0)
	}
	if err != nil || m.Reply == "" {
		l.t.dropped.Add(1)
		l.log.Debug("dropped address request", zap.Error(err))
		return
	}
	reply := ctlMsg{Kind: ctlAddr, From: uint16(l.g.Rank), To: c.From, Job: l.job, Gen: l.g.Gen, Addr: l.addr}
	if err := m.Respond(reply.encode()); err != nil {
		l.log.Warn("answering address request", zap.Error(err))
	}
}

func (l *tcpLink) acceptLoop() {
	defer l.wg.Done()
	for {
		c, err := l.ln.Accept()
		if err != nil {
			select {
			case <-l.closed:
				return
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			l.log.Error("accepting connections stopped", zap.Error(err))
			return
		}
		l.wg.Add(1)
		go l.handshake(c)
	}
}

// handshake reads the hello of an accepted connection and makes it the pending
// incoming connection, replacing (and closing) an older pending one.
func (l *tcpLink) handshake(c net.Conn) {
	defer l.wg.Done()
	b := make([]byte, ctlSize)
	c.SetReadDeadline(time.Now().Add(l.t.cfg.HandshakeTimeout))
	_, err := io.ReadFull(c, b)
	var m ctlMsg
	if err == nil {
		m, err = decodeCtl(b)
	}
	if err == nil {
		err = m.expect(ctlHello, l.job, l.g.Gen, l.g.Left(), l.g.Rank, 0)
	}
	if err == nil {
		err = c.SetReadDeadline(time.Time{})
	}
	if err != nil {
		l.t.dropped.Add(1)
		l.log.Warn("refused connection", zap.Stringer("remote", c.RemoteAddr()), zap.Error(err))
		c.Close()
		return
	}
	l.mu.Lock()
	if l.isClosed {
		l.mu.Unlock()
		c.Close()
		return
	}
	old := l.pending
	l.pending = c
	l.mu.Unlock()
	if old != nil {
		old.Close()
	}
	signal(l.incoming)
}

// Lanes implements Link: one connection per link (the kernel spreads it).
func (l *tcpLink) Lanes() int { return 1 }

func (l *tcpLink) Recv(ctx context.Context, _ int) (hdr, payload []byte, err error) {
	for {
		if l.in == nil {
			l.mu.Lock()
			c, closed := l.pending, l.isClosed
			l.pending = nil
			if !closed {
				l.in = c
			}
			l.mu.Unlock()
			if closed {
				return nil, nil, fmt.Errorf("tcp: link from rank %d: %w", l.g.Left(), ErrClosed)
			}
			if c == nil {
				select {
				case <-l.incoming:
					continue
				case <-l.closed:
					return nil, nil, fmt.Errorf("tcp: link from rank %d: %w", l.g.Left(), ErrClosed)
				case <-ctx.Done():
					if l.lastErr != nil {
						return nil, nil, fmt.Errorf("tcp: no connection from rank %d since %v: %w", l.g.Left(), l.lastErr, ctx.Err())
					}
					return nil, nil, fmt.Errorf("tcp: no connection from rank %d: %w", l.g.Left(), ctx.Err())
				}
			}
			l.rhave, l.rsize = 0, 0
		}
		frame, err := l.readFrame(ctx)
		if err == nil {
			hdr, payload = splitFrame(frame)
			return hdr, payload, nil
		}
		if interrupted(ctx, err) {
			// The connection is fine; the partial frame stays for the next call.
			return nil, nil, fmt.Errorf("tcp: reading from rank %d: %w", l.g.Left(), ctxErr(ctx))
		}
		select {
		case <-l.closed:
			return nil, nil, fmt.Errorf("tcp: link from rank %d: %w", l.g.Left(), ErrClosed)
		default:
		}
		// Broken: the sender closed it (it gave up or crashed) or the stream does
		// not frame. Drop it and wait for the sender to dial again.
		l.lastErr = err
		l.mu.Lock()
		c := l.in
		l.in = nil
		l.mu.Unlock()
		c.Close()
		l.log.Debug("dropped incoming connection", zap.Int("from", l.g.Left()), zap.Error(err))
	}
}

// readFrame reads (the rest of) the next frame from l.in.
func (l *tcpLink) readFrame(ctx context.Context) ([]byte, error) {
	stop := watch(ctx, l.in, false)
	defer stop()
	if len(l.rbuf) < HeaderSize {
		l.rbuf = make([]byte, HeaderSize)
	}
	if l.rsize == 0 {
		n, err := io.ReadFull(l.in, l.rbuf[l.rhave:HeaderSize])
		l.rhave += n
		if err != nil {
			return nil, err
		}
		h, err := ParseHeader(l.rbuf[:HeaderSize])
		if err != nil {
			l.t.dropped.Add(1)
			return nil, err
		}
		if h.FrameSize() > l.maxFrame {
			l.t.dropped.Add(1)
			return nil, fmt.Errorf("%w: frame of %d bytes, links carry at most %d", ErrMalformed, h.FrameSize(), l.maxFrame)
		}
		l.rsize = h.FrameSize()
		if len(l.rbuf) < l.rsize {
			grown := make([]byte, l.maxFrame)
			copy(grown, l.rbuf[:HeaderSize])
			l.rbuf = grown
		}
	}
	n, err := io.ReadFull(l.in, l.rbuf[l.rhave:l.rsize])
	l.rhave += n
	if err != nil {
		return nil, err
	}
	frame := l.rbuf[:l.rsize]
	l.rhave, l.rsize = 0, 0
	return frame, nil
}

func (l *tcpLink) Send(ctx context.Context, _ int, hdr, payload []byte) error {
	if l.out == nil {
		c, err := l.dial(ctx)
		if err != nil {
			return err
		}
		l.mu.Lock()
		if l.isClosed {
			l.mu.Unlock()
			c.Close()
			return fmt.Errorf("tcp: link to rank %d: %w", l.g.Right(), ErrClosed)
		}
		l.out = c
		l.mu.Unlock()
		l.rest = nil
	}
	stop := watch(ctx, l.out, true)
	defer stop()
	bufs := net.Buffers{l.rest, hdr, payload}
	_, err := bufs.WriteTo(l.out)
	if err == nil {
		l.rest = l.rest[:0]
		return nil
	}
	if interrupted(ctx, err) {
		// Keep what is left of the frame (hdr and payload are not ours to keep)
		// and finish it first on the next call.
		var rest []byte
		for _, b := range bufs {
			rest = append(rest, b...)
		}
		l.rest = rest
		return fmt.Errorf("tcp: rank %d takes no data: %w", l.g.Right(), ctxErr(ctx))
	}
	l.mu.Lock()
	c := l.out
	l.out = nil
	l.mu.Unlock()
	c.Close()
	l.rest = nil
	select {
	case <-l.closed:
		return fmt.Errorf("tcp: link to rank %d: %w", l.g.Right(), ErrClosed)
	default:
	}
	return fmt.Errorf("tcp: writing to rank %d: %w", l.g.Right(), err)
}

// dial asks the right neighbour for its address over NATS until it answers, dials
// it and says hello.
func (l *tcpLink) dial(ctx context.Context) (net.Conn, error) {
	right := l.g.Right()
	inbox := l.t.nc.NewRespInbox()
	sub, err := l.t.nc.SubscribeSync(inbox)
	if err != nil {
		return nil, fmt.Errorf("tcp: ask rank %d for its address: %w", right, err)
	}
	defer sub.Unsubscribe()
	hello := ctlMsg{Kind: ctlHello, From: uint16(l.g.Rank), To: uint16(right), Job: l.job, Gen: l.g.Gen}.encode()
	retry := 5 * time.Millisecond
	var addr string
	for attempt := 1; addr == ""; attempt++ {
		if err := l.t.nc.PublishRequest(subject(l.g.Job, l.g.Gen, right, "addr"), inbox, hello); err != nil {
			return nil, fmt.Errorf("tcp: ask rank %d for its address: %w", right, err)
		}
		wctx, cancel := context.WithTimeout(ctx, 250*time.Millisecond)
		m, err := sub.NextMsgWithContext(wctx)
		cancel()
		switch {
		case ctx.Err() != nil:
			return nil, fmt.Errorf("tcp: rank %d did not say its address (%d tries): %w", right, attempt, ctx.Err())
		case err != nil:
			continue // lost: ask again
		case len(m.Data) == 0 && m.Header.Get("Status") == "503":
			// Not subscribed yet: it has not opened this generation.
			t := time.NewTimer(retry)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
			}
			retry = min(2*retry, 100*time.Millisecond)
			continue
		}
		c, err := decodeCtl(m.Data)
		if err == nil {
			err = c.expect(ctlAddr, l.job, l.g.Gen, right, l.g.Rank, 0)
		}
		if err != nil {
			l.t.dropped.Add(1)
			l.log.Debug("dropped address message", zap.Error(err))
			continue
		}
		addr = c.Addr
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("tcp: dial rank %d at %s: %w", right, addr, err)
	}
	stop := watch(ctx, c, true)
	_, err = c.Write(hello)
	stop()
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("tcp: hello to rank %d at %s: %w", right, addr, err)
	}
	return c, nil
}

func (l *tcpLink) Close() error {
	var err error
	l.closeOnce.Do(func() {
		close(l.closed)
		l.mu.Lock()
		l.isClosed = true
		conns := []net.Conn{l.pending, l.in, l.out}
		l.mu.Unlock()
		err = l.ln.Close()
		if uerr := l.sub.Unsubscribe(); uerr != nil && !errors.Is(uerr, nats.ErrConnectionClosed) {
			err = errors.Join(err, uerr)
		}
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
		l.wg.Wait()
	})
	return err
}

// interrupted reports whether err is I/O cut short by ctx (its deadline or its
// cancellation), leaving the connection usable.
func interrupted(ctx context.Context, err error) bool {
	return ctx.Err() != nil || errors.Is(err, os.ErrDeadlineExceeded)
}

// ctxErr is ctx's error, or DeadlineExceeded when the connection's deadline (set
// from ctx's) fired a moment before ctx's own timer.
func ctxErr(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return context.DeadlineExceeded
}
