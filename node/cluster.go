package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/png"
	"os"
	"regexp"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/crdgo/crdgo/allreduce"
	"github.com/crdgo/crdgo/coordinator"
	"github.com/crdgo/crdgo/crd/tensor"
	"github.com/crdgo/crdgo/crd/train"
)

// A cluster node is one worker process of a job run by the coordinator
// (docs/cluster.md): it joins the job, waits for its assignment (generation,
// rank, ring, its part of every step's global batch), trains with the
// allreduce Reducer over NATS as the trainer's GradSync, reports every step,
// and — as rank 0 — writes the checkpoints whose manifests the coordinator
// commits. It computes exactly what worker Rank of `crdgo train --nodes World`
// computes: the same trainer, sampler, loss shares and ring.

// ClusterConfig is one node of a cluster job.
type ClusterConfig struct {
	// Job names the job; ID names this node in it (1-64 letters, digits, '-'
	// or '_'; the NATS subject token crdgo.<job>.node.<id>).
	Job, ID string
	// Host names this node to its ring peers, in their errors and logs
	// (empty: hostname/pid).
	Host string
	// Train is the trainer's configuration: the recipe as loaded (its hash
	// must equal the job's), the data, the run folder. The job's spec sets the
	// seed, the global batch, MaxSteps and CheckpointEvery.
	Train train.Config
	// Version is this binary's crdgo version; the job's must be the same.
	Version string
	// Connect opens a NATS connection with the cluster's credentials; name
	// names it in the server's monitoring. A node opens one for the control
	// protocol and Lanes for the allreduce.
	Connect func(name string) (*nats.Conn, error)
	// Lanes is the number of NATS connections of the allreduce (0: 4).
	Lanes int
	// Threads is the engine's compute threads (0: GOMAXPROCS); Backend the
	// CPU backend ("": the default).
	Threads int
	Backend tensor.CPUKind
	// Allreduce configures the Reducer (zero value: allreduce.DefaultConfig).
	Allreduce allreduce.Config
	// Extras loads the pretrained networks (VGG, Inception) onto the engine;
	// nil: none.
	Extras func(be tensor.Backend) (train.Extras, error)
	// Output opens rank 0's Output once this node knows it is rank 0 (a run
	// folder: it takes the folder's lock); close is called at the end. resume
	// is false when the run starts at step 1 (the folder should hold no
	// checkpoints), true when this node became rank 0 of a later generation
	// (the folder may hold the lost rank 0's). nil: nothing is written and no
	// checkpoint is committed.
	Output func(resume bool) (out train.Output, close func(), err error)
	// MetricsAddr, when set, serves /metrics (Prometheus) and /healthz on
	// host:port (port 0: any free port; the coordinator is told which).
	MetricsAddr string
	// Client carries the control protocol's timings (AttemptTimeout,
	// HeartbeatInterval); zero: coordinator.DefaultClientConfig.
	Client coordinator.ClientConfig
	// Window is how many steps a node may train past the last committed step
	// before it waits for the coordinator (0: 8; less than
	// coordinator.MaxAhead, beyond which reports are dropped).
	Window int
	// JoinTimeout bounds opening the ring with the other ranks once the
	// assignment is known (0: 2 minutes): they may still be loading.
	JoinTimeout time.Duration
	// RejoinTimeout bounds the wait for the next generation after one ended
	// early (a member left or timed out, a ring peer stopped answering); 0:
	// 2 minutes. Without one the node stops with the error that ended it.
	RejoinTimeout time.Duration
	// WrapSync, when set, wraps the Reducer before the trainer gets it
	// (instrumentation, fault injection in tests).
	WrapSync func(s train.GradSync) train.GradSync
}

const defaultWindow = 8

