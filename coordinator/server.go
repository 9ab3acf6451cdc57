package coordinator

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"
)

// The server carries out what the FSM decides, on the NATS control subjects
// and over HTTP. Every replica runs one. Subjects, all under crdgo.<job>.:
//
//	ctl.<kind>          requests from nodes and operators (queue group: one replica
//	                    answers). status is answered from the local state; join,
//	                    leave, report, commit_checkpoint and heartbeat go to the
//	                    leader: a follower forwards them to peer.<leader id>.<kind>
//	                    and relays the reply.
//	peer.<id>.<kind>    requests for replica <id> only: forwarded writes, stop and
//	                    add_voter. Never forwarded again.
//	node.<id>           the leader's assignments for one node (Event.Assignment).
//	events              the leader's job events: committed steps, checkpoints,
//	                    done, failed.
//	samples             sample grids (PNG) nodes publish; every replica keeps the
//	                    newest for its live page.
//
// Core NATS delivers at most once: events are a fast path only. A node's
// heartbeat reply carries its current assignment and the committed step, so a
// lost event costs one heartbeat interval.

// Config configures a Server.
type Config struct {
	// Job names the job: the subjects' prefix. It must equal Spec.Job when a
	// spec is given.
	Job string
	// Spec, when set, is the job this replica creates when it leads a group
	// that has none. A replica whose spec differs from the group's stops with
	// an error. Replicas that join an existing group may leave it nil.
	Spec *Spec
	// Raft configures the replica.
	Raft RaftConfig
	// JoinRaft makes a replica that does not bootstrap ask the group to add it
	// (add_voter on crdgo.<job>.ctl.add_voter, answered by the leader) until
	// one does.
	JoinRaft bool
	// NodeTimeout is how long the leader waits to hear from a node (heartbeat
	// or any request) before it proposes HeartbeatTimeout.
	NodeTimeout time.Duration
	// RequestTimeout bounds one request's handling: a forward to the leader,
	// a raft proposal.
	RequestTimeout time.Duration
	// HTTPAddr is where /healthz, /status, /metrics and the live page listen;
	// empty: no HTTP. Use 127.0.0.1 unless the port is protected otherwise.
	HTTPAddr string
	// HTTPToken is the bearer token state-changing endpoints (POST /stop)
	// require; empty: they are disabled (403).
	HTTPToken string
	// MaxSampleBytes bounds a sample grid PNG.
	MaxSampleBytes int
	// Concurrency bounds the requests handled at once.
	Concurrency int
}

// DefaultConfig returns a config with the defaults; Job, Raft.ID and the
// addresses are the caller's.
func DefaultConfig() Config {
	return Config{
		Raft:           DefaultRaftConfig(),
		NodeTimeout:    3 * time.Second,
		RequestTimeout: 5 * time.Second,
		HTTPAddr:       "127.0.0.1:8480",
		MaxSampleBytes: 4 << 20,
		Concurrency:    64,
	}
}

// Validate reports every problem of c at once, naming the field.
func (c Config) Validate() error {
	var errs []error
	if !validName(c.Job, 64) {
		errs = append(errs, fmt.Errorf("coordinator.job %q: want 1-64 letters, digits, '-' or '_'", c.Job))
	}
	if c.Spec != nil {
		if err := c.Spec.Validate(); err != nil {
			errs = append(errs, err)
		} else if c.Spec.Job != c.Job {
			errs = append(errs, fmt.Errorf("coordinator.spec.job %q differs from coordinator.job %q", c.Spec.Job, c.Job))
		}
	}
	if err := c.Raft.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.NodeTimeout < 100*time.Millisecond {
		errs = append(errs, fmt.Errorf("coordinator.node_timeout: %v, want >= 100ms", c.NodeTimeout))
	}
	if c.RequestTimeout < 10*time.Millisecond {
		errs = append(errs, fmt.Errorf("coordinator.request_timeout: %v, want >= 10ms", c.RequestTimeout))
	}
	if c.HTTPAddr != "" {
		if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
			errs = append(errs, fmt.Errorf("coordinator.http_addr %q: want host:port", c.HTTPAddr))
		}
	}
	if c.MaxSampleBytes < 1<<10 || c.MaxSampleBytes > 64<<20 {
		errs = append(errs, fmt.Errorf("coordinator.max_sample_bytes: %d, want 1 KiB..64 MiB", c.MaxSampleBytes))
	}
	if c.Concurrency < 1 {
		errs = append(errs, fmt.Errorf("coordinator.concurrency: %d, want >= 1", c.Concurrency))
	}
	return errors.Join(errs...)
}

