package coordinator

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/png"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/nats-io/nats.go"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/crdgo/crdgo/natsd"
)

// testCluster is n coordinator servers (raft on InmemTransport) on one
// embedded NATS server, each with its own connection, HTTP on a free port.
type testCluster struct {
	t       *testing.T
	ns      *natsd.Server
	servers []*Server
	conns   []*nats.Conn
	spec    Spec
}

func startCluster(t *testing.T, n int, opts ...func(*Config)) *testCluster {
	t.Helper()
	ns, err := natsd.Start(natsd.DefaultConfig(), zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	tc := &testCluster{t: t, ns: ns, spec: testSpec()}
	tc.spec.MinNodes = 2
	var trans []*raft.InmemTransport
	var peers []Peer
	for i := range n {
		id := fmt.Sprintf("c%d", i)
		_, tr := raft.NewInmemTransportWithTimeout(raft.ServerAddress(id), time.Second)
		trans = append(trans, tr)
		peers = append(peers, Peer{ID: id, Addr: id})
	}
	for i, a := range trans {
		for j, b := range trans {
			if i != j {
				a.Connect(b.LocalAddr(), b)
			}
		}
	}
	for i := range n {
		cfg := DefaultConfig()
		cfg.Job = tc.spec.Job
		spec := tc.spec
		cfg.Spec = &spec
		cfg.Raft.ID, cfg.Raft.Bootstrap, cfg.Raft.Peers, cfg.Raft.transport = peers[i].ID, true, peers, trans[i]
		// Calmer than the defaults: on a loaded test machine 100 ms lets
		// elections churn, which these tests do not measure (raft_test.go does).
		cfg.Raft.HeartbeatTimeout, cfg.Raft.ElectionTimeout, cfg.Raft.LeaderLeaseTimeout = 300*time.Millisecond, 300*time.Millisecond, 150*time.Millisecond
		cfg.HTTPAddr = "127.0.0.1:0"
		cfg.NodeTimeout = 600 * time.Millisecond
		for _, o := range opts {
			o(&cfg)
		}
		nc, err := ns.Connect(nats.Name(cfg.Raft.ID))
		if err != nil {
			t.Fatal(err)
		}
		s, err := Start(cfg, nc, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)).With(zap.String("test", t.Name())))
		if err != nil {
			nc.Close()
			t.Fatal(err)
		}
		tc.servers = append(tc.servers, s)
		tc.conns = append(tc.conns, nc)
	}
	t.Cleanup(tc.close)
	tc.waitJob()
	return tc
}

func (tc *testCluster) close() {
	for i, s := range tc.servers {
		if s != nil {
			if err := s.Close(); err != nil {
				tc.t.Errorf("close %d: %v", i, err)
			}
			tc.conns[i].Close()
		}
	}
}

// waitJob waits until every running replica holds the job.
func (tc *testCluster) waitJob() {
	waitFor(tc.t, 10*time.Second, "the job on every replica", func() bool {
		for _, s := range tc.servers {
			if s != nil && s.rep.State().Spec == nil {
				return false
			}
		}
		return true
	})
}

func (tc *testCluster) leader() (int, *Server) {
	var li int
	var l *Server
	waitFor(tc.t, 10*time.Second, "a leader", func() bool {
		for i, s := range tc.servers {
			if s != nil && s.isLeader() && s.leading.Load() {
				li, l = i, s
				return true
			}
		}
		return false
	})
	return li, l
}

// kill stops replica i as a crash would look to the others.
func (tc *testCluster) kill(i int) {
	tc.servers[i].Close()
	tc.conns[i].Close()
	tc.servers[i] = nil
}

func (tc *testCluster) any() *Server {
	for _, s := range tc.servers {
		if s != nil {
			return s
		}
	}
	return nil
}