// nameRE is what job and node IDs may be: NATS subject tokens.
var nameRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// Validate reports every problem at once, naming the field.
func (c ClusterConfig) Validate() error {
	var errs []error
	for _, f := range []struct{ name, v string }{{"node.job", c.Job}, {"node.id", c.ID}} {
		if !nameRE.MatchString(f.v) {
			errs = append(errs, fmt.Errorf("%s %q: want 1-64 letters, digits, '-' or '_'", f.name, f.v))
		}
	}
	if c.Version == "" {
		errs = append(errs, errors.New("node.version: empty"))
	}
	if c.Connect == nil {
		errs = append(errs, errors.New("node.connect: nil: a node needs NATS"))
	}
	if c.Lanes < 0 || c.Lanes > allreduce.MaxLanes {
		errs = append(errs, fmt.Errorf("node.lanes: %d: want 0..%d (0: 4)", c.Lanes, allreduce.MaxLanes))
	}
	if c.Threads < 0 {
		errs = append(errs, fmt.Errorf("node.threads: %d: want ≥ 0 (0: every CPU)", c.Threads))
	}
	if c.Window < 0 || c.Window >= coordinator.MaxAhead {
		errs = append(errs, fmt.Errorf("node.window: %d: want 0..%d (0: %d)", c.Window, coordinator.MaxAhead-1, defaultWindow))
	}
	if c.JoinTimeout < 0 || c.RejoinTimeout < 0 {
		errs = append(errs, fmt.Errorf("node.join_timeout %v, node.rejoin_timeout %v: want ≥ 0", c.JoinTimeout, c.RejoinTimeout))
	}
	if c.Allreduce != (allreduce.Config{}) {
		if err := c.Allreduce.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	if c.Client.AttemptTimeout < 0 || c.Client.HeartbeatInterval < 0 {
		errs = append(errs, errors.New("node.client: negative timings"))
	}
	if err := c.Train.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (c ClusterConfig) withDefaults() ClusterConfig {
	if c.Lanes == 0 {
		c.Lanes = 4
	}
	if c.Threads == 0 {
		c.Threads = runtime.GOMAXPROCS(0)
	}
	if c.Backend == "" {
		c.Backend = tensor.DefaultCPUKind()
	}
	if c.Allreduce == (allreduce.Config{}) {
		c.Allreduce = allreduce.DefaultConfig()
	}
	d := coordinator.DefaultClientConfig()
	if c.Client.AttemptTimeout == 0 {
		c.Client.AttemptTimeout = d.AttemptTimeout
	}
	if c.Client.HeartbeatInterval == 0 {
		c.Client.HeartbeatInterval = d.HeartbeatInterval
	}
	if c.Window == 0 {
		c.Window = defaultWindow
	}
	if c.JoinTimeout == 0 {
		c.JoinTimeout = 2 * time.Minute
	}
	if c.RejoinTimeout == 0 {
		c.RejoinTimeout = 2 * time.Minute
	}
	if c.Host == "" {
		h, err := os.Hostname()
		if err != nil {
			h = "node"
		}
		c.Host = fmt.Sprintf("%s/%d", h, os.Getpid())
	}
	return c
}

// ClusterResult is what a node did.
type ClusterResult struct {
	Summary train.Summary
	Gen     uint64 // the generation it trained in
	Rank    int
	World   int
	// Checkpoint is the newest checkpoint the coordinator committed, as this
	// node heard of it (nil: none).
	Checkpoint *coordinator.Manifest
}

// ErrRefused wraps the coordinator's refusal to admit a node; the error names
// the spec field that differs (crdgo_version, recipe_hash, dataset_hash).
var ErrRefused = errors.New("node: refused by the coordinator")

// RunCluster runs one node of a job until the job is done, failed or ctx
// ends. It returns when the coordinator has committed the last step and its
// checkpoint (the job is done); an error names what stopped it: a refused
// join (the field), a failed job (the coordinator's reason, naming a diverging
// rank), a generation that ended with no next one for this node. A
// generation that ends early (a member lost) is not an error: the node rolls
// back to the committed step and trains on in the next one.
//
// Cancelling ctx stops the node after a step every rank agrees on (rank 0
// saves a checkpoint of it); the node leaves the job and RunCluster returns
// ctx's error.
func RunCluster(ctx context.Context, cfg ClusterConfig, log *zap.Logger) (ClusterResult, error) {
	if err := cfg.Validate(); err != nil {
		return ClusterResult{}, err
	}
	cfg = cfg.withDefaults()
	log = log.With(zap.String("job", cfg.Job), zap.String("node", cfg.ID))
	// NATS first: a node without the right credentials stops at once.
	nc, err := cfg.Connect("crdgo-node-" + cfg.ID)
	if err != nil {
		return ClusterResult{}, fmt.Errorf("node %s: %w", cfg.ID, err)
	}
	defer nc.Close()
	rec := cfg.Train.Recipe
	rh, err := RecipeHash(rec)
	if err != nil {
		return ClusterResult{}, err
	}
	src, err := DatasetOf(ctx, cfg.Train)
	if err != nil {
		return ClusterResult{}, err
	}
	dh, err := DatasetHash(ctx, src, rec)
	if err != nil {
		return ClusterResult{}, err
	}
	met := newNodeMetrics()
	var ms *metricsServer
	if cfg.MetricsAddr != "" {
		if ms, err = serveMetrics(cfg.MetricsAddr, met, log); err != nil {
			return ClusterResult{}, err
		}
		defer ms.close()
	}
	ccfg := cfg.Client
	ccfg.Job, ccfg.Node, ccfg.Host, ccfg.Version, ccfg.RecipeHash, ccfg.DatasetHash = cfg.Job, cfg.ID, cfg.Host, cfg.Version, rh, dh
	if ms != nil {
		ccfg.Addr = ms.addr()
	}
	cl, err := coordinator.NewClient(nc, ccfg, log)
	if err != nil {
		return ClusterResult{}, err
	}
	n := &clusterNode{cfg: cfg, log: log, cl: cl, met: met, nc: nc}
	n.view.changed = make(chan struct{})
	return n.run(ctx)
}

// clusterNode is one RunCluster.
type clusterNode struct {
	cfg  ClusterConfig
	log  *zap.Logger
	cl   *coordinator.Client
	met  *nodeMetrics
	nc   *nats.Conn
	spec coordinator.Spec
	view view

	stopping atomic.Bool // the node's ctx ended: it stops after an agreed step

	mu        sync.Mutex
	reducer   *allreduce.Reducer
	gen       uint64                  // the generation being trained; 0: none yet
	cancelGen context.CancelCauseFunc // ends the collective operations of gen
	assign    coordinator.Assignment  // gen's
}

func (n *clusterNode) run(ctx context.Context) (res ClusterResult, err error) {
	if err := n.waitJob(ctx); err != nil {
		return res, err
	}
	j, err := n.cl.Join(ctx)
	if err != nil {
		var ce *coordinator.Error
		if errors.As(err, &ce) && errors.Is(err, coordinator.ErrRejected) {
			if ce.Field != "" {
				return res, fmt.Errorf("%w: node %s, job %s: %s differs: %s", ErrRefused, n.cfg.ID, n.cfg.Job, ce.Field, ce.Message)
			}
			return res, fmt.Errorf("%w: node %s, job %s: %s", ErrRefused, n.cfg.ID, n.cfg.Job, ce.Message)
		}
		return res, fmt.Errorf("node %s: joining job %s: %w", n.cfg.ID, n.cfg.Job, err)
	}
	n.spec = j.Spec
	n.log.Info("joined", zap.String("recipe", j.Spec.Recipe), zap.Int("global_batch", j.Spec.GlobalBatch),
		zap.Uint64("max_steps", j.Spec.MaxSteps), zap.Bool("waiting", j.Assignment == nil))
	tcfg, err := applySpec(n.cfg.Train, j.Spec)
	if err != nil {
		n.leave(ctx)
		return res, fmt.Errorf("node %s: job %s: %w", n.cfg.ID, n.cfg.Job, err)
	}
	if j.Assignment != nil {
		n.view.set(func(v *view) { v.assign = j.Assignment })
	}

	stopCtx := context.AfterFunc(ctx, func() { n.stopping.Store(true) })
	defer stopCtx()

	// Watch: heartbeats, assignments, committed steps, the job's end.
	wctx, stopWatch := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		err := n.cl.Watch(wctx, n.onUpdate)
		if wctx.Err() == nil {
			n.view.set(func(v *view) { v.watchErr = err })
			if !errors.Is(err, coordinator.ErrJobOver) {
				n.abort(fmt.Errorf("node %s: the coordinator's watch ended: %w", n.cfg.ID, err))
			}
		}
	}()
	defer func() {
		stopWatch()
		wg.Wait()
	}()

	a, err := n.waitAssignment(ctx)
	if err != nil {
		return res, err
	}
	sum, err := n.train(ctx, tcfg, a)
	res.Summary = sum
	n.mu.Lock()
	last := n.assign
	n.mu.Unlock()
	res.Gen, res.Rank, res.World = last.Gen, last.Rank, last.World
	if err != nil {
		if ctx.Err() != nil {
			n.leave(ctx)
			return res, ctx.Err()
		}
		return res, err
	}
	if err := n.waitDone(ctx); err != nil {
		return res, err
	}
	res.Checkpoint = n.view.snapshot().checkpoint
	return res, nil
}

// waitJob waits until the coordinator holds the job (a node may start before
// the coordinators have elected a leader and created it).
func (n *clusterNode) waitJob(ctx context.Context) error {
	start, said := time.Now(), time.Now()
	for {
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		st, err := n.cl.Status(actx)
		cancel()
		if err == nil && st.Spec != nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("node %s: waiting for job %s: %w (last: %v)", n.cfg.ID, n.cfg.Job, ctx.Err(), err)
		}
		if time.Since(said) >= 10*time.Second {
			n.log.Info("waiting for the coordinator to hold the job", zap.Duration("for", time.Since(start).Round(time.Second)), zap.Error(err))
			said = time.Now()
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond): // the coordinator is being started
		}
	}
}