// Subjects of a job.
func ctlSubject(job, kind string) string      { return "crdgo." + job + ".ctl." + kind }
func peerSubject(job, id, kind string) string { return "crdgo." + job + ".peer." + id + "." + kind }
func nodeSubject(job, id string) string       { return "crdgo." + job + ".node." + id }
func eventsSubject(job string) string         { return "crdgo." + job + ".events" }
func samplesSubject(job string) string        { return "crdgo." + job + ".samples" }
func ctlQueue(job string) string              { return "crdgo-" + job + "-coordinators" }

// kindOf is a subject's last token: the request's kind.
func kindOf(subject string) string { return subject[strings.LastIndexByte(subject, '.')+1:] }

// publicKind: the requests anyone may send on ctl.<kind>. Timeouts, job
// creation and stop come from replicas (peer.<id>.<kind>) only.
func publicKind(kind string) bool {
	switch kind {
	case "join", "leave", "report", "commit_checkpoint", "heartbeat", "status", "add_voter":
		return true
	}
	return false
}

func errReply(code Code, err error) Reply {
	return Reply{V: ProtocolVersion, Code: code, Error: trim(err.Error())}
}

func trim(s string) string { return s[:min(len(s), 4*maxField)] }

func (s *Server) ctlPrefix() string  { return "crdgo." + s.cfg.Job + ".ctl." }
func (s *Server) peerPrefix() string { return "crdgo." + s.cfg.Job + ".peer." + s.rep.ID() + "." }
func (s *Server) isLeader() bool     { return s.rep.IsLeader() }

func (s *Server) samplesPerSecond(st State) float64 {
	if st.Spec == nil || st.Status != Running {
		return 0
	}
	return s.rate.perSecond(time.Now()) * float64(st.Spec.GlobalBatch)
}

// Server is one coordinator replica's server: raft, the control subjects,
// node liveness, event publishing and HTTP. Start it with Start; Close stops
// it and waits for its goroutines.
type Server struct {
	cfg     Config
	nc      *nats.Conn
	log     *zap.Logger
	rep     *Replica
	metrics *metrics
	rate    rate

	events chan event
	sem    chan struct{}
	subs   []*nats.Subscription
	http   *http.Server
	ln     net.Listener

	fatal     chan error
	fatalOnce sync.Once

	live    liveness
	leading atomic.Bool // set by tickLoop; read by onApply

	sample atomic.Pointer[sample]

	stop    chan struct{}
	mu      sync.Mutex // guards closing against wg.Add in onRequest
	closing bool
	wg      sync.WaitGroup
}

// event is one message the leader publishes.
type event struct {
	subject string
	data    []byte
}

// Start opens the raft replica, subscribes to the job's subjects on nc and
// serves HTTP. nc stays the caller's: Close does not close it.
func Start(cfg Config, nc *nats.Conn, log *zap.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log = log.With(zap.String("job", cfg.Job), zap.String("replica", cfg.Raft.ID))
	s := &Server{
		cfg: cfg, nc: nc, log: log,
		events: make(chan event, 4096),
		sem:    make(chan struct{}, cfg.Concurrency),
		fatal:  make(chan error, 1),
		stop:   make(chan struct{}),
		rate:   rate{window: RateWindow},
		live:   liveness{seen: map[string]time.Time{}},
	}
	s.metrics = newMetrics(s)
	rep, err := OpenReplica(cfg.Raft, s.onApply, log)
	if err != nil {
		return nil, err
	}
	s.rep = rep
	if err := s.subscribe(); err != nil {
		s.Close()
		return nil, err
	}
	if cfg.HTTPAddr != "" {
		if err := s.serveHTTP(); err != nil {
			s.Close()
			return nil, err
		}
	}
	s.wg.Add(2)
	go s.publishLoop()
	go s.tickLoop()
	if cfg.JoinRaft && !cfg.Raft.Bootstrap {
		s.wg.Add(1)
		go s.joinRaft()
	}
	log.Info("coordinator started", zap.String("raft_addr", rep.Addr()), zap.String("http", s.HTTPAddr()), zap.String("nats", nc.ConnectedUrlRedacted()))
	return s, nil
}

