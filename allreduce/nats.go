package allreduce

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"
)

// NATSConfig configures the NATS transport.
type NATSConfig struct {
	// Window is the number of frames a lane may have in flight: sent and not yet
	// taken by the receiver. It bounds what a subscriber and the server hold for
	// one lane to Window frames, far below the server's max_pending (64 MiB by
	// default), so no consumer is overrun and no chunk dropped.
	Window int
}

// DefaultNATSConfig returns the defaults: a window of 8 frames.
func DefaultNATSConfig() NATSConfig { return NATSConfig{Window: 8} }

// Validate reports every problem of c at once.
func (c NATSConfig) Validate() error {
	if c.Window < 1 || c.Window > 1<<16 {
		return fmt.Errorf("allreduce.nats.window: must be 1..%d, got %d", 1<<16, c.Window)
	}
	return nil
}

// MaxLanes bounds the connections one NATS transport stripes a link over.
const MaxLanes = 64

// NATS is the Transport over core NATS. Rank r receives its chunks on
// crdgo.<job>.ar.<gen>.<r>.<lane>, one lane per connection the transport was
// given: a server reads each client connection on one goroutine, and so does the
// client library, so one connection caps a link at what one core copies; lanes
// spread a link over several.
//
// Core NATS is at-most-once, so nothing is assumed about delivery: on each lane a
// sender first says hello to its right neighbour and gets its initial credit in
// reply (so no chunk is published before the receiver subscribed), then sends a
// frame only while it holds credit, and the receiver returns credit as it takes
// frames. The connections are the caller's; NATS never closes them.
type NATS struct {
	conns []*nats.Conn
	cfg   NATSConfig
	log   *zap.Logger

	dropped atomic.Uint64 // control messages rejected, by every link
}

// NewNATS returns the NATS transport with one lane per connection in conns. Every
// rank of a group must have the same number of lanes.
func NewNATS(conns []*nats.Conn, cfg NATSConfig, log *zap.Logger) (*NATS, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if len(conns) < 1 || len(conns) > MaxLanes {
		return nil, fmt.Errorf("allreduce.nats: %d connections, want 1..%d", len(conns), MaxLanes)
	}
	return &NATS{conns: conns, cfg: cfg, log: log}, nil
}

// Dropped is the number of control messages (hello, grant) rejected as malformed or
// misaddressed.
func (t *NATS) Dropped() uint64 { return t.dropped.Load() }

// Open implements Transport: it subscribes to each lane's data, credit and hello
// subjects and waits until the server has them.
func (t *NATS) Open(ctx context.Context, g Group, frameBytes int) (Link, error) {
	if err := g.Validate(); err != nil {
		return nil, err
	}
	l := &natsLink{}
	for i, nc := range t.conns {
		ln, err := t.openLane(ctx, g, i, nc, frameBytes)
		if err != nil {
			l.Close()
			return nil, err
		}
		l.lanes = append(l.lanes, ln)
	}
	return l, nil
}

func (t *NATS) openLane(ctx context.Context, g Group, lane int, nc *nats.Conn, frameBytes int) (*natsLane, error) {
	if mp := nc.MaxPayload(); int64(frameBytes) > mp {
		return nil, fmt.Errorf("nats: frames of %d bytes (chunk_bytes + %d header) exceed the server's max_payload of %d bytes", frameBytes, HeaderSize, mp)
	}
	ls := strconv.Itoa(lane)
	l := &natsLane{
		t: t, nc: nc, g: g, lane: lane, lanes: len(t.conns), job: nameHash(g.Job), window: uint64(t.cfg.Window),
		batch:     uint64(max(1, t.cfg.Window/4)),
		dataOut:   subject(g.Job, g.Gen, g.Right(), ls),
		helloOut:  subject(g.Job, g.Gen, g.Right(), ls+".hello"),
		creditIn:  subject(g.Job, g.Gen, g.Rank, ls+".credit"),
		creditOut: subject(g.Job, g.Gen, g.Left(), ls+".credit"),
		grantCh:   make(chan struct{}, 1),
		noResp:    make(chan struct{}, 1),
		closed:    make(chan struct{}),
	}
	var err error
	// The data subscription comes first: a server that knows the hello interest
	// (which the sender waits for) then knows the data interest too.
	if l.data, err = nc.SubscribeSync(subject(g.Job, g.Gen, g.Rank, ls)); err != nil {
		return nil, fmt.Errorf("nats: subscribe: %w", err)
	}
	// Two windows of frames, each with its NATS header block, plus room for
	// strayFrames foreign or malformed messages (dropped when read): a
	// stranger publishing to our subject must not push a real frame out.
	limit := 2*t.cfg.Window + strayFrames
	if err = l.data.SetPendingLimits(limit, limit*(frameBytes+natsHdrLen)); err == nil {
		l.credit, err = nc.Subscribe(l.creditIn, l.onCredit)
	}
	if err == nil {
		l.hello, err = nc.Subscribe(subject(g.Job, g.Gen, g.Rank, ls+".hello"), l.onHello)
	}
	if err == nil {
		err = flush(ctx, nc)
	}
	if err != nil {
		l.close()
		return nil, fmt.Errorf("nats: open lane %d of rank %d gen %d: %w", lane, g.Rank, g.Gen, err)
	}
	return l, nil
}

