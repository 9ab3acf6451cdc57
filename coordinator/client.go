package coordinator

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"
)

// ClientConfig identifies a node to the coordinator.
type ClientConfig struct {
	Job  string // the job name
	Node string // this node's ID: 1-64 letters, digits, '-' or '_'
	// Host is where ring peers reach this node (it names the rank in errors);
	// Addr is its metrics address (host:port), shown to operators; may be empty.
	Host, Addr string
	// What the coordinator checks at join.
	Version, RecipeHash, DatasetHash string
	// Incarnation tells a retry from a restart; empty: a random value per Client.
	Incarnation string
	// AttemptTimeout bounds one request attempt; a call retries (leader
	// changes, lost messages) until its ctx ends.
	AttemptTimeout time.Duration
	// HeartbeatInterval is how often Watch heartbeats; keep it well under the
	// coordinator's node timeout (3 s by default).
	HeartbeatInterval time.Duration
}

// DefaultClientConfig returns the timing defaults.
func DefaultClientConfig() ClientConfig {
	return ClientConfig{AttemptTimeout: 2 * time.Second, HeartbeatInterval: 500 * time.Millisecond}
}

// Validate reports every problem of c at once, naming the field.
func (c ClientConfig) Validate() error {
	j := Join{Node: c.Node, Incarnation: c.Incarnation, Host: c.Host, Addr: c.Addr, Version: c.Version, RecipeHash: c.RecipeHash, DatasetHash: c.DatasetHash}
	if j.Incarnation == "" {
		j.Incarnation = "x"
	}
	errs := []error{name("job", c.Job), j.validate()}
	if c.AttemptTimeout < time.Millisecond {
		errs = append(errs, fmt.Errorf("client.attempt_timeout: %v, want >= 1ms", c.AttemptTimeout))
	}
	if c.HeartbeatInterval < time.Millisecond {
		errs = append(errs, fmt.Errorf("client.heartbeat_interval: %v, want >= 1ms", c.HeartbeatInterval))
	}
	return errors.Join(errs...)
}

// Client is a node's (or an operator's) side of the control protocol. Its
// methods may be called concurrently; each blocks until the coordinator
// answered or ctx ends, retrying across leader changes.
type Client struct {
	nc  *nats.Conn
	cfg ClientConfig
	log *zap.Logger
}

// NewClient returns a client on nc (the caller's; the client does not close it).
func NewClient(nc *nats.Conn, cfg ClientConfig, log *zap.Logger) (*Client, error) {
	if cfg.Incarnation == "" {
		var b [8]byte
		rand.Read(b[:])
		cfg.Incarnation = hex.EncodeToString(b[:])
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Client{nc: nc, cfg: cfg, log: log.With(zap.String("node", cfg.Node))}, nil
}

// Incarnation is this client's incarnation.
func (c *Client) Incarnation() string { return c.cfg.Incarnation }

// Error is a coordinator's refusal. errors.Is matches it against ErrRejected,
// ErrDropped, ErrUnknownNode and ErrInvalid by its Code.
type Error struct {
	Kind    string // the request
	Code    Code
	Message string
	Field   string // for a refused join: the spec field that differs
}

func (e *Error) Error() string {
	return fmt.Sprintf("coordinator: %s: %s: %s", e.Kind, e.Code, e.Message)
}

// Conditions callers branch on.
var (
	ErrRejected    = errors.New("coordinator: rejected")
	ErrDropped     = errors.New("coordinator: dropped")
	ErrUnknownNode = errors.New("coordinator: not a member")
	ErrJobOver     = errors.New("coordinator: job over")
)

func (e *Error) Is(target error) bool {
	switch target {
	case ErrRejected:
		return e.Code == CodeRejected
	case ErrDropped:
		return e.Code == CodeDropped
	case ErrUnknownNode:
		return e.Code == CodeUnknown
	case ErrInvalid:
		return e.Code == CodeInvalid
	}
	return false
}

// request sends m on ctl.<kind> until a replica answers with something other
// than "no leader", or ctx ends. retried reports whether an earlier attempt
// may have been applied (its reply was lost).
func (c *Client) request(ctx context.Context, kind string, m Message) (r Reply, retried bool, err error) {
	data, err := Encode(m)
	if err != nil {
		return Reply{}, false, err
	}
	backoff := 20 * time.Millisecond
	var last error
	for attempt := 0; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, c.cfg.AttemptTimeout)
		msg, err := c.nc.RequestWithContext(actx, ctlSubject(c.cfg.Job, kind), data)
		cancel()
		if err == nil {
			r, err = DecodeReply(msg.Data)
			if err == nil && r.Code != CodeNoLeader {
				if r.Code == CodeOK {
					return r, attempt > 0, nil
				}
				return r, attempt > 0, &Error{Kind: kind, Code: r.Code, Message: r.Error, Field: r.Field}
			}
			if err == nil {
				err = errors.New(r.Error)
			}
		}
		last = err
		if errors.Is(err, nats.ErrConnectionClosed) || errors.Is(err, nats.ErrBadSubject) {
			return Reply{}, false, fmt.Errorf("coordinator: %s: %w", kind, err)
		}
		c.log.Debug("control request retried", zap.String("kind", kind), zap.Int("attempt", attempt), zap.Error(err))
		select {
		case <-ctx.Done():
			return Reply{}, false, fmt.Errorf("coordinator: %s: no answer before %w (last: %v)", kind, ctx.Err(), last)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 500*time.Millisecond)
	}
}