// leave tells the coordinator this node is gone, so that it need not wait
// for the node's timeout.
func (n *clusterNode) leave(ctx context.Context) {
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := n.cl.Leave(lctx); err != nil {
		n.log.Warn("leaving the job", zap.Error(err))
	}
}

// applySpec makes the trainer's configuration the job's: its seed, global
// batch, last step and checkpoint schedule.
func applySpec(c train.Config, s coordinator.Spec) (train.Config, error) {
	if s.Recipe != c.Recipe.Name {
		return c, fmt.Errorf("recipe %q, the job's is %q", c.Recipe.Name, s.Recipe)
	}
	if s.MaxSteps == 0 {
		return c, fmt.Errorf("the job has no max_steps: a cluster job must end at a step (crdgo coordinator --max-steps)")
	}
	if s.MaxSteps > 1<<31 || s.CheckpointEvery > 1<<31 {
		return c, fmt.Errorf("max_steps %d, checkpoint_every %d: want at most 2^31", s.MaxSteps, s.CheckpointEvery)
	}
	c.Recipe.Seed = s.Seed
	c.Recipe.Schedule.Batch = s.GlobalBatch
	if err := c.Recipe.Validate(); err != nil {
		return c, fmt.Errorf("the job's global batch %d: %w", s.GlobalBatch, err)
	}
	c.MaxSteps = int(s.MaxSteps)
	c.CheckpointEvery = int(s.CheckpointEvery)
	return c, nil
}

// view is the job as this node last heard of it.
type view struct {
	mu         sync.Mutex
	changed    chan struct{} // closed and replaced on every change
	assign     *coordinator.Assignment
	committed  uint64
	status     coordinator.JobStatus
	reason     string
	checkpoint *coordinator.Manifest
	watchErr   error
	abortErr   error // why this node stops training
}

