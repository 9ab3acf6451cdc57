package allreduce

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/crdgo/crdgo/natsd"
	"github.com/nats-io/nats.go"
)

// Garbage and frames of another job published on a rank's data subject are
// dropped and counted; the operation is exact anyway.
func TestNATSDropsForeignAndMalformedFrames(t *testing.T) {
	s := startNATS(t, natsd.Config{})
	const world = 3
	conns := make([]*nats.Conn, world)
	ts := make([]Transport, world)
	for i := range ts {
		conns[i] = connectNATS(t, s.ClientURL())
		ts[i] = newNATSTransport(t, 4, conns[i])
	}
	rg := newRing(t, ts, testConfig(5*time.Second), 1)
	intruder := connectNATS(t, s.ClientURL())
	foreign := sampleHeader()
	foreign.Job, foreign.To, foreign.From, foreign.Gen = nameHash("other"), 1, 0, 1
	for _, b := range [][]byte{[]byte("garbage"), frameOf(foreign, 1, 2, 3)} {
		if err := intruder.Publish(subject("test", 1, 1, "0"), b); err != nil {
			t.Fatal(err)
		}
	}
	if err := intruder.Flush(); err != nil {
		t.Fatal(err)
	}
	inputs := randomInputs(rand.New(rand.NewPCG(11, 0)), world, 50)
	got := rg.sum(t, context.Background(), 1, inputs)
	checkSum(t, 11, NewPlan(world, 50, testConfig(0).chunkElems()), inputs, got)
	st := rg.reducers[1].Stats()
	if st.DroppedMalformed != 1 || st.DroppedForeign != 1 {
		t.Errorf("rank 1 stats %+v; want 1 malformed and 1 foreign frame dropped", st)
	}
}