// Replica is the server's raft replica.
func (s *Server) Replica() *Replica { return s.rep }

// HTTPAddr is the address HTTP listens on, "" without HTTP.
func (s *Server) HTTPAddr() string {
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// Fatal delivers an error that stops this replica from serving the job (its
// spec conflicts with the group's). The caller should Close the server.
func (s *Server) Fatal() <-chan error { return s.fatal }

func (s *Server) fail(err error) {
	s.fatalOnce.Do(func() {
		s.log.Error("coordinator cannot serve this job", zap.Error(err))
		s.fatal <- err
	})
}

// Close stops HTTP, unsubscribes, stops raft and returns once every goroutine
// of the server has.
func (s *Server) Close() error {
	select {
	case <-s.stop:
		return nil
	default:
	}
	close(s.stop)
	s.mu.Lock()
	s.closing = true // no request starts after this; wg.Wait below sees them all
	s.mu.Unlock()
	var errs []error
	if s.http != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		errs = append(errs, s.http.Shutdown(ctx))
		cancel()
	}
	for _, sub := range s.subs {
		// Drain lets handlers already running finish; they may still reply.
		if err := sub.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
			errs = append(errs, err)
		}
	}
	s.wg.Wait()
	if s.rep != nil {
		errs = append(errs, s.rep.Shutdown())
	}
	s.log.Info("coordinator stopped")
	return errors.Join(errs...)
}

func (s *Server) subscribe() error {
	type sub struct {
		subject, queue string
		handler        nats.MsgHandler
	}
	subs := []sub{
		{s.ctlPrefix() + "*", ctlQueue(s.cfg.Job), s.onRequest},
		{s.peerPrefix() + "*", "", s.onRequest},
		{samplesSubject(s.cfg.Job), "", s.onSample},
	}
	for _, x := range subs {
		var ns *nats.Subscription
		var err error
		if x.queue != "" {
			ns, err = s.nc.QueueSubscribe(x.subject, x.queue, x.handler)
		} else {
			ns, err = s.nc.Subscribe(x.subject, x.handler)
		}
		if err != nil {
			return fmt.Errorf("coordinator: subscribe %s: %w", x.subject, err)
		}
		// Bounded: beyond this NATS drops and counts (slow consumer) rather
		// than buffering without end.
		if err := ns.SetPendingLimits(4096, 64<<20); err != nil {
			return err
		}
		s.subs = append(s.subs, ns)
	}
	if err := s.nc.Flush(); err != nil {
		return fmt.Errorf("coordinator: subscribe: %w", err)
	}
	return nil
}

// onRequest runs on the subscription's goroutine: it takes a slot and hands
// the request to a goroutine of its own, so a slow proposal does not hold up
// the others. With every slot taken it waits: back pressure on NATS, whose
// pending limits then drop and count.
func (s *Server) onRequest(m *nats.Msg) {
	select {
	case s.sem <- struct{}{}:
	case <-s.stop:
		return
	}
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		<-s.sem
		return
	}
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		defer func() { <-s.sem }()
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.RequestTimeout)
		defer cancel()
		kind := kindOf(m.Subject)
		peer := strings.HasPrefix(m.Subject, s.peerPrefix())
		out := s.handle(ctx, kind, m.Data, peer)
		s.metrics.requests.WithLabelValues(kind, string(codeOf(out))).Inc()
		if m.Reply != "" {
			if err := m.Respond(out); err != nil {
				s.log.Debug("reply not sent", zap.String("kind", kind), zap.Error(err))
			}
		}
	}()
}

func codeOf(b []byte) Code {
	r, err := DecodeReply(b)
	if err != nil {
		return "status"
	}
	return r.Code
}