type viewState struct {
	assign     *coordinator.Assignment
	committed  uint64
	status     coordinator.JobStatus
	reason     string
	checkpoint *coordinator.Manifest
	watchErr   error
	abortErr   error
}

func (v *view) set(fn func(v *view)) {
	v.mu.Lock()
	defer v.mu.Unlock()
	fn(v)
	close(v.changed)
	v.changed = make(chan struct{})
}

func (v *view) snapshot() viewState {
	v.mu.Lock()
	defer v.mu.Unlock()
	return viewState{v.assign, v.committed, v.status, v.reason, v.checkpoint, v.watchErr, v.abortErr}
}

// wait blocks until cond holds for the view, ctx ends (its error) or every
// passes (then tick is called, and the wait goes on).
func (v *view) wait(ctx context.Context, every time.Duration, tick func(viewState), cond func(viewState) bool) error {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		v.mu.Lock()
		s := viewState{v.assign, v.committed, v.status, v.reason, v.checkpoint, v.watchErr, v.abortErr}
		ch := v.changed
		v.mu.Unlock()
		if cond(s) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		case <-t.C:
			tick(s)
		}
	}
}

// onUpdate runs on Watch's goroutine: it records the news and stops training
// when the job failed or a new generation opened.
func (n *clusterNode) onUpdate(u coordinator.Update) {
	n.view.set(func(v *view) {
		if u.Assignment != nil && (v.assign == nil || u.Assignment.Gen > v.assign.Gen) {
			v.assign = u.Assignment
		}
		v.committed = max(v.committed, u.Committed)
		if u.Status != "" {
			v.status, v.reason = u.Status, u.Reason
		}
		if u.Checkpoint != nil && (v.checkpoint == nil || u.Checkpoint.Step > v.checkpoint.Step) {
			mf := *u.Checkpoint
			v.checkpoint = &mf
		}
	})
	n.met.committed.Set(float64(u.Committed))
	n.mu.Lock()
	gen := n.gen
	n.mu.Unlock()
	switch {
	case u.Status == coordinator.Failed:
		n.abort(fmt.Errorf("node %s: job %s failed: %s", n.cfg.ID, n.cfg.Job, u.Reason))
	case u.Assignment != nil && gen != 0 && u.Assignment.Gen > gen && n.stopping.Load():
		// The others are stopping too (Ctrl-C on crdgo cluster up): this
		// node ends with them, after the step they agree on.
		n.log.Info("generation opened while stopping", zap.Uint64("gen", u.Assignment.Gen), zap.Int("world", u.Assignment.World))
	case u.Assignment != nil && gen != 0 && u.Assignment.Gen > gen:
		n.log.Info("generation opened: this one ends", zap.Uint64("gen", u.Assignment.Gen), zap.Int("world", u.Assignment.World),
			zap.Uint64("from_step", u.Assignment.Start))
		n.mu.Lock()
		cancel := n.cancelGen
		n.mu.Unlock()
		if cancel != nil {
			cancel(fmt.Errorf("generation %d opened (world %d, from step %d)", u.Assignment.Gen, u.Assignment.World, u.Assignment.Start))
		}
	}
}

// abort stops training: the first reason is kept, the Reducer closed, so the
// trainer's next collective operation fails at once.
func (n *clusterNode) abort(err error) {
	first := false
	n.view.set(func(v *view) {
		if v.abortErr == nil {
			v.abortErr, first = err, true
		}
	})
	if !first {
		return
	}
	n.log.Error("stopping", zap.Error(err))
	n.mu.Lock()
	rd := n.reducer
	n.mu.Unlock()
	if rd != nil {
		rd.Close()
	}
}

func (n *clusterNode) waitAssignment(ctx context.Context) (coordinator.Assignment, error) {
	start := time.Now()
	err := n.view.wait(ctx, 10*time.Second, func(s viewState) {
		n.log.Info("waiting for an assignment", zap.Duration("for", time.Since(start).Round(time.Second)))
	}, func(s viewState) bool {
		return s.assign != nil || s.abortErr != nil || s.status == coordinator.Done || s.status == coordinator.Failed
	})
	if err != nil {
		return coordinator.Assignment{}, fmt.Errorf("node %s: waiting for an assignment in job %s: %w", n.cfg.ID, n.cfg.Job, err)
	}
	s := n.view.snapshot()
	switch {
	case s.abortErr != nil:
		return coordinator.Assignment{}, s.abortErr
	case s.assign == nil:
		return coordinator.Assignment{}, fmt.Errorf("node %s: job %s is %s before this node trained: %s", n.cfg.ID, n.cfg.Job, s.status, s.reason)
	}
	a := *s.assign
	if err := checkAssignment(a, n.spec, n.cfg.ID, true); err != nil {
		return a, fmt.Errorf("node %s: %w", n.cfg.ID, err)
	}
	return a, nil
}