// Joined is the answer to a join.
type Joined struct {
	Spec Spec
	// Assignment is the node's rank in the current generation, or nil while it
	// waits for one (fewer members than the job's min_nodes).
	Assignment *Assignment
}

// Join admits the node to the job. A refusal is an *Error with Code
// CodeRejected and, for a version, recipe or dataset mismatch, Field naming
// the spec field.
func (c *Client) Join(ctx context.Context) (Joined, error) {
	cfg := c.cfg
	r, _, err := c.request(ctx, "join", NewMessage(Join{
		Node: cfg.Node, Incarnation: cfg.Incarnation, Host: cfg.Host, Addr: cfg.Addr,
		Version: cfg.Version, RecipeHash: cfg.RecipeHash, DatasetHash: cfg.DatasetHash,
	}))
	if err != nil {
		return Joined{}, err
	}
	if r.Spec == nil {
		return Joined{}, fmt.Errorf("coordinator: join: the reply carries no job spec")
	}
	return Joined{Spec: *r.Spec, Assignment: r.Assignment}, nil
}

// Leave removes the node from the job; the others continue in a new generation.
func (c *Client) Leave(ctx context.Context) error {
	_, retried, err := c.request(ctx, "leave", NewMessage(Leave{Node: c.cfg.Node, Incarnation: c.cfg.Incarnation}))
	if retried && errors.Is(err, ErrDropped) {
		return nil // the first attempt left
	}
	return err
}

// Report tells the coordinator the node finished a step of generation gen
// (r.Node is filled in). A report of an older generation comes back as
// ErrDropped: the node must wait for its new assignment.
func (c *Client) Report(ctx context.Context, r Report) error {
	r.Node = c.cfg.Node
	_, retried, err := c.request(ctx, "report", NewMessage(r))
	if retried && errors.Is(err, ErrDropped) {
		return nil // an earlier attempt was applied; this one is its repeat
	}
	return err
}

// CommitCheckpoint commits the manifest of a checkpoint rank 0 wrote in
// generation gen. It returns once the coordinator accepted it; the checkpoint
// exists when the coordinator says so (Update.Checkpoint, Status).
func (c *Client) CommitCheckpoint(ctx context.Context, gen uint64, m Manifest) error {
	_, _, err := c.request(ctx, "commit_checkpoint", NewMessage(CommitCheckpoint{Node: c.cfg.Node, Gen: gen, Manifest: m}))
	return err
}