// A link leaves no subscription behind, and Open refuses frames the server cannot
// carry.
func TestNATSLinkLifecycle(t *testing.T) {
	s := startNATS(t, natsd.Config{})
	nc := connectNATS(t, s.ClientURL())
	tr := newNATSTransport(t, 4, nc)
	g := Group{Job: "j", Gen: 1, Hosts: []string{"a", "b"}}
	before := nc.NumSubscriptions()
	l, err := tr.Open(context.Background(), g, 1024)
	if err != nil {
		t.Fatal(err)
	}
	if got := nc.NumSubscriptions(); got != before+3 {
		t.Errorf("subscriptions with a link open = %d; want %d", got, before+3)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if got := nc.NumSubscriptions(); got != before {
		t.Errorf("subscriptions after Close = %d; want %d", got, before)
	}
	if _, _, err := l.Recv(context.Background(), 0); err == nil {
		t.Error("Recv after Close succeeded")
	}
	_, err = tr.Open(context.Background(), g, int(nc.MaxPayload())+1)
	if err == nil || !strings.Contains(err.Error(), "max_payload") {
		t.Errorf("Open(frames beyond max_payload) err = %v; want one naming max_payload", err)
	}
}

// The server's pending limits are never reached: a sender that runs far ahead of
// a slow receiver is held by the credit window instead of overrunning it.
func TestNATSCreditWindowHoldsSender(t *testing.T) {
	s := startNATS(t, natsd.Config{})
	g := func(rank int) Group { return Group{Job: "j", Gen: 1, Rank: rank, Hosts: []string{"a", "b"}} }
	const window = 3
	send, err := newNATSTransport(t, window, connectNATS(t, s.ClientURL())).Open(context.Background(), g(0), 256)
	if err != nil {
		t.Fatal(err)
	}
	defer send.Close()
	recv, err := newNATSTransport(t, window, connectNATS(t, s.ClientURL())).Open(context.Background(), g(1), 256)
	if err != nil {
		t.Fatal(err)
	}
	defer recv.Close()
	hdr := make([]byte, HeaderSize)
	for i := range window {
		if err := send.Send(context.Background(), 0, hdr, nil); err != nil {
			t.Fatalf("frame %d within the window: %v", i, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	err = send.Send(ctx, 0, hdr, nil)
	cancel()
	if err == nil || !strings.Contains(err.Error(), "no credit") {
		t.Fatalf("frame beyond the window: err = %v; want it held for credit", err)
	}
	// Taking frames returns credit (every window/4 = 1 frame here).
	if _, _, err := recv.Recv(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := send.Send(ctx, 0, hdr, nil); err != nil {
		t.Fatalf("frame after credit returned: %v", err)
	}
}

// A connection whose hello is wrong is refused and counted; the link keeps
// working.
func TestTCPRefusesBadHello(t *testing.T) {
	s := startNATS(t, natsd.Config{})
	const world = 2
	trs := make([]*TCP, world)
	ts := make([]Transport, world)
	for i := range ts {
		tr, err := NewTCP(connectNATS(t, s.ClientURL()), DefaultTCPConfig(), testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		trs[i], ts[i] = tr, tr
	}
	rg := newRing(t, ts, testConfig(5*time.Second), 1)
	// Ask rank 1 for its address as rank 0 would, then connect as another job.
	nc := connectNATS(t, s.ClientURL())
	hello := ctlMsg{Kind: ctlHello, From: 0, To: 1, Job: nameHash("test"), Gen: 1}
	m, err := nc.Request(subject("test", 1, 1, "addr"), hello.encode(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	addr, err := decodeCtl(m.Data)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", addr.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	bad := hello
	bad.Job = nameHash("other")
	if _, err := c.Write(bad.encode()); err != nil {
		t.Fatal(err)
	}
	// The server closes a refused connection: our read ends.
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("refused connection still open")
	}
	if d := trs[1].Dropped(); d != 1 {
		t.Errorf("rank 1 TCP.Dropped() = %d; want 1", d)
	}
	inputs := randomInputs(rand.New(rand.NewPCG(12, 0)), world, 30)
	got := rg.sum(t, context.Background(), 1, inputs)
	checkSum(t, 12, NewPlan(world, 30, testConfig(0).chunkElems()), inputs, got)
}

func TestTCPLinkLeavesNoSubscription(t *testing.T) {
	s := startNATS(t, natsd.Config{})
	nc := connectNATS(t, s.ClientURL())
	tr, err := NewTCP(nc, DefaultTCPConfig(), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	before := nc.NumSubscriptions()
	l, err := tr.Open(context.Background(), Group{Job: "j", Gen: 1, Hosts: []string{"a", "b"}}, 1024)
	if err != nil {
		t.Fatal(err)
	}
	// A Send that finds no neighbour gives up at its deadline and cleans its inbox.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	err = l.Send(ctx, 0, make([]byte, HeaderSize), nil)
	cancel()
	if err == nil {
		t.Fatal("Send with no neighbour succeeded")
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if got := nc.NumSubscriptions(); got != before {
		t.Errorf("subscriptions after Close = %d; want %d", got, before)
	}
}

// Ranks that disagree on the number of lanes fail with a timeout, and the receiver
// says why in its log and counters.
func TestNATSLanesMismatch(t *testing.T) {
	s := startNATS(t, natsd.Config{})
	two := newNATSTransport(t, 4, connectNATS(t, s.ClientURL()), connectNATS(t, s.ClientURL()))
	one := newNATSTransport(t, 4, connectNATS(t, s.ClientURL()))
	rg := newRing(t, []Transport{two, one}, testConfig(300*time.Millisecond), 1)
	errs := rg.run(func(i int, r *Reducer) error { return r.SumInPlace(context.Background(), 1, "G", make([]float32, 10)) })
	for i, err := range errs {
		if !errors.Is(err, ErrPeerTimeout) {
			t.Errorf("rank %d: err = %v; want ErrPeerTimeout", i, err)
		}
	}
	if one.Dropped() == 0 {
		t.Error("rank 1 (one lane) dropped no hello from rank 0 (two lanes)")
	}
}

// A frame crosses NATS with its header in a NATS header of fixed length, so the
// payload lands 8-aligned in the receiving client's buffer.
func TestNATSFrameHeader(t *testing.T) {
	h := nats.Header{hdrKey: {strings.Repeat("A", 86)}, padKey: {hdrPad}}
	if got := natsHeaderLen(h); got != natsHdrLen || got%8 != 0 {
		t.Fatalf("NATS header block = %d bytes; want %d, a multiple of 8", got, natsHdrLen)
	}
	s := startNATS(t, natsd.Config{})
	g := func(rank int) Group { return Group{Job: "j", Gen: 1, Rank: rank, Hosts: []string{"a", "b"}} }
	send, err := newNATSTransport(t, 2, connectNATS(t, s.ClientURL())).Open(context.Background(), g(0), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer send.Close()
	recv, err := newNATSTransport(t, 2, connectNATS(t, s.ClientURL())).Open(context.Background(), g(1), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer recv.Close()
	want := sampleHeader()
	want.Count, want.Total = 1<<17, 1<<20
	payload := make([]float32, want.Count)
	payload[7] = 42
	frame := frameOf(want, payload...)
	if err := send.Send(context.Background(), 0, frame[:HeaderSize], frame[HeaderSize:]); err != nil {
		t.Fatal(err)
	}
	hdr, got, err := recv.Recv(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	gotH, err := ParseHeader(hdr)
	if err != nil || gotH != want {
		t.Fatalf("header = %+v, %v; want %+v", gotH, err, want)
	}
	f, ok := float32View(got)
	if !ok || len(f) != len(payload) || f[7] != 42 {
		t.Fatalf("payload of %d bytes: aligned view %v, len %d; want %d floats with [7] = 42", len(got), ok, len(f), len(payload))
	}
}