// handle answers one request: status locally, everything else on the leader
// (forwarded there unless this is a peer request).
func (s *Server) handle(ctx context.Context, kind string, data []byte, peer bool) []byte {
	reply := func(r Reply) []byte {
		b, err := Encode(r)
		if err != nil {
			b, _ = Encode(errReply(CodeInternal, err))
		}
		return b
	}
	m, err := Decode(data)
	if err == nil && m.Kind() != kind {
		err = fmt.Errorf("%w: subject kind %q, message holds %q", ErrInvalid, kind, m.Kind())
	}
	if err == nil && !peer && !publicKind(kind) {
		err = fmt.Errorf("%w: %q is not a control request", ErrInvalid, kind)
	}
	if err != nil {
		s.metrics.malformedInc()
		s.log.Debug("malformed control message dropped", zap.String("kind", kind), zap.Int("bytes", len(data)), zap.Error(err))
		return reply(errReply(CodeInvalid, err))
	}
	if kind == "status" {
		b, err := s.statusJSON(200, MaxStatusBytes)
		if err != nil {
			return reply(errReply(CodeInternal, err))
		}
		return b
	}
	if !s.isLeader() {
		if peer {
			return reply(Reply{V: ProtocolVersion, Code: CodeNoLeader, Error: fmt.Sprintf("replica %s is not the leader", s.rep.ID())})
		}
		return s.forward(ctx, kind, data)
	}
	return reply(s.lead(ctx, m))
}

// forward relays a request to the leader's peer subject.
func (s *Server) forward(ctx context.Context, kind string, data []byte) []byte {
	id, _ := s.rep.Leader()
	if id == "" {
		b, _ := Encode(Reply{V: ProtocolVersion, Code: CodeNoLeader, Error: "no raft leader: retry"})
		return b
	}
	s.metrics.forwarded.Inc()
	msg, err := s.nc.RequestWithContext(ctx, peerSubject(s.cfg.Job, id, kind), data)
	if err != nil {
		b, _ := Encode(Reply{V: ProtocolVersion, Code: CodeNoLeader, Error: trim(fmt.Sprintf("forward to leader %s: %v", id, err))})
		return b
	}
	return msg.Data
}

// lead handles a request on the leader.
func (s *Server) lead(ctx context.Context, m Message) Reply {
	switch {
	case m.Heartbeat != nil:
		h := m.Heartbeat
		st := s.rep.State()
		mem, ok := st.Member(h.Node)
		if !ok || !mem.State.live() || mem.Incarnation != h.Incarnation {
			return Reply{V: ProtocolVersion, Code: CodeUnknown, Error: fmt.Sprintf("node %s (incarnation %s) is not a live member: join again", h.Node, h.Incarnation)}
		}
		s.live.saw(h.Node)
		r := s.okFor(h.Node, st)
		r.Spec = nil
		return r
	case m.AddVoter != nil:
		if err := s.rep.AddVoter(ctx, m.AddVoter.ID, m.AddVoter.Addr); err != nil {
			return errReply(CodeInternal, err)
		}
		s.log.Info("replica added", zap.String("id", m.AddVoter.ID), zap.String("addr", m.AddVoter.Addr))
		return Reply{V: ProtocolVersion, Code: CodeOK}
	}
	c := m.Command()
	node := ""
	switch c := c.(type) {
	case Join:
		node = c.Node
	case Leave:
		node = c.Node
	case Report:
		node = c.Node
	case CommitCheckpoint:
		node = c.Node
	}
	if node != "" {
		s.live.saw(node)
	}
	eff, err := s.rep.Apply(ctx, c)
	if errors.Is(err, ErrNotLeader) {
		return errReply(CodeNoLeader, err)
	}
	if err != nil {
		return errReply(CodeInternal, err)
	}
	for _, e := range eff {
		switch e := e.(type) {
		case Rejected:
			return Reply{V: ProtocolVersion, Code: CodeRejected, Error: trim(e.Reason), Field: e.Field}
		case Drop:
			return Reply{V: ProtocolVersion, Code: CodeDropped, Error: trim(e.Reason)}
		}
	}
	r := s.okFor(node, s.rep.State())
	if _, ok := c.(Join); !ok {
		r.Spec = nil // only a join needs the job's spec
	}
	return r
}

// okFor is a successful reply with the job as it stands, and node's assignment
// when it has one.
func (s *Server) okFor(node string, st State) Reply {
	r := Reply{V: ProtocolVersion, Code: CodeOK, Status: st.Status, Gen: st.Gen.Gen, Committed: st.Committed, Spec: st.Spec}
	if node != "" {
		if a, ok := st.Assignment(node); ok {
			r.Assignment = &a
		}
	}
	if st.Status == Failed {
		r.Error = trim(st.Reason)
	}
	return r
}