// natsLink is a rank's lanes of one generation.
type natsLink struct {
	lanes     []*natsLane
	closeOnce sync.Once
	closeErr  error
}

func (l *natsLink) Lanes() int { return len(l.lanes) }

func (l *natsLink) Send(ctx context.Context, lane int, hdr, payload []byte) error {
	return l.lanes[lane].send(ctx, hdr, payload)
}

func (l *natsLink) Recv(ctx context.Context, lane int) (hdr, payload []byte, err error) {
	return l.lanes[lane].recv(ctx)
}

func (l *natsLink) Close() error {
	l.closeOnce.Do(func() {
		var errs []error
		for _, ln := range l.lanes {
			errs = append(errs, ln.close())
		}
		l.closeErr = errors.Join(errs...)
	})
	return l.closeErr
}

// closeFlushTimeout bounds the flush of a closing lane.
const closeFlushTimeout = time.Second

// natsLane is one lane of a link: a data subscription for the frames from the
// left neighbour, credit and hello subscriptions for the frames to the right one.
type natsLane struct {
	t      *NATS
	nc     *nats.Conn
	g      Group
	lane   int
	lanes  int
	job    uint64
	window uint64
	batch  uint64 // grants are sent every batch frames taken

	dataOut, helloOut, creditIn, creditOut string
	data, credit, hello                    *nats.Subscription

	// Send side (the Send goroutine only, except granted).
	opened  bool
	sent    uint64
	granted atomic.Uint64 // credit from the right neighbour: frames we may have sent in all
	grantCh chan struct{} // a grant arrived
	noResp  chan struct{} // a hello found no one subscribed yet

	// Recv side (the Recv goroutine only, except taken).
	taken    atomic.Uint64    // frames taken from the left neighbour
	credited uint64           // taken as of the last grant we sent
	hdr      [HeaderSize]byte // the decoded header of the last frame

	closed chan struct{}
}

func (l *natsLane) ctl(kind ctlKind, to int, value uint64) ctlMsg {
	return ctlMsg{Kind: kind, From: uint16(l.g.Rank), To: uint16(to), Lane: uint16(l.lane), Job: l.job, Gen: l.g.Gen, Value: value}
}

// onCredit takes grants from the right neighbour, and the server's "no responders"
// status when a hello went nowhere. It runs on the subscription's goroutine.
func (l *natsLane) onCredit(m *nats.Msg) {
	if len(m.Data) == 0 && m.Header.Get("Status") == "503" {
		signal(l.noResp)
		return
	}
	c, err := decodeCtl(m.Data)
	if err == nil {
		err = c.expect(ctlGrant, l.job, l.g.Gen, l.g.Right(), l.g.Rank, l.lane)
	}
	if err != nil {
		l.t.dropped.Add(1)
		l.t.log.Debug("dropped control message", zap.String("subject", m.Subject), zap.Error(err))
		return
	}
	for {
		old := l.granted.Load()
		if c.Value <= old || l.granted.CompareAndSwap(old, c.Value) {
			break
		}
	}
	signal(l.grantCh)
}

// onHello answers the left neighbour's hello with the credit it holds.
func (l *natsLane) onHello(m *nats.Msg) {
	c, err := decodeCtl(m.Data)
	if err == nil {
		err = c.expect(ctlHello, l.job, l.g.Gen, l.g.Left(), l.g.Rank, l.lane)
	}
	if err == nil && c.Value != uint64(l.lanes) {
		// Frames would go to lanes nobody reads: leave the sender without credit
		// (it fails with a timeout) and say why here.
		l.t.log.Warn("hello from a rank with another number of lanes", zap.Int("from", l.g.Left()),
			zap.Uint64("its_lanes", c.Value), zap.Int("our_lanes", l.lanes))
		l.t.dropped.Add(1)
		return
	}
	if err != nil || m.Reply == "" {
		l.t.dropped.Add(1)
		l.t.log.Debug("dropped hello", zap.String("subject", m.Subject), zap.Error(err))
		return
	}
	if err := m.Respond(l.ctl(ctlGrant, l.g.Left(), l.taken.Load()+l.window).encode()); err != nil {
		l.t.log.Warn("answering hello", zap.Int("from", l.g.Left()), zap.Error(err))
	}
}

