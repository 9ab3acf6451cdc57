package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.uber.org/zap"
)

// RaftConfig configures one coordinator replica's raft node.
type RaftConfig struct {
	// ID names the replica in the raft configuration (and on the peer subject
	// crdgo.<job>.peer.<ID>.>): 1-64 letters, digits, '-' or '_'.
	ID string
	// Dir holds the raft log and stable store (raft.db, boltdb) and snapshots.
	// Empty: everything in memory, lost with the process (tests, one-process runs).
	Dir string
	// Bind is the TCP address raft listens on (host:port). Empty: an in-process
	// transport (raft.InmemTransport), for tests and one-process runs.
	Bind string
	// Advertise is the address other replicas dial; empty: Bind.
	Advertise string
	// Bootstrap makes this replica start a new cluster of Peers (itself
	// included). Every replica of a new cluster may bootstrap with the same
	// list; a replica that already has state ignores it.
	Bootstrap bool
	Peers     []Peer

	// HeartbeatTimeout is how long a follower waits for the leader before it
	// stands for election (raft randomises it within [t, 2t)); ElectionTimeout
	// the same for a candidate; LeaderLeaseTimeout how long a leader stays one
	// without hearing from a quorum. Together they bound how fast a lost leader
	// is replaced: about HeartbeatTimeout..2·HeartbeatTimeout plus one election.
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	// CommitTimeout is the longest a leader waits to replicate an entry with
	// no other traffic.
	CommitTimeout time.Duration
	// ApplyTimeout bounds one proposal (raft.Apply) when the caller's ctx has
	// no earlier deadline.
	ApplyTimeout time.Duration
	// SnapshotInterval and SnapshotThreshold: raft checks every interval and
	// snapshots when more than threshold entries are new. TrailingLogs entries
	// stay after a snapshot so a slow follower catches up from the log.
	SnapshotInterval  time.Duration
	SnapshotThreshold uint64
	TrailingLogs      uint64

	// transport, when set (tests), is used instead of one built from Bind.
	transport raft.Transport
}

// Peer is a replica of the raft group.
type Peer struct {
	ID   string `json:"id"`
	Addr string `json:"addr"`
}

// ParsePeers reads "id=host:port,id=host:port".
func ParsePeers(s string) ([]Peer, error) {
	var out []Peer
	for _, p := range strings.Split(s, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		id, addr, ok := strings.Cut(p, "=")
		if !ok || id == "" || addr == "" {
			return nil, fmt.Errorf("peer %q: want id=host:port", p)
		}
		out = append(out, Peer{ID: id, Addr: addr})
	}
	return out, nil
}

// DefaultRaftConfig returns timeouts tuned for a LAN or loopback: a lost
// leader is replaced in well under a second (TestLeaderLossHeals measures it).
func DefaultRaftConfig() RaftConfig {
	return RaftConfig{
		HeartbeatTimeout:   100 * time.Millisecond,
		ElectionTimeout:    100 * time.Millisecond,
		LeaderLeaseTimeout: 50 * time.Millisecond,
		CommitTimeout:      10 * time.Millisecond,
		ApplyTimeout:       5 * time.Second,
		SnapshotInterval:   30 * time.Second,
		SnapshotThreshold:  4096,
		TrailingLogs:       4096,
	}
}