// checkAssignment verifies that the generation is one this node can train:
// the trainer's sampler cuts the global batch as coordinator.Split does, and
// the node's first generation starts from step 1: a node joins a job before its
// first step, or not at all (it would need the committed state; docs/cluster.md).
func checkAssignment(a coordinator.Assignment, s coordinator.Spec, id string, first bool) error {
	switch {
	case a.World < 1 || a.Rank < 0 || a.Rank >= a.World || len(a.Ring) != a.World || len(a.Hosts) != a.World:
		return fmt.Errorf("generation %d: rank %d of world %d with %d ring members and %d hosts", a.Gen, a.Rank, a.World, len(a.Ring), len(a.Hosts))
	case a.Ring[a.Rank] != id:
		return fmt.Errorf("generation %d: rank %d is %q, not this node", a.Gen, a.Rank, a.Ring[a.Rank])
	case a.GlobalBatch != s.GlobalBatch:
		return fmt.Errorf("generation %d: global batch %d, the job's is %d", a.Gen, a.GlobalBatch, s.GlobalBatch)
	case !slices.Equal(a.Split, coordinator.Split(s.GlobalBatch, a.World)):
		return fmt.Errorf("generation %d: batch split %v, the trainer's sampler cuts %v", a.Gen, a.Split, coordinator.Split(s.GlobalBatch, a.World))
	case first && a.Start != 1:
		return fmt.Errorf("generation %d starts at step %d: a node joins a job only before its first step; restart the job from its committed checkpoint to add nodes (docs/cluster.md)", a.Gen, a.Start)
	}
	return nil
}

// train builds the engine, trainer and Reducer and trains generation a, then
// every generation that follows while this node is a rank of it: when a
// generation ends before the job does (a member left or timed out, or a ring
// peer stopped answering), the node rolls its trainer back to the snapshot of
// the step the next generation starts after — the committed step — and
// trains on in the new ring (docs/cluster.md, "Generations").
func (n *clusterNode) train(ctx context.Context, tcfg train.Config, a coordinator.Assignment) (train.Summary, error) {
	cfg := n.cfg
	be := tensor.NewCPU(cfg.Backend, cfg.Threads)
	var ext train.Extras
	if cfg.Extras != nil {
		var err error
		if ext, err = cfg.Extras(be); err != nil {
			return train.Summary{}, err
		}
	}
	tcfg.Version = cfg.Version
	tr, err := train.New(tcfg, be, ext, n.log)
	if err != nil {
		return train.Summary{}, err
	}

	var conns []*nats.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := range cfg.Lanes {
		c, err := cfg.Connect(fmt.Sprintf("crdgo-node-%s-lane-%d", cfg.ID, i))
		if err != nil {
			return train.Summary{}, fmt.Errorf("node %s: allreduce lane %d: %w", cfg.ID, i, err)
		}
		conns = append(conns, c)
	}
	tp, err := allreduce.NewNATS(conns, allreduce.DefaultNATSConfig(), n.log)
	if err != nil {
		return train.Summary{}, err
	}
	rd, err := allreduce.New(tp, cfg.Allreduce, n.log)
	if err != nil {
		return train.Summary{}, err
	}
	n.mu.Lock()
	n.reducer = rd
	n.mu.Unlock()
	defer rd.Close()
	if s := n.view.snapshot(); s.abortErr != nil { // failed before the reducer was there to close
		return train.Summary{}, s.abortErr
	}
	var gs train.GradSync = rd
	if cfg.WrapSync != nil {
		gs = cfg.WrapSync(gs)
	}
	g := &genRun{tr: tr, rd: rd, sync: gs, snaps: []*train.Snapshot{tr.Snapshot()}}
	defer func() {
		if g.closeOut != nil {
			g.closeOut()
		}
	}()
	for {
		sum, err := n.trainGen(ctx, g, a)
		if err == nil && sum.Steps >= tcfg.MaxSteps {
			return sum, nil
		}
		if ctx.Err() != nil {
			return sum, err
		}
		if s := n.view.snapshot(); s.abortErr != nil {
			return sum, s.abortErr // the reason, rather than the closed Reducer it caused
		}
		newer := n.view.snapshot().assign
		switch {
		case err == nil: // another rank was asked to stop, and every rank stopped with it
			err = fmt.Errorf("node %s: the ring of generation %d stopped at step %d", cfg.ID, a.Gen, sum.Steps)
		case !g.ringFailed.Load() && (newer == nil || newer.Gen <= a.Gen):
			// This node's own failure (its disk, its data), not the ring's:
			// it leaves, so the others go on in the next generation without it.
			n.leave(ctx)
			return sum, err
		}
		next, werr := n.nextGeneration(ctx, a, err)
		if werr != nil {
			return sum, werr
		}
		from := int(next.Start) - 1
		i := slices.IndexFunc(g.snaps, func(s *train.Snapshot) bool { return s.Step() == from })
		if i < 0 {
			var have []int
			for _, s := range g.snaps {
				have = append(have, s.Step())
			}
			return sum, fmt.Errorf("node %s: generation %d starts after step %d, and this node kept the state of steps %v only", cfg.ID, next.Gen, from, have)
		}
		if err := tr.Restore(g.snaps[i]); err != nil {
			return sum, err
		}
		g.snaps = g.snaps[:i+1]
		g.lastSent = min(g.lastSent, uint64(from))
		n.log.Info("rolled back to the committed step for the next generation", zap.Int("step", from), zap.Uint64("gen", next.Gen),
			zap.Int("world", next.World), zap.Int("rank", next.Rank), zap.NamedError("ended_by", err))
		a = next
	}
}