// signal wakes the waiter of ch, if any, without blocking.
func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// open says hello to the right neighbour until it answers with credit.
func (l *natsLane) open(ctx context.Context) error {
	hello := l.ctl(ctlHello, l.g.Right(), uint64(l.lanes)).encode()
	retry := 5 * time.Millisecond
	for attempt := 0; l.granted.Load() == 0; attempt++ {
		if err := l.nc.PublishRequest(l.helloOut, l.creditIn, hello); err != nil {
			return fmt.Errorf("nats: hello on lane %d: %w", l.lane, err)
		}
		t := time.NewTimer(250 * time.Millisecond) // a hello or its answer lost: ask again
		select {
		case <-l.grantCh:
		case <-l.noResp:
			// Not subscribed yet: it has not opened this generation. Ask again soon.
			t.Reset(retry)
			retry = min(2*retry, 100*time.Millisecond)
			select {
			case <-t.C:
			case <-ctx.Done():
			}
		case <-t.C:
		case <-ctx.Done():
		case <-l.closed:
			t.Stop()
			return ErrClosed
		}
		t.Stop()
		if l.granted.Load() > 0 {
			break
		}
		if ctx.Err() != nil {
			return fmt.Errorf("nats: rank %d did not answer hello on lane %d (%d tries): %w", l.g.Right(), l.lane, attempt+1, ctx.Err())
		}
	}
	l.opened = true
	return nil
}

func (l *natsLane) send(ctx context.Context, hdr, payload []byte) error {
	if !l.opened {
		if err := l.open(ctx); err != nil {
			return err
		}
	}
	for l.sent >= l.granted.Load() {
		select {
		case <-l.grantCh:
		case <-l.closed:
			return ErrClosed
		case <-ctx.Done():
			return fmt.Errorf("nats: no credit on lane %d (window of %d frames full): %w", l.lane, l.window, ctx.Err())
		}
	}
	// The frame header rides in a NATS header, so the client copies the payload
	// once, straight from the caller's buffer, instead of after a concatenation.
	m := &nats.Msg{Subject: l.dataOut, Data: payload, Header: nats.Header{
		hdrKey: {base64.RawStdEncoding.EncodeToString(hdr)},
		padKey: {hdrPad},
	}}
	if err := l.nc.PublishMsg(m); err != nil {
		return fmt.Errorf("nats: publish on lane %d: %w", l.lane, err)
	}
	l.sent++
	return nil
}

// The NATS header of a data message: hdrKey carries the frame header in base64;
// padKey pads the header block to natsHdrLen, a multiple of 8, so the payload
// that follows it in the receiving client's buffer stays aligned for the float32
// view. natsHeaderLen is the block's length as nats.go writes it.
const (
	hdrKey     = "Crar-Hdr"
	padKey     = "Crar-Pad"
	hdrPad     = "000000"
	natsHdrLen = 128
	// strayFrames is the pending-limit slack for messages that are not ours.
	strayFrames = 16
)

func natsHeaderLen(h nats.Header) int {
	n := len("NATS/1.0\r\n") + len("\r\n")
	for k, vs := range h {
		for _, v := range vs {
			n += len(k) + len(": ") + len(v) + len("\r\n")
		}
	}
	return n
}

func (l *natsLane) recv(ctx context.Context) (hdr, payload []byte, err error) {
	m, err := l.data.NextMsgWithContext(ctx)
	switch {
	case errors.Is(err, nats.ErrSlowConsumer):
		return nil, nil, fmt.Errorf("nats: lane %d: %w: subscription dropped frames (slow consumer): %w", l.lane, ErrChunkLost, err)
	case errors.Is(err, nats.ErrBadSubscription), errors.Is(err, nats.ErrConnectionClosed):
		return nil, nil, fmt.Errorf("nats: lane %d: %w: %w", l.lane, ErrClosed, err)
	case err != nil:
		return nil, nil, fmt.Errorf("nats: lane %d: %w", l.lane, err)
	}
	taken := l.taken.Add(1)
	if taken-l.credited >= l.batch {
		if err := l.nc.Publish(l.creditOut, l.ctl(ctlGrant, l.g.Left(), taken+l.window).encode()); err != nil {
			return nil, nil, fmt.Errorf("nats: grant credit on lane %d: %w", l.lane, err)
		}
		l.credited = taken
	}
	enc := m.Header.Get(hdrKey)
	if enc == "" {
		// Not ours: whatever it is goes to the frame decoder, which drops it.
		hdr, payload = splitFrame(m.Data)
		return hdr, payload, nil
	}
	if len(enc) != base64.RawStdEncoding.EncodedLen(HeaderSize) {
		return nil, m.Data, nil // no frame header: malformed, dropped
	}
	if _, err := base64.RawStdEncoding.Decode(l.hdr[:], []byte(enc)); err != nil {
		return nil, m.Data, nil
	}
	return l.hdr[:], m.Data, nil
}

// close flushes what the lane published to the server (a process that closes
// right after its last operation would lose it) and drops the subscriptions.
func (l *natsLane) close() error {
	close(l.closed)
	var errs []error
	ctx, cancel := context.WithTimeout(context.Background(), closeFlushTimeout)
	if err := l.nc.FlushWithContext(ctx); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		errs = append(errs, fmt.Errorf("nats: flush lane %d on close: %w", l.lane, err))
	}
	cancel()
	for _, s := range []*nats.Subscription{l.data, l.credit, l.hello} {
		if s == nil {
			continue
		}
		if err := s.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) && !errors.Is(err, nats.ErrBadSubscription) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
