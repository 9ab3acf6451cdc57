package coordinator

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
)

// cluster is n replicas on raft.InmemTransport (a real transport, in memory),
// with in-memory stores, in the style of hashicorp/raft's testing.go: build,
// partition, wait on observations with deadlines, compare states.
type cluster struct {
	t     *testing.T
	reps  []*Replica
	trans []*raft.InmemTransport
	cut   map[int]bool // replicas on the far side of a partition

	mu      sync.Mutex
	leaders map[uint64]map[string]bool // term → replicas that were leader in it
	obsStop chan struct{}
	obsWG   sync.WaitGroup
}

func newCluster(t *testing.T, n int, opts ...func(*RaftConfig)) *cluster {
	t.Helper()
	c := &cluster{t: t, cut: map[int]bool{}, leaders: map[uint64]map[string]bool{}, obsStop: make(chan struct{})}
	var peers []Peer
	for i := range n {
		id := fmt.Sprintf("c%d", i)
		_, tr := raft.NewInmemTransportWithTimeout(raft.ServerAddress(id), time.Second)
		c.trans = append(c.trans, tr)
		peers = append(peers, Peer{ID: id, Addr: id})
	}
	for i, a := range c.trans {
		for j, b := range c.trans {
			if i != j {
				a.Connect(b.LocalAddr(), b)
			}
		}
	}
	log := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	for i := range n {
		cfg := DefaultRaftConfig()
		cfg.ID, cfg.Bootstrap, cfg.Peers = peers[i].ID, true, peers
		for _, o := range opts {
			o(&cfg)
		}
		r, err := openReplica(cfg, c.trans[i], nil, log.With(zap.String("replica", cfg.ID)))
		if err != nil {
			t.Fatal(err)
		}
		c.reps = append(c.reps, r)
		c.observe(r)
	}
	t.Cleanup(c.shutdown)
	return c
}

// add starts one more replica, connected to all, not bootstrapped: the leader
// must add it.
func (c *cluster) add(t *testing.T, id string) *Replica {
	t.Helper()
	_, tr := raft.NewInmemTransportWithTimeout(raft.ServerAddress(id), time.Second)
	c.trans = append(c.trans, tr)
	c.heal()
	cfg := DefaultRaftConfig()
	cfg.ID = id
	r, err := openReplica(cfg, tr, nil, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)).With(zap.String("replica", id)))
	if err != nil {
		t.Fatal(err)
	}
	c.reps = append(c.reps, r)
	c.observe(r)
	return r
}

// observe records, from raft's observations, who became leader in which term.
func (c *cluster) observe(r *Replica) {
	ch := make(chan raft.Observation, 64)
	obs := raft.NewObserver(ch, false, func(o *raft.Observation) bool {
		st, ok := o.Data.(raft.RaftState)
		return ok && st == raft.Leader
	})
	r.raft.RegisterObserver(obs)
	c.obsWG.Add(1)
	go func() {
		defer c.obsWG.Done()
		defer r.raft.DeregisterObserver(obs)
		for {
			select {
			case <-c.obsStop:
				return
			case o := <-ch:
				term := o.Raft.CurrentTerm()
				c.mu.Lock()
				if c.leaders[term] == nil {
					c.leaders[term] = map[string]bool{}
				}
				c.leaders[term][r.ID()] = true
				c.mu.Unlock()
			}
		}
	}()
}

func (c *cluster) shutdown() {
	close(c.obsStop)
	c.obsWG.Wait()
	for _, r := range c.reps {
		if err := r.Shutdown(); err != nil {
			c.t.Errorf("shutdown %s: %v", r.ID(), err)
		}
	}
}

func (c *cluster) near() []*Replica {
	var out []*Replica
	for i, r := range c.reps {
		if !c.cut[i] {
			out = append(out, r)
		}
	}
	return out
}

// leader waits for exactly one leader on the near side and returns it.
func (c *cluster) leader(t *testing.T) *Replica {
	t.Helper()
	var l *Replica
	waitFor(t, 10*time.Second, "one leader on the near side", func() bool {
		var ls []*Replica
		for _, r := range c.near() {
			if r.IsLeader() {
				ls = append(ls, r)
			}
		}
		if len(ls) == 1 {
			l = ls[0]
		}
		return len(ls) == 1
	})
	return l
}

// partition cuts r off from every other replica, both ways.
func (c *cluster) partition(r *Replica) {
	i := slices.Index(c.reps, r)
	c.cut[i] = true
	for j, tr := range c.trans {
		if j == i {
			tr.DisconnectAll()
		} else {
			tr.Disconnect(c.trans[i].LocalAddr())
		}
	}
}

// heal reconnects everyone.
func (c *cluster) heal() {
	for i, a := range c.trans {
		for j, b := range c.trans {
			if i != j {
				a.Connect(b.LocalAddr(), b)
			}
		}
	}
	c.cut = map[int]bool{}
}

// waitLeaderChange waits until a replica other than old leads the near side
// and returns how long that took.
func (c *cluster) waitLeaderChange(t *testing.T, old *Replica, since time.Time) time.Duration {
	t.Helper()
	var took time.Duration
	waitFor(t, 10*time.Second, "a new leader", func() bool {
		for _, r := range c.near() {
			if r != old && r.IsLeader() {
				took = time.Since(since)
				return true
			}
		}
		return false
	})
	return took
}