// onApply runs on raft's FSM goroutine on every replica: metrics, the
// samples/s clock, and — on the leader — events to publish.
func (s *Server) onApply(c Command, eff []Effect, st State) {
	// Not s.rep.IsLeader(): raft may apply (replay) before Start has set s.rep.
	leader := s.leading.Load()
	now := time.Now()
	for _, e := range eff {
		switch e := e.(type) {
		case Accepted:
			s.metrics.accepted(e)
		case Committed:
			s.rate.add(now, e.Point.Step)
		case Assign:
			s.log.Info("generation opened", zap.Uint64("gen", st.Gen.Gen), zap.Uint64("start", st.Gen.Start), zap.Strings("ring", st.Gen.Ring))
		case Departed:
			s.log.Info("member departed", zap.String("node", e.Node), zap.String("state", string(e.State)))
		case CheckpointCommitted:
			s.log.Info("checkpoint committed", zap.Uint64("step", e.Manifest.Step), zap.Int("files", len(e.Manifest.Files)))
		case JobDone:
			s.log.Info("job done", zap.Uint64("step", e.Step))
		case JobFailed:
			s.log.Error("job failed", zap.String("reason", e.Reason))
		}
		if leader {
			s.publish(e)
		}
	}
}

// publish queues the event form of an effect; a full queue drops it (nodes
// catch up through heartbeats) and counts.
func (s *Server) publish(e Effect) {
	var evs []event
	add := func(subject string, ev Event) {
		b, err := Encode(Message{V: ProtocolVersion, Event: &ev})
		if err != nil {
			s.log.Error("event not encoded", zap.Error(err))
			return
		}
		evs = append(evs, event{subject, b})
	}
	switch e := e.(type) {
	case Assign:
		for i := range e.Assignments {
			a := e.Assignments[i]
			add(nodeSubject(s.cfg.Job, a.Ring[a.Rank]), Event{Assignment: &a})
		}
	case Committed:
		add(eventsSubject(s.cfg.Job), Event{Committed: &e.Point})
	case CheckpointCommitted:
		add(eventsSubject(s.cfg.Job), Event{Checkpoint: &e})
	case JobDone:
		add(eventsSubject(s.cfg.Job), Event{Done: &e})
	case JobFailed:
		add(eventsSubject(s.cfg.Job), Event{Failed: &e})
	}
	for _, ev := range evs {
		select {
		case s.events <- ev:
		default:
			s.metrics.eventsLost.Inc()
		}
	}
}

func (s *Server) publishLoop() {
	defer s.wg.Done()
	for {
		select {
		case <-s.stop:
			return
		case ev := <-s.events:
			if err := s.nc.Publish(ev.subject, ev.data); err != nil {
				s.log.Debug("event not published", zap.String("subject", ev.subject), zap.Error(err))
			}
		}
	}
}