// Validate reports every problem of c at once, naming the field.
func (c RaftConfig) Validate() error {
	var errs []error
	if !validName(c.ID, 64) {
		errs = append(errs, fmt.Errorf("raft.id %q: want 1-64 letters, digits, '-' or '_'", c.ID))
	}
	if c.Bind != "" {
		if _, _, err := net.SplitHostPort(c.Bind); err != nil {
			errs = append(errs, fmt.Errorf("raft.bind %q: want host:port", c.Bind))
		}
	}
	if c.Advertise != "" {
		if _, err := net.ResolveTCPAddr("tcp", c.Advertise); err != nil {
			errs = append(errs, fmt.Errorf("raft.advertise %q: %v", c.Advertise, err))
		}
	}
	if c.Bootstrap {
		ids := map[string]bool{}
		self := false
		for _, p := range c.Peers {
			if !validName(p.ID, 64) || p.Addr == "" {
				errs = append(errs, fmt.Errorf("raft.peers: %q=%q: want id=host:port", p.ID, p.Addr))
			}
			if ids[p.ID] {
				errs = append(errs, fmt.Errorf("raft.peers: %q listed twice", p.ID))
			}
			ids[p.ID] = true
			self = self || p.ID == c.ID
		}
		if len(c.Peers) > 0 && !self {
			errs = append(errs, fmt.Errorf("raft.peers: %q is not in the list; a bootstrapping replica must be", c.ID))
		}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"heartbeat_timeout", c.HeartbeatTimeout}, {"election_timeout", c.ElectionTimeout}, {"leader_lease_timeout", c.LeaderLeaseTimeout},
		{"commit_timeout", c.CommitTimeout}, {"apply_timeout", c.ApplyTimeout}, {"snapshot_interval", c.SnapshotInterval}} {
		if d.v < 5*time.Millisecond {
			errs = append(errs, fmt.Errorf("raft.%s: %v, want >= 5ms", d.name, d.v))
		}
	}
	if c.LeaderLeaseTimeout > c.HeartbeatTimeout {
		errs = append(errs, fmt.Errorf("raft.leader_lease_timeout %v exceeds raft.heartbeat_timeout %v", c.LeaderLeaseTimeout, c.HeartbeatTimeout))
	}
	if c.ElectionTimeout < c.HeartbeatTimeout {
		errs = append(errs, fmt.Errorf("raft.election_timeout %v is less than raft.heartbeat_timeout %v", c.ElectionTimeout, c.HeartbeatTimeout))
	}
	return errors.Join(errs...)
}

// Replica is one coordinator replica: a raft node and the FSM it drives. All
// methods may be called concurrently.
type Replica struct {
	cfg   RaftConfig
	raft  *raft.Raft
	fsm   *fsm
	trans raft.Transport
	bolt  *raftboltdb.BoltStore // nil in memory
	log   *zap.Logger
}

// ApplyHook sees every command a replica applies, with its effects and the
// state after it. It runs on raft's FSM goroutine, on every replica: it must
// return quickly and must not call back into the Replica.
type ApplyHook func(c Command, eff []Effect, s State)

// OpenReplica starts a replica: its transport (TCP on cfg.Bind, or in
// process), its stores (boltdb in cfg.Dir, or memory) and raft. hook may be nil.
func OpenReplica(cfg RaftConfig, hook ApplyHook, log *zap.Logger) (*Replica, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	hl := newHCLog(log.Named("raft"))
	var trans raft.Transport
	if cfg.transport != nil {
		trans = cfg.transport
	} else if cfg.Bind == "" {
		addr := cfg.Advertise
		if addr == "" {
			addr = cfg.ID
		}
		_, trans = raft.NewInmemTransportWithTimeout(raft.ServerAddress(addr), 2*time.Second)
	} else {
		var adv net.Addr
		if cfg.Advertise != "" {
			a, err := net.ResolveTCPAddr("tcp", cfg.Advertise)
			if err != nil {
				return nil, fmt.Errorf("coordinator: raft advertise %s: %w", cfg.Advertise, err)
			}
			adv = a
		}
		t, err := raft.NewTCPTransportWithLogger(cfg.Bind, adv, 3, 2*time.Second, hl.Named("transport"))
		if err != nil {
			return nil, fmt.Errorf("coordinator: raft transport on %s: %w", cfg.Bind, err)
		}
		trans = t
	}
	r, err := openReplica(cfg, trans, hook, log)
	if err != nil {
		closeTransport(trans)
		return nil, err
	}
	return r, nil
}