// client is a node's client on a connection of its own.
func (tc *testCluster) client(id string, mod ...func(*ClientConfig)) *Client {
	tc.t.Helper()
	nc, err := tc.ns.Connect(nats.Name(id))
	if err != nil {
		tc.t.Fatal(err)
	}
	tc.t.Cleanup(nc.Close)
	cfg := DefaultClientConfig()
	cfg.Job, cfg.Node, cfg.Host = tc.spec.Job, id, id+".local"
	cfg.Version, cfg.RecipeHash, cfg.DatasetHash = tc.spec.Version, tc.spec.RecipeHash, tc.spec.DatasetHash
	cfg.HeartbeatInterval = 100 * time.Millisecond
	for _, m := range mod {
		m(&cfg)
	}
	c, err := NewClient(nc, cfg, zaptest.NewLogger(tc.t, zaptest.Level(zap.WarnLevel)))
	if err != nil {
		tc.t.Fatal(err)
	}
	return c
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

// watch runs c.Watch in the background and collects its updates.
type watch struct {
	mu      sync.Mutex
	updates []Update
	done    chan error
	cancel  context.CancelFunc
}

func startWatch(t *testing.T, c *Client) *watch {
	w := &watch{done: make(chan error, 1)}
	wctx, cancel := context.WithCancel(context.Background())
	w.cancel = cancel
	go func() {
		w.done <- c.Watch(wctx, func(u Update) {
			w.mu.Lock()
			w.updates = append(w.updates, u)
			w.mu.Unlock()
		})
	}()
	t.Cleanup(func() { cancel(); <-w.done })
	return w
}

func (w *watch) stop() error {
	w.cancel()
	return <-w.done
}

// assignment waits for an assignment of generation gen.
func (w *watch) assignment(t *testing.T, gen uint64) Assignment {
	t.Helper()
	var a Assignment
	waitFor(t, 10*time.Second, fmt.Sprintf("an assignment of generation %d", gen), func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		for _, u := range w.updates {
			if u.Assignment != nil && u.Assignment.Gen == gen {
				a = *u.Assignment
				return true
			}
		}
		return false
	})
	return a
}

func (w *watch) committed() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.updates) == 0 {
		return 0
	}
	return w.updates[len(w.updates)-1].Committed
}

// report has each client report step of gen.
func report(t *testing.T, gen, step uint64, cs ...*Client) {
	t.Helper()
	for _, c := range cs {
		if err := c.Report(ctx(t), Report{Gen: gen, Step: step, Losses: map[string]float64{"G": 1 / float64(step)}, StepTime: 0.05, AllreduceTime: 0.01}); err != nil {
			t.Fatalf("%s: report gen %d step %d: %v", c.cfg.Node, gen, step, err)
		}
	}
}