// genRun is what a node keeps across generations.
type genRun struct {
	// ringFailed: a collective operation of the current generation failed
	// (a peer gone, the generation over), or its ring did not open. The
	// ring's failures wait for the next generation; the node's own end it.
	ringFailed atomic.Bool
	tr         *train.Trainer
	rd         *allreduce.Reducer
	sync       train.GradSync
	snaps      []*train.Snapshot // the committed step's state, then every later step's, ascending
	out        train.Output      // rank 0's, once this node has been rank 0
	closeOut   func()
	lastSent   uint64 // the newest step whose checkpoint manifest was sent
}

// genSync runs every collective operation of one generation under that
// generation's context: a new generation cancels it, so a step waiting on a
// ring that no longer exists ends at once.
type genSync struct {
	train.GradSync
	ctx    context.Context
	failed *atomic.Bool
}

func (s genSync) SumInPlace(_ context.Context, step uint64, phase string, buf []float32) error {
	err := s.GradSync.SumInPlace(s.ctx, step, phase, buf)
	if err != nil {
		s.failed.Store(true)
	}
	return err
}

// trainGen trains generation a until the job's last step or until the
// generation ends.
func (n *clusterNode) trainGen(ctx context.Context, g *genRun, a coordinator.Assignment) (train.Summary, error) {
	cfg := n.cfg
	log := n.log.With(zap.Uint64("gen", a.Gen), zap.Int("rank", a.Rank))
	n.met.assigned(a)
	gctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	n.mu.Lock()
	n.gen, n.cancelGen, n.assign = a.Gen, cancel, a
	n.mu.Unlock()
	if s := n.view.snapshot(); s.assign != nil && s.assign.Gen > a.Gen {
		g.ringFailed.Store(true)
		return train.Summary{}, fmt.Errorf("node %s: generation %d is over already", cfg.ID, a.Gen)
	}
	g.ringFailed.Store(false)
	if err := n.joinRing(ctx, g.rd, a); err != nil {
		g.ringFailed.Store(true)
		return train.Summary{}, err
	}
	rep := newReporter(n, a.Gen)
	opt := train.RunOptions{Sync: genSync{GradSync: g.sync, ctx: gctx, failed: &g.ringFailed}, OnStep: func(info train.StepInfo) error { return n.onStep(ctx, g, rep, info) }}
	if a.Rank == 0 && cfg.Output != nil {
		if g.out == nil {
			out, closeOut, err := cfg.Output(a.Start > 1)
			if err != nil {
				rep.close(time.Second)
				return train.Summary{}, err
			}
			g.out, g.closeOut = out, closeOut
		}
		opt.Output = &clusterOutput{Output: g.out, n: n, g: g, gen: a.Gen, ctx: ctx}
	}
	log.Info("training", zap.Int("world", a.World), zap.Strings("ring", a.Ring), zap.Uint64("from_step", a.Start),
		zap.Int("lo", a.Split[a.Rank].Lo), zap.Int("hi", a.Split[a.Rank].Hi))
	sum, runErr := g.tr.Run(ctx, opt)
	grace := time.Duration(0) // the reports of a finished run all go, however long the coordinator takes
	if ctx.Err() != nil || runErr != nil {
		grace = 5 * time.Second // stopping, or the generation is over: what the coordinator takes within this
	}
	repErr := rep.close(grace)
	if runErr != nil {
		if cause := context.Cause(gctx); cause != nil {
			runErr = fmt.Errorf("%w (%v)", cause, runErr)
		}
		return sum, fmt.Errorf("node %s (rank %d of generation %d): %w", cfg.ID, a.Rank, a.Gen, runErr)
	}
	return sum, repErr
}

// nextGeneration waits, after generation a ended early (why), for the
// coordinator to open the next one with this node as a rank.
func (n *clusterNode) nextGeneration(ctx context.Context, a coordinator.Assignment, why error) (coordinator.Assignment, error) {
	n.log.Warn("generation ended before the job: waiting for the next", zap.Uint64("gen", a.Gen), zap.Error(why))
	wctx, cancel := context.WithTimeout(ctx, n.cfg.RejoinTimeout)
	defer cancel()
	start := time.Now()
	err := n.view.wait(wctx, 10*time.Second, func(s viewState) {
		n.log.Info("waiting for the next generation", zap.Duration("for", time.Since(start).Round(time.Second)))
	}, func(s viewState) bool {
		return s.assign != nil && s.assign.Gen > a.Gen || s.abortErr != nil || s.watchErr != nil ||
			s.status == coordinator.Done || s.status == coordinator.Failed
	})
	s := n.view.snapshot()
	switch {
	case s.abortErr != nil:
		return coordinator.Assignment{}, s.abortErr
	case err != nil:
		return coordinator.Assignment{}, fmt.Errorf("%w; no next generation within %v", why, n.cfg.RejoinTimeout)
	case s.assign == nil || s.assign.Gen <= a.Gen:
		return coordinator.Assignment{}, fmt.Errorf("%w; then the job was %s %s", why, s.status, s.reason)
	}
	next := *s.assign
	if err := checkAssignment(next, n.spec, n.cfg.ID, false); err != nil {
		return next, fmt.Errorf("node %s: %w", n.cfg.ID, err)
	}
	return next, nil
}