// openReplica is OpenReplica on a given transport (the cluster tests connect
// InmemTransports themselves).
func openReplica(cfg RaftConfig, trans raft.Transport, hook ApplyHook, log *zap.Logger) (*Replica, error) {
	hl := newHCLog(log.Named("raft"))
	rep := &Replica{cfg: cfg, trans: trans, log: log, fsm: newFSM(hook, log)}
	var logs raft.LogStore
	var stable raft.StableStore
	var snaps raft.SnapshotStore
	if cfg.Dir == "" {
		mem := raft.NewInmemStore()
		logs, stable, snaps = mem, mem, raft.NewInmemSnapshotStore()
	} else {
		if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
			return nil, fmt.Errorf("coordinator: raft dir: %w", err)
		}
		b, err := raftboltdb.NewBoltStore(filepath.Join(cfg.Dir, "raft.db"))
		if err != nil {
			return nil, fmt.Errorf("coordinator: raft log %s: %w", filepath.Join(cfg.Dir, "raft.db"), err)
		}
		rep.bolt = b
		fs, err := raft.NewFileSnapshotStoreWithLogger(cfg.Dir, 2, hl.Named("snapshots"))
		if err != nil {
			b.Close()
			return nil, fmt.Errorf("coordinator: raft snapshots in %s: %w", cfg.Dir, err)
		}
		logs, stable, snaps = b, b, fs
	}
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.ID)
	rc.HeartbeatTimeout = cfg.HeartbeatTimeout
	rc.ElectionTimeout = cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = cfg.LeaderLeaseTimeout
	rc.CommitTimeout = cfg.CommitTimeout
	rc.SnapshotInterval = cfg.SnapshotInterval
	rc.SnapshotThreshold = cfg.SnapshotThreshold
	rc.TrailingLogs = cfg.TrailingLogs
	rc.Logger = hl
	if err := raft.ValidateConfig(rc); err != nil {
		rep.closeStores()
		return nil, fmt.Errorf("coordinator: raft config: %w", err)
	}
	if cfg.Bootstrap {
		has, err := raft.HasExistingState(logs, stable, snaps)
		if err != nil {
			rep.closeStores()
			return nil, fmt.Errorf("coordinator: raft state in %q: %w", cfg.Dir, err)
		}
		if !has {
			var conf raft.Configuration
			peers := cfg.Peers
			if len(peers) == 0 {
				peers = []Peer{{ID: cfg.ID, Addr: string(trans.LocalAddr())}}
			}
			for _, p := range peers {
				conf.Servers = append(conf.Servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(p.ID), Address: raft.ServerAddress(p.Addr)})
			}
			if err := raft.BootstrapCluster(rc, logs, stable, snaps, trans, conf); err != nil {
				rep.closeStores()
				return nil, fmt.Errorf("coordinator: bootstrap: %w", err)
			}
		}
	}
	r, err := raft.NewRaft(rc, rep.fsm, logs, stable, snaps, trans)
	if err != nil {
		rep.closeStores()
		return nil, fmt.Errorf("coordinator: raft: %w", err)
	}
	rep.raft = r
	log.Info("raft replica started", zap.String("id", cfg.ID), zap.String("addr", string(trans.LocalAddr())), zap.String("dir", cfg.Dir), zap.Bool("bootstrap", cfg.Bootstrap))
	return rep, nil
}

func (r *Replica) closeStores() {
	if r.bolt != nil {
		r.bolt.Close()
		r.bolt = nil
	}
}

func closeTransport(t raft.Transport) {
	if c, ok := t.(io.Closer); ok {
		c.Close()
	}
}

// ID is the replica's raft ID.
func (r *Replica) ID() string { return r.cfg.ID }

// Addr is the replica's raft address.
func (r *Replica) Addr() string { return string(r.trans.LocalAddr()) }

// State is the replica's current FSM state (it may trail the leader's).
func (r *Replica) State() State { return r.fsm.load() }

// IsLeader says whether this replica is the raft leader now.
func (r *Replica) IsLeader() bool { return r.raft.State() == raft.Leader }

// RaftState is "Leader", "Follower", "Candidate" or "Shutdown".
func (r *Replica) RaftState() string { return r.raft.State().String() }

// Leader returns the leader's ID and raft address as this replica knows them;
// empty when it knows none.
func (r *Replica) Leader() (id, addr string) {
	a, i := r.raft.LeaderWithID()
	return string(i), string(a)
}

// Term is the current raft term.
func (r *Replica) Term() uint64 { return r.raft.CurrentTerm() }

// AppliedIndex is the index of the last log entry applied to the FSM.
func (r *Replica) AppliedIndex() uint64 { return r.raft.AppliedIndex() }

// Servers lists the raft configuration.
func (r *Replica) Servers() ([]Peer, error) {
	f := r.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, err
	}
	var out []Peer
	for _, s := range f.Configuration().Servers {
		out = append(out, Peer{ID: string(s.ID), Addr: string(s.Address)})
	}
	return out, nil
}

// ErrNotLeader: a proposal reached a replica that is not the leader.
var ErrNotLeader = errors.New("coordinator: not the raft leader")