// Status asks any replica for its view of the job.
func (c *Client) Status(ctx context.Context) (Status, error) {
	return RequestStatus(ctx, c.nc, c.cfg.Job, c.cfg.AttemptTimeout)
}

// RequestStatus asks any coordinator replica of job for its status (the
// operator's `crdgo cluster status` calls it without a node identity).
func RequestStatus(ctx context.Context, nc *nats.Conn, job string, attempt time.Duration) (Status, error) {
	data, err := Encode(Message{V: ProtocolVersion, Status: &StatusQuery{}})
	if err != nil {
		return Status{}, err
	}
	for {
		actx, cancel := context.WithTimeout(ctx, attempt)
		msg, err := nc.RequestWithContext(actx, ctlSubject(job, "status"), data)
		cancel()
		if err == nil {
			if len(msg.Data) > MaxStatusBytes {
				return Status{}, fmt.Errorf("coordinator: status: %d bytes, the limit is %d", len(msg.Data), MaxStatusBytes)
			}
			var st Status
			if err := json.Unmarshal(msg.Data, &st); err != nil {
				return Status{}, fmt.Errorf("coordinator: status: %w", err)
			}
			if st.V != ProtocolVersion {
				if r, err := DecodeReply(msg.Data); err == nil && r.Code != CodeOK {
					return Status{}, fmt.Errorf("coordinator: status: %s: %s", r.Code, r.Error)
				}
				return Status{}, fmt.Errorf("coordinator: status: version %d, want %d", st.V, ProtocolVersion)
			}
			return st, nil
		}
		if errors.Is(err, nats.ErrConnectionClosed) {
			return Status{}, fmt.Errorf("coordinator: status: %w", err)
		}
		select {
		case <-ctx.Done():
			return Status{}, fmt.Errorf("coordinator: status of job %s: no coordinator answered (%v): %w", job, err, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// PublishSample offers the newest sample grid (a PNG) to the live pages of
// every replica. It is fire-and-forget: a grid that does not arrive is
// replaced by the next.
func (c *Client) PublishSample(step uint64, png []byte) error {
	if max := c.nc.MaxPayload(); int64(len(png))+256 > max {
		return fmt.Errorf("coordinator: sample of step %d: %d bytes, the NATS server's max_payload is %d", step, len(png), max)
	}
	m := nats.NewMsg(samplesSubject(c.cfg.Job))
	m.Header.Set(sampleStepHeader, strconv.FormatUint(step, 10))
	m.Header.Set(sampleNodeHeader, c.cfg.Node)
	m.Data = png
	return c.nc.PublishMsg(m)
}

// Update is what Watch delivers: the job as last heard, and the node's
// assignment when it changed.
type Update struct {
	// Assignment is set when the node has a new generation: it must roll back
	// to the committed step, Join the allreduce group of this generation and
	// train from Assignment.Start.
	Assignment *Assignment
	Gen        uint64    // the current generation
	Committed  uint64    // the newest committed step heard of
	Status     JobStatus //
	Reason     string    // why the job failed
	// Checkpoint is set when a checkpoint was committed.
	Checkpoint *Manifest
}

// Watch runs until ctx ends or the job is over: it heartbeats every
// HeartbeatInterval (which keeps the node a member), listens for the leader's
// events, and calls fn — from Watch's goroutine, one call at a time — when the
// node's assignment, the committed step, a checkpoint or the job's status
// changes. Events are the fast path; heartbeat replies carry the same facts,
// so a lost event costs one interval.
//
// It returns ctx's error; ErrUnknownNode (wrapped) when the coordinator no
// longer counts the node a member (it timed out: Join again); or ErrJobOver
// (wrapped, with the reason) once the job is done or failed.
func (c *Client) Watch(ctx context.Context, fn func(Update)) error {
	ch := make(chan *nats.Msg, 256)
	var subs []*nats.Subscription
	for _, subj := range []string{nodeSubject(c.cfg.Job, c.cfg.Node), eventsSubject(c.cfg.Job)} {
		sub, err := c.nc.ChanSubscribe(subj, ch)
		if err != nil {
			return fmt.Errorf("coordinator: watch %s: %w", subj, err)
		}
		subs = append(subs, sub)
	}
	defer func() {
		for _, s := range subs {
			s.Unsubscribe()
		}
	}()
	w := watcher{fn: fn, lastGen: ^uint64(0)}
	tick := time.NewTicker(c.cfg.HeartbeatInterval)
	defer tick.Stop()
	beat := func() error {
		hctx, cancel := context.WithTimeout(ctx, 2*c.cfg.HeartbeatInterval+c.cfg.AttemptTimeout)
		defer cancel()
		r, _, err := c.request(hctx, "heartbeat", Message{V: ProtocolVersion, Heartbeat: &Heartbeat{Node: c.cfg.Node, Incarnation: c.cfg.Incarnation, Gen: w.gen()}})
		if errors.Is(err, ErrUnknownNode) {
			return err
		}
		if err != nil {
			c.log.Warn("heartbeat failed", zap.Error(err))
			return nil // the next one may get through; the coordinator's timeout decides
		}
		w.observe(Update{Assignment: r.Assignment, Gen: r.Gen, Committed: r.Committed, Status: r.Status, Reason: r.Error})
		return nil
	}
	if err := beat(); err != nil {
		return err
	}
	for !w.over() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
			if err := beat(); err != nil {
				return err
			}
		case m := <-ch:
			msg, err := Decode(m.Data)
			if err != nil || msg.Event == nil {
				c.log.Debug("event dropped", zap.String("subject", m.Subject), zap.Error(err))
				continue
			}
			e := msg.Event
			switch {
			case e.Assignment != nil:
				if e.Assignment.Ring[e.Assignment.Rank] == c.cfg.Node {
					w.observe(Update{Assignment: e.Assignment, Gen: e.Assignment.Gen, Status: Running})
				}
			case e.Committed != nil:
				w.observe(Update{Committed: e.Committed.Step})
			case e.Checkpoint != nil:
				mf := e.Checkpoint.Manifest
				w.observe(Update{Checkpoint: &mf})
			case e.Done != nil:
				w.observe(Update{Status: Done, Committed: e.Done.Step})
			case e.Failed != nil:
				w.observe(Update{Status: Failed, Reason: e.Failed.Reason})
			}
		}
	}
	return fmt.Errorf("%w: %s %s", ErrJobOver, w.last.Status, w.last.Reason)
}

// watcher folds heartbeat replies and events into Updates, calling fn only
// for news: a generation not seen before, a larger committed step, a status
// change, a checkpoint.
type watcher struct {
	fn      func(Update)
	last    Update
	lastGen uint64 // the generation of the last assignment delivered; ^0: none
}

func (w *watcher) gen() uint64 {
	if w.lastGen == ^uint64(0) {
		return 0
	}
	return w.lastGen
}

func (w *watcher) over() bool { return w.last.Status == Done || w.last.Status == Failed }

func (w *watcher) observe(u Update) {
	news := false
	out := w.last
	out.Assignment, out.Checkpoint = nil, nil
	if u.Assignment != nil && (w.lastGen == ^uint64(0) || u.Assignment.Gen > w.lastGen) {
		w.lastGen = u.Assignment.Gen
		out.Assignment = u.Assignment
		news = true
	}
	if u.Gen > out.Gen {
		out.Gen, news = u.Gen, true
	}
	if u.Committed > out.Committed {
		out.Committed, news = u.Committed, true
	}
	if u.Status != "" && u.Status != out.Status && !w.over() {
		out.Status, out.Reason, news = u.Status, u.Reason, true
	}
	if u.Checkpoint != nil {
		out.Checkpoint, news = u.Checkpoint, true
	}
	if !news {
		return
	}
	w.last = out
	w.fn(out)
}