// joinRing opens the ring of generation a, retrying while the other ranks
// are still starting, for up to JoinTimeout.
func (n *clusterNode) joinRing(ctx context.Context, rd *allreduce.Reducer, a coordinator.Assignment) error {
	g := allreduce.Group{Job: a.Job, Gen: a.Gen, Rank: a.Rank, Hosts: a.Hosts}
	deadline := time.Now().Add(n.cfg.JoinTimeout)
	for {
		err := rd.Join(ctx, g)
		if err == nil {
			return nil
		}
		if s := n.view.snapshot(); s.abortErr != nil {
			return s.abortErr
		}
		if ctx.Err() != nil || time.Now().After(deadline) || errors.Is(err, allreduce.ErrClosed) || errors.Is(err, allreduce.ErrStaleGeneration) {
			return fmt.Errorf("node %s: opening the ring of generation %d (rank %d of %d) within %v: %w", n.cfg.ID, a.Gen, a.Rank, a.World, n.cfg.JoinTimeout, err)
		}
		n.log.Debug("ring not open yet", zap.Error(err))
		select { // a failure that came at once is not retried in a busy loop
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// onStep runs after every step on the trainer's goroutine: it queues the
// step's report (with a parameter checksum every ChecksumEvery steps) and
// waits while the node is more than Window steps ahead of the committed step.
func (n *clusterNode) onStep(ctx context.Context, g *genRun, rep *reporter, info train.StepInfo) error {
	step := uint64(info.State.Step)
	r := coordinator.Report{Gen: rep.gen, Step: step, Losses: map[string]float64(info.Share),
		StepTime: info.Took.Seconds(), AllreduceTime: info.Sync.Seconds()}
	if every := n.spec.ChecksumEvery; every > 0 && step%every == 0 {
		r.Checksum = fmt.Sprintf("%016x", g.tr.Checksum())
	}
	n.met.stepped(step, info)
	if err := rep.send(ctx, r); err != nil {
		return err
	}
	// Keep this step's state until a later step is committed: a new
	// generation starts after the committed step, and this node rolls back
	// to it (ARCHITECTURE's double buffer, one snapshot per uncommitted step).
	g.snaps = append(g.snaps, g.tr.Snapshot())
	committed := n.view.snapshot().committed
	if i := slices.IndexFunc(g.snaps, func(s *train.Snapshot) bool { return uint64(s.Step()) >= committed }); i > 0 {
		if uint64(g.snaps[i].Step()) > committed {
			i-- // keep the newest one at or before the committed step
		}
		g.snaps = slices.Delete(g.snaps, 0, i)
	}
	if step <= uint64(n.cfg.Window) {
		return nil
	}
	start := time.Now()
	err := n.view.wait(ctx, 10*time.Second, func(s viewState) {
		n.log.Warn("waiting for the coordinator to commit", zap.Uint64("step", step), zap.Uint64("committed", s.committed),
			zap.Duration("for", time.Since(start).Round(time.Second)))
	}, func(s viewState) bool {
		return s.committed+uint64(n.cfg.Window) >= step || s.abortErr != nil || rep.failed() != nil ||
			s.assign != nil && s.assign.Gen > rep.gen
	})
	if err != nil && ctx.Err() != nil {
		// Asked to stop: the trainer ends every rank after the same step
		// (the stop travels with the step's losses); waiting here would not.
		return nil
	}
	if err != nil {
		return err
	}
	if err := rep.failed(); err != nil {
		return err
	}
	s := n.view.snapshot()
	if s.abortErr != nil {
		return s.abortErr
	}
	if s.assign != nil && s.assign.Gen > rep.gen {
		return fmt.Errorf("generation %d is over: generation %d opened", rep.gen, s.assign.Gen)
	}
	return nil
}

// waitDone waits, after the last step, until the coordinator has committed
// it and its checkpoint: the job is done.
func (n *clusterNode) waitDone(ctx context.Context) error {
	start := time.Now()
	err := n.view.wait(ctx, 10*time.Second, func(s viewState) {
		n.log.Info("waiting for the job to be done", zap.Uint64("committed", s.committed), zap.Duration("for", time.Since(start).Round(time.Second)))
	}, func(s viewState) bool {
		return s.status == coordinator.Done || s.status == coordinator.Failed || s.abortErr != nil || s.watchErr != nil
	})
	if err != nil {
		return fmt.Errorf("node %s: waiting for job %s to be done: %w", n.cfg.ID, n.cfg.Job, err)
	}
	s := n.view.snapshot()
	switch {
	case s.status == coordinator.Done:
		n.log.Info("job done", zap.Uint64("committed", s.committed))
		return nil
	case s.abortErr != nil:
		return s.abortErr
	case s.status == coordinator.Failed:
		return fmt.Errorf("node %s: job %s failed: %s", n.cfg.ID, n.cfg.Job, s.reason)
	}
	return fmt.Errorf("node %s: job %s: %w", n.cfg.ID, n.cfg.Job, s.watchErr)
}

// reporter sends a node's reports to the coordinator in step order, on a
// goroutine of its own, so a step does not wait for raft.
type reporter struct {
	n      *clusterNode
	gen    uint64
	ch     chan coordinator.Report
	done   chan struct{}
	ctx    context.Context // ends the report in flight when close gives up
	cancel context.CancelFunc

	mu  sync.Mutex
	err error
}

// droppedGrace bounds how long a node whose report was dropped waits to hear
// of the generation (or the end of the job) that made it stale.
const droppedGrace = 10 * time.Second

func newReporter(n *clusterNode, gen uint64) *reporter {
	r := &reporter{n: n, gen: gen, ch: make(chan coordinator.Report, 2*coordinator.MaxAhead), done: make(chan struct{})}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	go r.loop()
	return r
}

func (r *reporter) loop() {
	defer close(r.done)
	// Reports go on while the node's ctx ends: the coordinator should hear of
	// the steps taken. Each has the client's retries, bounded here.
	for rep := range r.ch {
		if r.failed() != nil || r.ctx.Err() != nil {
			continue
		}
		ctx, cancel := context.WithTimeout(r.ctx, 2*time.Minute)
		err := r.n.cl.Report(ctx, rep)
		cancel()
		r.n.met.reported(err)
		switch {
		case err == nil, r.ctx.Err() != nil:
		case errors.Is(err, coordinator.ErrDropped):
			// A report of a generation that just ended is dropped; the news
			// of the next generation may reach this node's view a moment
			// after the reply does. Wait for it, bounded, before calling the
			// drop an error.
			over := func(s viewState) bool {
				return s.assign != nil && s.assign.Gen > r.gen || s.status == coordinator.Failed || s.status == coordinator.Done
			}
			wctx, wcancel := context.WithTimeout(r.ctx, droppedGrace)
			werr := r.n.view.wait(wctx, droppedGrace, func(viewState) {}, over)
			wcancel()
			if werr == nil {
				continue // the generation or the job is over; onUpdate stops training
			}
			r.setErr(fmt.Errorf("node %s: report of step %d: %w", r.n.cfg.ID, rep.Step, err))
		default:
			r.setErr(fmt.Errorf("node %s: report of step %d: %w", r.n.cfg.ID, rep.Step, err))
		}
	}
}

func (r *reporter) setErr(err error) {
	r.mu.Lock()
	if r.err == nil {
		r.err = err
	}
	r.mu.Unlock()
	r.n.abort(err)
}

func (r *reporter) failed() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

func (r *reporter) send(ctx context.Context, rep coordinator.Report) error {
	select {
	case r.ch <- rep:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// close sends what is queued and returns the first error. With grace > 0
// it gives up on what is not sent by then.
func (r *reporter) close(grace time.Duration) error {
	close(r.ch)
	defer r.cancel()
	if grace > 0 {
		select {
		case <-r.done:
		case <-time.After(grace):
			r.cancel()
			<-r.done
		}
	}
	<-r.done
	return r.failed()
}

// clusterOutput is rank 0's Output in a cluster: after the run folder wrote a
// checkpoint, its manifest goes to the coordinator, which commits it (the
// checkpoint exists only then); sample grids go to the live pages too.
type clusterOutput struct {
	train.Output
	n   *clusterNode
	g   *genRun // g.lastSent: the newest step whose manifest was sent
	gen uint64
	ctx context.Context
}

func (o *clusterOutput) Checkpoint(t *train.Trainer) (string, error) {
	dir, err := o.Output.Checkpoint(t)
	if err != nil {
		return dir, err
	}
	m, err := train.VerifyCheckpoint(dir)
	if err != nil {
		return dir, err
	}
	step := uint64(m.Step)
	if step <= o.g.lastSent {
		// The schedule saved this step again (an epoch ended right after a
		// periodic checkpoint): the coordinator keeps the first manifest.
		o.n.log.Warn("checkpoint of a step already committed: the coordinator keeps the first manifest", zap.Uint64("step", step), zap.String("dir", dir))
		return dir, nil
	}
	cm := coordinator.Manifest{Step: step, Recipe: m.Recipe, Version: m.Version}
	for _, f := range m.Files {
		cm.Files = append(cm.Files, coordinator.ManifestFile{Name: f.Name, Size: f.Size, SHA256: f.SHA256})
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(o.ctx), 2*time.Minute)
	defer cancel()
	if err := o.n.cl.CommitCheckpoint(ctx, o.gen, cm); err != nil {
		return dir, fmt.Errorf("node %s: commit of checkpoint %s: %w", o.n.cfg.ID, dir, err)
	}
	o.g.lastSent = step
	o.n.met.checkpoints.Inc()
	o.n.log.Info("checkpoint sent for commit", zap.Uint64("step", step), zap.String("dir", dir))
	return dir, nil
}

func (o *clusterOutput) Samples(step int, grid image.Image) error {
	if err := o.Output.Samples(step, grid); err != nil {
		return err
	}
	var b bytes.Buffer
	if err := png.Encode(&b, grid); err != nil {
		return err
	}
	if err := o.n.cl.PublishSample(uint64(step), b.Bytes()); err != nil {
		o.n.log.Debug("sample grid not published", zap.Error(err)) // the live page waits for the next
	}
	return nil
}