// Apply proposes c through raft and returns its effects once this replica has
// applied it. Only the leader accepts proposals: elsewhere it fails with
// ErrNotLeader. ctx bounds the wait (at most ApplyTimeout).
func (r *Replica) Apply(ctx context.Context, c Command) ([]Effect, error) {
	b, err := Encode(NewMessage(c))
	if err != nil {
		return nil, err
	}
	timeout := r.cfg.ApplyTimeout
	if d, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(d))
	}
	if timeout <= 0 {
		return nil, context.DeadlineExceeded
	}
	f := r.raft.Apply(b, timeout)
	if err := f.Error(); err != nil {
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) || errors.Is(err, raft.ErrLeadershipTransferInProgress) {
			return nil, fmt.Errorf("%w: %w", ErrNotLeader, err)
		}
		return nil, fmt.Errorf("coordinator: raft apply: %w", err)
	}
	switch res := f.Response().(type) {
	case []Effect:
		return res, nil
	case error:
		return nil, res
	}
	return nil, nil
}

// AddVoter adds a replica to the raft group; only the leader can.
func (r *Replica) AddVoter(ctx context.Context, id, addr string) error {
	timeout := r.cfg.ApplyTimeout
	if d, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(d))
	}
	if err := r.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, timeout).Error(); err != nil {
		if errors.Is(err, raft.ErrNotLeader) {
			return fmt.Errorf("%w: %w", ErrNotLeader, err)
		}
		return fmt.Errorf("coordinator: add voter %s at %s: %w", id, addr, err)
	}
	return nil
}

// Barrier waits until every entry committed before it is applied here; on the
// leader it makes State current.
func (r *Replica) Barrier(ctx context.Context) error {
	timeout := r.cfg.ApplyTimeout
	if d, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(d))
	}
	return r.raft.Barrier(timeout).Error()
}

// Snapshot asks raft for a snapshot now (tests; raft also takes them itself).
func (r *Replica) Snapshot() error { return r.raft.Snapshot().Error() }

// Shutdown stops raft and closes the transport and stores; it returns once
// raft's goroutines are gone.
func (r *Replica) Shutdown() error {
	err := r.raft.Shutdown().Error()
	closeTransport(r.trans)
	r.closeStores()
	return err
}

// fsm adapts apply to raft.FSM. raft calls Apply, Snapshot and Restore from
// one goroutine; Persist of a snapshot runs concurrently with later Applies,
// which is why states are immutable values. Readers (status, metrics) load the
// current state at any time.
type fsm struct {
	state atomic.Pointer[State]
	hook  ApplyHook
	log   *zap.Logger
}

func newFSM(hook ApplyHook, log *zap.Logger) *fsm {
	f := &fsm{hook: hook, log: log}
	f.state.Store(&State{})
	return f
}

func (f *fsm) load() State { return *f.state.Load() }

// Apply decodes and applies one log entry. The leader validated the command
// before proposing it, so an entry that does not decode is a bug or a
// different crdgo version: it is logged and skipped identically everywhere.
func (f *fsm) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand {
		return nil
	}
	m, err := Decode(l.Data)
	var c Command
	if err == nil {
		c = m.Command()
	}
	if c == nil {
		f.log.Error("raft entry skipped: not a command", zap.Uint64("index", l.Index), zap.Error(err))
		return fmt.Errorf("coordinator: raft entry %d: not a command: %v", l.Index, err)
	}
	s, eff := apply(f.load(), c)
	f.state.Store(&s)
	if f.hook != nil {
		f.hook(c, eff, s)
	}
	return eff
}

func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	return snapshot{state: f.load()}, nil
}

// maxSnapshotBytes bounds a snapshot read back: far above what the state's
// own limits allow (members, history, checkpoints).
const maxSnapshotBytes = 256 << 20

func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	var s State
	dec := json.NewDecoder(io.LimitReader(rc, maxSnapshotBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return fmt.Errorf("coordinator: restore snapshot: %w", err)
	}
	f.state.Store(&s)
	f.log.Info("state restored from a snapshot", zap.Uint64("gen", s.Gen.Gen), zap.Uint64("committed", s.Committed))
	return nil
}

type snapshot struct{ state State }

func (s snapshot) Persist(sink raft.SnapshotSink) error {
	if err := json.NewEncoder(sink).Encode(s.state); err != nil {
		sink.Cancel()
		return fmt.Errorf("coordinator: persist snapshot: %w", err)
	}
	return sink.Close()
}

func (snapshot) Release() {}