// ensureSameState waits until every near replica has applied the same index
// and holds an equal state.
func (c *cluster) ensureSameState(t *testing.T) State {
	t.Helper()
	var st State
	var last string
	waitFor(t, 10*time.Second, "equal states on every replica", func() bool {
		reps := c.near()
		want, _ := json.Marshal(reps[0].State())
		for _, r := range reps[1:] {
			got, _ := json.Marshal(r.State())
			if r.AppliedIndex() != reps[0].AppliedIndex() || string(got) != string(want) {
				last = fmt.Sprintf("%s at index %d: %s\n%s at index %d: %s", reps[0].ID(), reps[0].AppliedIndex(), want, r.ID(), r.AppliedIndex(), got)
				return false
			}
		}
		st = reps[0].State()
		return true
	})
	if t.Failed() {
		t.Log(last)
	}
	return st
}

// oneLeaderPerTerm fails if any term had two leaders.
func (c *cluster) oneLeaderPerTerm(t *testing.T) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	for term, ls := range c.leaders {
		if len(ls) > 1 {
			t.Errorf("term %d had %d leaders: %v", term, len(ls), ls)
		}
	}
}

func mustApply(t *testing.T, r *Replica, c Command) []Effect {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	eff, err := r.Apply(ctx, c)
	if err != nil {
		t.Fatalf("%s: Apply(%T): %v", r.ID(), c, err)
	}
	return eff
}

// runSteps has the cluster's two members report steps from..to through the
// current leader, retrying a proposal that raced a leader change.
func runSteps(t *testing.T, c *cluster, gen, from, to uint64) {
	t.Helper()
	for step := from; step <= to; step++ {
		for _, n := range []string{"a", "b"} {
			rep := Report{Node: n, Gen: gen, Step: step, Losses: map[string]float64{"G": float64(step)}, StepTime: 0.01}
			waitFor(t, 10*time.Second, fmt.Sprintf("report of %s step %d applied", n, step), func() bool {
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				defer cancel()
				_, err := c.leader(t).Apply(ctx, rep)
				return err == nil
			})
		}
	}
}

func TestClusterLeaderLoss(t *testing.T) {
	for _, n := range []int{3, 5} {
		t.Run(fmt.Sprintf("%d replicas", n), func(t *testing.T) {
			c := newCluster(t, n)
			l := c.leader(t)
			mustApply(t, l, CreateJob{Spec: testSpec()})
			mustApply(t, l, join("a"))
			mustApply(t, l, join("b"))
			runSteps(t, c, 1, 1, 5)
			before := c.ensureSameState(t)

			old := c.leader(t)
			cutAt := time.Now()
			c.partition(old)
			took := c.waitLeaderChange(t, old, cutAt)
			t.Logf("%d replicas: leader %s cut off, %s leads after %v", n, old.ID(), c.leader(t).ID(), took.Round(time.Millisecond))

			runSteps(t, c, 1, 6, 10)
			st := c.ensureSameState(t)
			if st.Committed != 10 || len(st.History) != 10 {
				t.Fatalf("after the leader change: committed %d with %d points; want 10", st.Committed, len(st.History))
			}
			for i, p := range st.History {
				if p.Step != uint64(i+1) {
					t.Fatalf("history steps %v: position %d is step %d", st.History, i, p.Step)
				}
			}
			if b, _ := json.Marshal(before.History); string(b) != mustJSON(st.History[:5]) {
				t.Fatalf("steps 1-5 changed across the leader change")
			}

			c.heal()
			c.ensureSameState(t) // the old leader catches up
			c.oneLeaderPerTerm(t)
		})
	}
}

func mustJSON(v any) string { b, _ := json.Marshal(v); return string(b) }

// TestLeaderLossHeals measures how long a 3-replica group on loopback (in
// memory) takes to elect a new leader after losing its leader, over several
// cuts; DefaultRaftConfig promises well under a second.
func TestLeaderLossHeals(t *testing.T) {
	c := newCluster(t, 3)
	mustApply(t, c.leader(t), CreateJob{Spec: testSpec()})
	var took []time.Duration
	for range 10 {
		old := c.leader(t)
		cutAt := time.Now()
		c.partition(old)
		took = append(took, c.waitLeaderChange(t, old, cutAt))
		c.heal()
		c.ensureSameState(t)
	}
	sort.Slice(took, func(i, j int) bool { return took[i] < took[j] })
	t.Logf("leader loss healed in %v (median %v, worst %v over %d cuts; heartbeat timeout %v)", took, took[len(took)/2], took[len(took)-1], len(took), DefaultRaftConfig().HeartbeatTimeout)
	if took[len(took)/2] >= time.Second {
		t.Errorf("median healing time %v; want < 1s", took[len(took)/2])
	}
	c.oneLeaderPerTerm(t)
}