func TestServerJoinReportCommit(t *testing.T) {
	tc := startCluster(t, 3)
	a, b := tc.client("a"), tc.client("b")
	ja, err := a.Join(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if ja.Assignment != nil || ja.Spec != tc.spec {
		t.Fatalf("first join: assignment %v spec %+v; want none (waiting for min_nodes 2) and the job's spec", ja.Assignment, ja.Spec)
	}
	wa := startWatch(t, a)
	jb, err := b.Join(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if jb.Assignment == nil || jb.Assignment.Gen != 1 || jb.Assignment.Rank != 1 || jb.Assignment.World != 2 {
		t.Fatalf("second join: assignment %+v; want rank 1 of 2 in generation 1", jb.Assignment)
	}
	wb := startWatch(t, b)
	asg := wa.assignment(t, 1)
	if asg.Rank != 0 || asg.Start != 1 || asg.Split[0] != (Range{0, 4}) || asg.Hosts[1] != "b.local" {
		t.Fatalf("a's assignment %+v; want rank 0 of [0,4) from step 1", asg)
	}
	for step := uint64(1); step <= 5; step++ {
		report(t, 1, step, a, b)
	}
	waitFor(t, 10*time.Second, "watchers at committed step 5", func() bool { return wa.committed() == 5 && wb.committed() == 5 })
	// Any replica answers status; a follower's view may trail the leader's
	// by a moment.
	seen := map[string]bool{}
	waitFor(t, 10*time.Second, "every replica answering status at step 5", func() bool {
		st, err := RequestStatus(ctx(t), tc.conns[0], tc.spec.Job, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if st.Committed == 5 && len(st.Members) == 2 && st.Leader != "" && len(st.Replicas) == 3 {
			seen[st.Replica] = true
		}
		return len(seen) == 3
	})
	// A stale generation is dropped, counted, and said so.
	if err := a.Report(ctx(t), Report{Gen: 0, Step: 6}); !errors.Is(err, ErrDropped) {
		t.Fatalf("report of generation 0: %v; want ErrDropped", err)
	}
	_, l := tc.leader()
	if got := l.rep.State().Dropped.Stale; got != 1 {
		t.Fatalf("dropped stale = %d; want 1", got)
	}
	if err := a.Leave(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if got := wb.assignment(t, 2); got.World != 1 || got.Start != 6 {
		t.Fatalf("after a left: %+v; want world 1 from step 6", got)
	}
}

func TestServerJoinRefusedNamesTheField(t *testing.T) {
	tc := startCluster(t, 1)
	for _, tt := range []struct {
		field string
		mod   func(*ClientConfig)
	}{
		{"crdgo_version", func(c *ClientConfig) { c.Version = "v0.9" }},
		{"recipe_hash", func(c *ClientConfig) { c.RecipeHash = "deadbeef" }},
		{"dataset_hash", func(c *ClientConfig) { c.DatasetHash = "cafe" }},
	} {
		_, err := tc.client("n-"+tt.field, tt.mod).Join(ctx(t))
		var ce *Error
		if !errors.As(err, &ce) || !errors.Is(err, ErrRejected) || ce.Field != tt.field || !strings.Contains(err.Error(), tt.field) {
			t.Errorf("join with a different %s: %v; want a rejection naming %s", tt.field, err, tt.field)
		}
	}
}

func TestServerTimesOutSilentNodes(t *testing.T) {
	tc := startCluster(t, 3)
	a, b, c := tc.client("a"), tc.client("b"), tc.client("c")
	for _, x := range []*Client{a, b, c} {
		if _, err := x.Join(ctx(t)); err != nil {
			t.Fatal(err)
		}
	}
	wa, wb := startWatch(t, a), startWatch(t, b) // c never heartbeats
	wa.assignment(t, 2)
	got := wb.assignment(t, 3)
	if got.World != 2 || got.Ring[0] != "a" || got.Ring[1] != "b" {
		t.Fatalf("after c's timeout: %+v; want a, b in generation 3", got)
	}
	_, l := tc.leader()
	if m, _ := l.rep.State().Member("c"); m.State != MemberLost {
		t.Fatalf("c is %s; want lost", m.State)
	}
	// c wakes up: it is no longer a member and must join again.
	if err := c.Watch(ctx(t), func(Update) {}); !errors.Is(err, ErrUnknownNode) {
		t.Fatalf("Watch of a lost node: %v; want ErrUnknownNode", err)
	}
}

// The leader dies mid-run: a new one takes over, the nodes' requests reach it,
// and the committed steps continue 1..n with no gap.
func TestServerLeaderFailover(t *testing.T) {
	tc := startCluster(t, 3)
	a, b := tc.client("a"), tc.client("b")
	for _, x := range []*Client{a, b} {
		if _, err := x.Join(ctx(t)); err != nil {
			t.Fatal(err)
		}
	}
	wa := startWatch(t, a)
	startWatch(t, b)
	wa.assignment(t, 1)
	for step := uint64(1); step <= 3; step++ {
		report(t, 1, step, a, b)
	}
	li, _ := tc.leader()
	killed := time.Now()
	tc.kill(li)
	for step := uint64(4); step <= 6; step++ {
		report(t, 1, step, a, b)
	}
	t.Logf("steps 4-6 committed %v after the leader was killed", time.Since(killed).Round(time.Millisecond))
	_, l := tc.leader()
	st := l.rep.State()
	if st.Committed != 6 || st.Gen.Gen != 1 {
		t.Fatalf("new leader: committed %d gen %d; want 6 in generation 1", st.Committed, st.Gen.Gen)
	}
	for i, p := range st.History {
		if p.Step != uint64(i+1) {
			t.Fatalf("history %v: position %d holds step %d", st.History, i, p.Step)
		}
	}
}

func TestServerDropsMalformedMessages(t *testing.T) {
	tc := startCluster(t, 1)
	nc := tc.conns[0]
	for _, tt := range []struct{ subject, body string }{
		{"ctl.report", `{"v":1,"report":{"node":"a","gen":1,"step":1,"losses":{"G":1e999}}}`},
		{"ctl.report", `{"v":2,"report":{"node":"a","gen":1,"step":1}}`},
		{"ctl.report", `{"v":1,"join":{"node":"a"}}`},
		{"ctl.stop", `{"v":1,"stop":{"reason":"x"}}`},
		{"ctl.report", `not json`},
		{"ctl.report", strings.Repeat(" ", MaxMessageBytes+1)},
	} {
		msg, err := nc.Request("crdgo."+tc.spec.Job+"."+tt.subject, []byte(tt.body), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		r, err := DecodeReply(msg.Data)
		if err != nil || r.Code != CodeInvalid {
			t.Errorf("%s %.60q: reply %+v (%v); want code invalid", tt.subject, tt.body, r, err)
		}
	}
	if got := tc.servers[0].metrics.malformedN.Load(); got != 6 {
		t.Errorf("malformed = %d; want 6", got)
	}
}

func get(t *testing.T, url string, hdr ...string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	return do(t, req, hdr...)
}

func do(t *testing.T, req *http.Request, hdr ...string) (int, string) {
	t.Helper()
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestServerHTTP(t *testing.T) {
	tc := startCluster(t, 3, func(c *Config) { c.HTTPToken = "t0ken" })
	a, b := tc.client("a"), tc.client("b")
	for _, x := range []*Client{a, b} {
		if _, err := x.Join(ctx(t)); err != nil {
			t.Fatal(err)
		}
	}
	report(t, 1, 1, a, b)
	fi := 0
	for i, s := range tc.servers {
		if !s.isLeader() {
			fi = i // a follower: /stop must be forwarded
		}
	}
	base := "http://" + tc.servers[fi].HTTPAddr()

	if code, body := get(t, base+"/healthz"); code != 200 || !strings.HasPrefix(body, "ok ") {
		t.Errorf("GET /healthz = %d %q; want 200 ok", code, body)
	}
	if code, body := get(t, base+"/"); code != 200 || !strings.Contains(body, `<canvas id="losses"`) {
		t.Errorf("GET / = %d; want the live page", code)
	}
	if code, body := get(t, base+"/app.js"); code != 200 || !strings.Contains(body, "status?history=") {
		t.Errorf("GET /app.js = %d; want the script", code)
	}
	waitFor(t, 10*time.Second, "step 1 on the follower", func() bool { return tc.servers[fi].rep.State().Committed == 1 })
	if code, body := get(t, base+"/status?history=10"); code != 200 || !strings.Contains(body, `"committed":1`) {
		t.Errorf("GET /status = %d %.200s; want committed 1", code, body)
	}
	if code, _ := get(t, base+"/status?history=-1"); code != 400 {
		t.Errorf("GET /status?history=-1 = %d; want 400", code)
	}
	code, body := get(t, base+"/metrics")
	for _, want := range []string{
		"crdgo_coordinator_committed_step 1", "crdgo_coordinator_generation 1", `crdgo_coordinator_members{state="active"} 2`,
		`crdgo_coordinator_dropped_messages_total{reason="stale"} 0`, "crdgo_coordinator_samples_per_second",
		`crdgo_coordinator_raft_leader `, `crdgo_coordinator_step_seconds_bucket{rank="0"`,
		`crdgo_coordinator_allreduce_seconds_count{rank="1"} 1`,
	} {
		if code != 200 || !strings.Contains(body, want) {
			t.Errorf("GET /metrics: no %q", want)
		}
	}
	if code, _ := get(t, base+"/samples/latest.png"); code != 404 {
		t.Errorf("GET /samples/latest.png before any = %d; want 404", code)
	}

	stop := func(token string) (int, string) {
		req, _ := http.NewRequest(http.MethodPost, base+"/stop", strings.NewReader(`{"reason":"test"}`))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		return do(t, req)
	}
	if code, _ := stop(""); code != 401 {
		t.Errorf("POST /stop without a token = %d; want 401", code)
	}
	if code, _ := stop("wrong"); code != 401 {
		t.Errorf("POST /stop with a wrong token = %d; want 401", code)
	}
	if code, body := stop("t0ken"); code != 200 {
		t.Fatalf("POST /stop with the token = %d %s; want 200", code, body)
	}
	waitFor(t, 10*time.Second, "the job failed on the follower", func() bool {
		st := tc.servers[fi].rep.State()
		return st.Status == Failed && strings.Contains(st.Reason, "test")
	})
}

func TestServerStopDisabledWithoutToken(t *testing.T) {
	tc := startCluster(t, 1)
	req, _ := http.NewRequest(http.MethodPost, "http://"+tc.servers[0].HTTPAddr()+"/stop", nil)
	req.Header.Set("Authorization", "Bearer ")
	if code, _ := do(t, req); code != 403 {
		t.Errorf("POST /stop on a coordinator without a token = %d; want 403", code)
	}
}

func TestServerSamples(t *testing.T) {
	tc := startCluster(t, 2)
	a := tc.client("a")
	img := image.NewRGBA(image.Rect(0, 0, 12, 4))
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	if err := a.PublishSample(7, []byte("not a png")); err != nil {
		t.Fatal(err)
	}
	if err := a.PublishSample(8, buf.Bytes()); err != nil {
		t.Fatal(err)
	}
	for _, s := range tc.servers {
		base := "http://" + s.HTTPAddr()
		waitFor(t, 10*time.Second, "the sample on "+s.rep.ID(), func() bool { return s.sample.Load() != nil })
		code, body := get(t, base+"/samples/latest.png")
		if code != 200 || body != buf.String() {
			t.Errorf("%s: GET /samples/latest.png = %d, %d bytes; want the PNG", s.rep.ID(), code, len(body))
		}
		if st := s.status(0); st.Sample == nil || st.Sample.Step != 8 || st.Sample.Node != "a" {
			t.Errorf("%s: status sample %+v; want step 8 from a", s.rep.ID(), st.Sample)
		}
	}
}