// joinRaft asks the group's leader to add this replica, until it does or the
// server stops.
func (s *Server) joinRaft() {
	defer s.wg.Done()
	data, _ := Encode(Message{V: ProtocolVersion, AddVoter: &AddVoter{ID: s.rep.ID(), Addr: s.rep.Addr()}})
	for {
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.RequestTimeout)
		msg, err := s.nc.RequestWithContext(ctx, ctlSubject(s.cfg.Job, "add_voter"), data)
		cancel()
		if err == nil {
			var r Reply
			if r, err = DecodeReply(msg.Data); err == nil && r.Code != CodeOK {
				err = fmt.Errorf("%s: %s", r.Code, r.Error)
			}
		}
		if err == nil {
			s.log.Info("joined the raft group")
			return
		}
		s.log.Debug("raft join retried", zap.Error(err))
		select {
		case <-s.stop:
			return
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// liveness is the leader's record of when it last heard from each node. It
// is not replicated: a new leader starts every member's clock afresh.
type liveness struct {
	mu     sync.Mutex
	seen   map[string]time.Time
	leader bool
}

func (l *liveness) saw(node string) {
	l.mu.Lock()
	l.seen[node] = time.Now()
	l.mu.Unlock()
}

// expired returns the live members not heard from within timeout, and
// restarts their clocks so that each is proposed once per timeout.
func (l *liveness) expired(st State, timeout time.Duration, now time.Time) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	live := map[string]bool{}
	for _, m := range st.Live() {
		live[m.ID] = true
		t, ok := l.seen[m.ID]
		if !ok {
			l.seen[m.ID] = now
			continue
		}
		if now.Sub(t) > timeout {
			out = append(out, m.ID)
			l.seen[m.ID] = now
		}
	}
	for id := range l.seen {
		if !live[id] {
			delete(l.seen, id)
		}
	}
	return out
}

// becameLeader restarts every clock; it reports whether leadership is new.
func (l *liveness) setLeader(leader bool) (changed bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if leader == l.leader {
		return false
	}
	l.leader = leader
	if leader {
		clear(l.seen)
	}
	return true
}

// tickLoop watches leadership, creates the job, and proposes timeouts for
// nodes the leader has not heard from.
func (s *Server) tickLoop() {
	defer s.wg.Done()
	tick := time.NewTicker(min(s.cfg.NodeTimeout/4, 100*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-tick.C:
		}
		leader := s.isLeader()
		s.leading.Store(leader)
		if s.live.setLeader(leader) {
			id, _ := s.rep.Leader()
			s.log.Info("raft leadership", zap.Bool("leader", leader), zap.String("leader_id", id), zap.Uint64("term", s.rep.Term()))
		}
		st := s.rep.State()
		if s.cfg.Spec != nil && st.Spec != nil && *st.Spec != *s.cfg.Spec {
			s.fail(fmt.Errorf("coordinator: this replica's job spec differs from the group's in %s (%s)", specDiff(*st.Spec, *s.cfg.Spec), s.cfg.Job))
		}
		if !leader {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.RequestTimeout)
		if st.Spec == nil && s.cfg.Spec != nil {
			if eff, err := s.rep.Apply(ctx, CreateJob{Spec: *s.cfg.Spec}); err != nil {
				s.log.Warn("job not created", zap.Error(err))
			} else if r := effectsOfKind[Rejected](eff); len(r) > 0 {
				s.fail(fmt.Errorf("coordinator: %s", r[0].Reason))
			} else {
				s.log.Info("job created", zap.String("recipe", s.cfg.Spec.Recipe), zap.Int("global_batch", s.cfg.Spec.GlobalBatch), zap.Int("min_nodes", s.cfg.Spec.MinNodes))
			}
		}
		for _, id := range s.live.expired(st, s.cfg.NodeTimeout, time.Now()) {
			s.log.Warn("node timed out", zap.String("node", id), zap.Uint64("gen", st.Gen.Gen), zap.Duration("after", s.cfg.NodeTimeout))
			if _, err := s.rep.Apply(ctx, HeartbeatTimeout{Node: id, Gen: st.Gen.Gen}); err != nil {
				s.log.Warn("timeout not proposed", zap.String("node", id), zap.Error(err))
			}
		}
		cancel()
	}
}

func effectsOfKind[E Effect](eff []Effect) []E {
	var out []E
	for _, e := range eff {
		if x, ok := e.(E); ok {
			out = append(out, x)
		}
	}
	return out
}

// status is this replica's Status with up to history points.
func (s *Server) status(history int) Status {
	st := s.rep.State()
	out := buildStatus(st, history, 16)
	out.Job = s.cfg.Job
	out.Replica = s.rep.ID()
	out.RaftState = s.rep.RaftState()
	out.Leader, out.LeaderAddr = s.rep.Leader()
	out.Term = s.rep.Term()
	out.AppliedIndex = s.rep.AppliedIndex()
	if peers, err := s.rep.Servers(); err == nil {
		out.Replicas = peers
	}
	out.SamplesPerSecond = s.samplesPerSecond(st)
	out.Malformed = s.metrics.malformedN.Load()
	if sm := s.sample.Load(); sm != nil {
		info := sm.info
		out.Sample = &info
	}
	return out
}

// statusJSON encodes the status, halving the history until it fits limit.
func (s *Server) statusJSON(history, limit int) ([]byte, error) {
	for {
		b, err := jsonMarshal(s.status(history))
		if err != nil {
			return nil, err
		}
		if len(b) <= limit || history == 0 {
			return b, nil
		}
		history /= 2
	}
}