// A replica that joins after the log was compacted gets the state from a
// snapshot (raft's InstallSnapshot and the FSM's Restore), and an FSM restored
// from a persisted snapshot equals the original.
func TestSnapshotRestore(t *testing.T) {
	c := newCluster(t, 3, func(cfg *RaftConfig) { cfg.TrailingLogs, cfg.SnapshotThreshold = 2, 4 })
	l := c.leader(t)
	mustApply(t, l, CreateJob{Spec: testSpec()})
	mustApply(t, l, join("a"))
	mustApply(t, l, join("b"))
	runSteps(t, c, 1, 1, 4)
	want := c.ensureSameState(t)
	for _, r := range c.reps {
		if err := r.Snapshot(); err != nil {
			t.Fatalf("%s: snapshot: %v", r.ID(), err)
		}
	}

	// The FSM alone: persist, restore, compare.
	s, err := l.fsm.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sink := &memSink{}
	if err := s.Persist(sink); err != nil {
		t.Fatal(err)
	}
	f := newFSM(nil, zap.NewNop())
	if err := f.Restore(io.NopCloser(bytes.NewReader(sink.buf.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if got := mustJSON(f.load()); got != mustJSON(want) {
		t.Fatalf("restored state:\n%s\nwant:\n%s", got, mustJSON(want))
	}

	// A fourth replica, added now, can only catch up from the snapshot.
	r := c.add(t, "c3")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.leader(t).AddVoter(ctx, r.ID(), r.Addr()); err != nil {
		t.Fatal(err)
	}
	runSteps(t, c, 1, 5, 5)
	st := c.ensureSameState(t)
	if st.Committed != 5 || len(r.State().History) != 5 {
		t.Fatalf("new replica: committed %d with %d points; want 5", r.State().Committed, len(r.State().History))
	}
}

// memSink is a raft.SnapshotSink in memory.
type memSink struct{ buf bytes.Buffer }

func (m *memSink) Write(p []byte) (int, error) { return m.buf.Write(p) }
func (m *memSink) Close() error                { return nil }
func (m *memSink) ID() string                  { return "mem" }
func (m *memSink) Cancel() error               { return nil }

// The process mode: raft over TCP on loopback with boltdb logs. A replica
// that restarts on its folder comes back with the job.
func TestTCPBoltReplicas(t *testing.T) {
	log := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	open := func(id, dir, bind string, boot bool) *Replica {
		cfg := DefaultRaftConfig()
		cfg.ID, cfg.Dir, cfg.Bind, cfg.Bootstrap = id, dir, bind, boot
		r, err := OpenReplica(cfg, nil, log.With(zap.String("replica", id)))
		if err != nil {
			t.Fatalf("open %s: %v", id, err)
		}
		return r
	}
	dirs := []string{t.TempDir(), t.TempDir(), t.TempDir()}
	reps := []*Replica{open("c0", dirs[0], "127.0.0.1:0", true)}
	defer func() {
		for _, r := range reps {
			r.Shutdown()
		}
	}()
	waitFor(t, 10*time.Second, "c0 leading alone", reps[0].IsLeader)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := 1; i < 3; i++ {
		r := open(fmt.Sprintf("c%d", i), dirs[i], "127.0.0.1:0", false)
		reps = append(reps, r)
		if err := reps[0].AddVoter(ctx, r.ID(), r.Addr()); err != nil {
			t.Fatal(err)
		}
	}
	leader := func() *Replica {
		var l *Replica
		waitFor(t, 10*time.Second, "a leader", func() bool {
			for _, r := range reps {
				if r.IsLeader() {
					l = r
				}
			}
			return l != nil
		})
		return l
	}
	mustApply(t, leader(), CreateJob{Spec: testSpec()})
	mustApply(t, leader(), join("a"))
	mustApply(t, leader(), join("b"))
	mustApply(t, leader(), Report{Node: "a", Gen: 1, Step: 1})
	mustApply(t, leader(), Report{Node: "b", Gen: 1, Step: 1})

	addr := reps[1].Addr()
	if err := reps[1].Shutdown(); err != nil {
		t.Fatal(err)
	}
	mustApply(t, leader(), Report{Node: "a", Gen: 1, Step: 2})
	reps[1] = open("c1", dirs[1], addr, false)
	mustApply(t, leader(), Report{Node: "b", Gen: 1, Step: 2})
	waitFor(t, 10*time.Second, "the restarted replica at step 2", func() bool { return reps[1].State().Committed == 2 })
	if got, want := mustJSON(reps[1].State()), mustJSON(leader().State()); got != want {
		t.Fatalf("restarted replica:\n%s\nleader:\n%s", got, want)
	}
	servers, err := reps[1].Servers()
	if err != nil || len(servers) != 3 {
		t.Fatalf("Servers() = %v, %v; want 3", servers, err)
	}
}

func TestHCLogFields(t *testing.T) {
	got := fields([]any{"servers", hclog.Fmt("%d-%s", 3, "x"), "n", 1, "dangling"})
	if len(got) != 3 || got[0].Key != "servers" || got[0].Interface != "3-x" && got[0].String != "3-x" || got[2].Key != "extra" {
		t.Fatalf("fields = %+v; want servers=3-x, n=1, extra=dangling", got)
	}
}
