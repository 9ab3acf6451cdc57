package node

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/crdgo/crdgo/allreduce"
	"github.com/crdgo/crdgo/coordinator"
	"github.com/crdgo/crdgo/crd/train"
	"github.com/crdgo/crdgo/natsd"
)

// The cluster node against a real coordinator (one raft replica in this
// process) on an embedded NATS server: what it computes equals RunLocal's N
// workers bit for bit; a replica that diverges fails the job naming its rank;
// a node that differs from the job is refused naming the field. The
// multi-process test (coordinators and nodes as separate processes, the raft
// leader killed) is in package launch.

type clusterHarness struct {
	t    *testing.T
	ns   *natsd.Server
	srv  *coordinator.Server
	nc   *nats.Conn
	spec coordinator.Spec
	rec  train.Recipe
	root string
}

// startCoordinator starts NATS and one coordinator replica of a job on recipe
// r (its dataset under root), with the spec changed by edit.
func startCoordinator(t *testing.T, r train.Recipe, root string, edit func(*coordinator.Spec)) *clusterHarness {
	t.Helper()
	ns, err := natsd.Start(natsd.DefaultConfig(), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	rh, err := RecipeHash(r)
	if err != nil {
		t.Fatal(err)
	}
	src, err := train.LocalDataset(root, r)
	if err != nil {
		t.Fatal(err)
	}
	dh, err := DatasetHash(context.Background(), src, r)
	if err != nil {
		t.Fatal(err)
	}
	spec := coordinator.DefaultSpec()
	spec.Job, spec.Recipe, spec.RecipeHash, spec.Dataset, spec.DatasetHash = "t", r.Name, rh, r.Data.Dataset, dh
	spec.Seed, spec.GlobalBatch, spec.Version = r.Seed, r.Schedule.Batch, "test"
	if edit != nil {
		edit(&spec)
	}
	cfg := coordinator.DefaultConfig()
	cfg.Job, cfg.Spec, cfg.HTTPAddr = spec.Job, &spec, ""
	cfg.Raft.ID, cfg.Raft.Bootstrap = "c0", true
	cfg.NodeTimeout = time.Minute // the race detector's steps are slow; no test here times a node out
	nc, err := ns.Connect(nats.Name("c0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	srv, err := coordinator.Start(cfg, nc, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("coordinator close: %v", err)
		}
	})
	return &clusterHarness{t: t, ns: ns, srv: srv, nc: nc, spec: spec, rec: r, root: root}
}

// nodeConfig is node id's configuration; out is the run folder rank 0 writes.
func (h *clusterHarness) nodeConfig(id, out string) ClusterConfig {
	return ClusterConfig{
		Job: h.spec.Job, ID: id, Host: id, Version: "test",
		Train:   train.Config{Recipe: h.rec, DataRoot: h.root, OutDir: out, LogEvery: 1000, SampleEvery: 1000, Workers: 1},
		Connect: func(name string) (*nats.Conn, error) { return h.ns.Connect(nats.Name(name)) },
		Lanes:   2, Threads: 1, Backend: equivBackend,
		Allreduce: allreduce.Config{RingTimeout: time.Minute, ChunkBytes: allreduce.DefaultConfig().ChunkBytes},
		Output: func(bool) (train.Output, func(), error) {
			return train.NewRunFolder(out, nil, testLogger(h.t)), func() {}, nil
		},
		MetricsAddr: "127.0.0.1:0",
	}
}

// runNodes runs one node per config concurrently and returns their results.
func runNodes(ctx context.Context, t *testing.T, cfgs []ClusterConfig) ([]ClusterResult, []error) {
	res, errs := make([]ClusterResult, len(cfgs)), make([]error, len(cfgs))
	var wg sync.WaitGroup
	for i, c := range cfgs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res[i], errs[i] = RunCluster(ctx, c, testLogger(t))
		}()
	}
	wg.Wait()
	return res, errs
}

func manifestOf(t *testing.T, dir string) train.Manifest {
	t.Helper()
	m, err := train.VerifyCheckpoint(dir)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestClusterEqualsLocal: three nodes under the coordinator train what
// RunLocal's three workers over NATS train, bit for bit: the same checkpoint
// files at the last step. Every step is committed once, in order; every
// checksum step agreed (the job would have failed otherwise); the committed
// checkpoint is the one rank 0 wrote.
func TestClusterEqualsLocal(t *testing.T) {
	const nodes, steps, every = 3, 6, 3
	r := equivRecipe(t, "demo")
	root := t.TempDir()
	if _, err := train.PrepareData(context.Background(), root, r, nil, testLogger(t)); err != nil {
		t.Fatal(err)
	}
	h := startCoordinator(t, r, root, func(s *coordinator.Spec) {
		s.MinNodes, s.MaxSteps, s.CheckpointEvery, s.ChecksumEvery = nodes, steps, every, 2
	})
	out := t.TempDir()
	var cfgs []ClusterConfig
	for i := range nodes {
		cfgs = append(cfgs, h.nodeConfig(fmt.Sprintf("n%d", i), out))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	res, errs := runNodes(ctx, t, cfgs)
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	ranks := map[int]bool{}
	for i, r := range res {
		if r.Summary.Steps != steps || r.World != nodes || r.Gen != 1 {
			t.Errorf("node n%d: %d steps, world %d, gen %d; want %d, %d, 1", i, r.Summary.Steps, r.World, r.Gen, steps, nodes)
		}
		ranks[r.Rank] = true
	}
	if len(ranks) != nodes {
		t.Errorf("ranks %v: want %d distinct", ranks, nodes)
	}
	st, err := coordinator.RequestStatus(ctx, h.nc, h.spec.Job, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if st.Status != coordinator.Done || st.Committed != steps {
		t.Fatalf("job %s at step %d (%s); want done at %d", st.Status, st.Committed, st.Reason, steps)
	}
	for i, p := range st.History {
		if p.Step != uint64(i+1) {
			t.Fatalf("committed history %d is step %d: want steps 1..%d, each once", i, p.Step, steps)
		}
		if len(p.Losses) == 0 || p.World != nodes {
			t.Errorf("committed step %d: losses %v, world %d", p.Step, p.Losses, p.World)
		}
	}
	if len(st.History) != steps {
		t.Fatalf("committed history has %d steps; want %d", len(st.History), steps)
	}
	var committed []uint64
	for _, m := range st.Checkpoints {
		committed = append(committed, m.Step)
	}
	if fmt.Sprint(committed) != fmt.Sprint([]uint64{3, 6}) {
		t.Fatalf("committed checkpoints at steps %v; want [3 6]", committed)
	}
	got := manifestOf(t, filepath.Join(out, "checkpoints", fmt.Sprintf("step-%08d", steps)))
	last := st.Checkpoints[len(st.Checkpoints)-1]
	for i, f := range got.Files {
		if i >= len(last.Files) || last.Files[i].Name != f.Name || last.Files[i].SHA256 != f.SHA256 {
			t.Fatalf("committed manifest %v differs from rank 0's files %v", last.Files, got.Files)
		}
	}

	lout := t.TempDir()
	tcfg := cfgs[0].Train
	tcfg.OutDir, tcfg.MaxSteps, tcfg.CheckpointEvery, tcfg.Version = lout, steps, every, "test"
	losses := map[int]train.Losses{} // the global batch's, by step, from rank 0
	if _, err := RunLocal(ctx, LocalConfig{Train: tcfg, Nodes: nodes, Transport: "nats", Lanes: 2, Threads: nodes, Backend: equivBackend,
		Allreduce: cfgs[0].Allreduce, Output: train.NewRunFolder(lout, nil, testLogger(t)),
		OnStep: func(rank int, _ *Worker, info train.StepInfo) error {
			if rank == 0 {
				losses[info.State.Step] = info.Losses
			}
			return nil
		}}, testLogger(t)); err != nil {
		t.Fatal(err)
	}
	// The coordinator's committed losses are the sums of the ranks' shares:
	// the global batch's losses, up to the float32 sum in the ring.
	for _, p := range st.History {
		w := losses[int(p.Step)]
		if len(w) == 0 || len(p.Losses) != len(w) {
			t.Fatalf("step %d: committed losses %v; one process %v", p.Step, p.Losses, w)
		}
		for k, v := range w {
			if d := math.Abs(p.Losses[k] - v); d > 1e-5*math.Max(1, math.Abs(v)) {
				t.Errorf("step %d: committed %s = %g (summed shares); the global batch's is %g", p.Step, k, p.Losses[k], v)
			}
		}
	}
	want := manifestOf(t, filepath.Join(lout, "checkpoints", fmt.Sprintf("step-%08d", steps)))
	if len(got.Files) != len(want.Files) {
		t.Fatalf("cluster checkpoint has %d files, RunLocal's %d", len(got.Files), len(want.Files))
	}
	for i := range want.Files {
		if got.Files[i] != want.Files[i] {
			t.Errorf("checkpoint file %s: cluster %d bytes sha256 %.12s, RunLocal %d bytes %.12s; want the same bits",
				want.Files[i].Name, got.Files[i].Size, got.Files[i].SHA256, want.Files[i].Size, want.Files[i].SHA256)
		}
	}
}

// divergeAt makes one replica's summed gradient of one phase differ by an
// ulp at one step: its parameters diverge from the others'.
type divergeAt struct {
	train.GradSync
	step uint64
}

func (d *divergeAt) SumInPlace(ctx context.Context, step uint64, phase string, buf []float32) error {
	err := d.GradSync.SumInPlace(ctx, step, phase, buf)
	if step == d.step && phase == "D" {
		buf[len(buf)/2] = math.Nextafter32(buf[len(buf)/2], float32(math.Inf(1)))
	}
	return err
}

// TestClusterChecksumMismatch: a replica that diverges is caught at the next
// checksum step; the job fails naming its rank, and every node stops with
// that reason.
func TestClusterChecksumMismatch(t *testing.T) {
	const nodes = 3
	r := equivRecipe(t, "demo")
	root := t.TempDir()
	if _, err := train.PrepareData(context.Background(), root, r, nil, testLogger(t)); err != nil {
		t.Fatal(err)
	}
	h := startCoordinator(t, r, root, func(s *coordinator.Spec) {
		s.MinNodes, s.MaxSteps, s.CheckpointEvery, s.ChecksumEvery = nodes, 8, 0, 2
	})
	out := t.TempDir()
	var cfgs []ClusterConfig
	for i := range nodes {
		cfgs = append(cfgs, h.nodeConfig(fmt.Sprintf("n%d", i), out))
	}
	// The ring forms in join order: n0, n1, n2 join concurrently, so which
	// rank diverges is learnt from the assignment.
	bad := "n1"
	cfgs[1].WrapSync = func(s train.GradSync) train.GradSync { return &divergeAt{GradSync: s, step: 3} }
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	res, errs := runNodes(ctx, t, cfgs)
	rank := res[1].Rank
	want := fmt.Sprintf("rank %d (%s) has", rank, bad)
	for i, err := range errs {
		if err == nil || !strings.Contains(err.Error(), "parameter checksum mismatch at step 4") || !strings.Contains(err.Error(), want) {
			t.Errorf("node n%d: %v; want the job failed by a checksum mismatch at step 4 naming %q", i, err, want)
		}
	}
	st, err := coordinator.RequestStatus(ctx, h.nc, h.spec.Job, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if st.Status != coordinator.Failed || !strings.Contains(st.Reason, want) {
		t.Errorf("job %s: %q; want failed naming %q", st.Status, st.Reason, want)
	}
}

// TestClusterRefused: a node whose crdgo version, recipe or dataset differs
// from the job's is refused at join, and the error names the field.
func TestClusterRefused(t *testing.T) {
	r := equivRecipe(t, "demo")
	root := t.TempDir()
	if _, err := train.PrepareData(context.Background(), root, r, nil, testLogger(t)); err != nil {
		t.Fatal(err)
	}
	h := startCoordinator(t, r, root, func(s *coordinator.Spec) { s.MaxSteps = 2 })
	other := r
	other.Loss.Patch = 4
	altRoot := t.TempDir()
	if err := os.CopyFS(altRoot, os.DirFS(root)); err != nil {
		t.Fatal(err)
	}
	src, err := train.LocalDataset(altRoot, r)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := src.List(context.Background(), r.Data.Train)
	if err != nil || len(keys) == 0 {
		t.Fatalf("dataset copy: %v, %d files", err, len(keys))
	}
	dir, err := train.DatasetDir(altRoot, r)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, filepath.FromSlash(keys[0]))); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, field string
		edit        func(*ClusterConfig)
	}{
		{"version", "crdgo_version", func(c *ClusterConfig) { c.Version = "other" }},
		{"recipe", "recipe_hash", func(c *ClusterConfig) { c.Train.Recipe = other }},
		{"dataset", "dataset_hash", func(c *ClusterConfig) { c.Train.DataRoot = altRoot }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := h.nodeConfig("n0", t.TempDir())
			tt.edit(&cfg)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			_, err := RunCluster(ctx, cfg, testLogger(t))
			if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), tt.field+" differs") {
				t.Errorf("a node with another %s: %v; want refused naming %s", tt.name, err, tt.field)
			}
		})
	}
}

// crashAt makes a node fail at the end of a step: in the step's last
// collective operation (the losses, after every optimizer moved) it cancels
// the node (which then leaves the job) and returns an error, as if the
// process died. The other ranks have applied the step, which is not
// committed: they must roll it back.
type crashAt struct {
	train.GradSync
	step   uint64
	cancel context.CancelFunc
}

func (c *crashAt) SumInPlace(ctx context.Context, step uint64, phase string, buf []float32) error {
	if step == c.step && phase == "losses" {
		c.cancel()
		return errors.New("crashed")
	}
	return c.GradSync.SumInPlace(ctx, step, phase, buf)
}

// TestClusterNodeLost: a node that goes in the middle of a step ends the
// generation; the others roll back to the committed step, train on in the
// next generation (world 2, the same global batch) and finish the job:
// every step committed once, the checksums of the two replicas equal at
// every check.
func TestClusterNodeLost(t *testing.T) {
	const nodes, steps, lostAt = 3, 12, 6
	r := equivRecipe(t, "demo")
	root := t.TempDir()
	if _, err := train.PrepareData(context.Background(), root, r, nil, testLogger(t)); err != nil {
		t.Fatal(err)
	}
	h := startCoordinator(t, r, root, func(s *coordinator.Spec) {
		s.MinNodes, s.MaxSteps, s.CheckpointEvery, s.ChecksumEvery = nodes, steps, 4, 2
	})
	out := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	lostCtx, lose := context.WithCancel(ctx)
	defer lose()
	var cfgs []ClusterConfig
	for i := range nodes {
		cfgs = append(cfgs, h.nodeConfig(fmt.Sprintf("n%d", i), out))
	}
	// n2 joins last, so it is rank 2 (rank 0 writes the checkpoints).
	cfgs[2].WrapSync = func(s train.GradSync) train.GradSync { return &crashAt{GradSync: s, step: lostAt, cancel: lose} }
	res, errs := make([]ClusterResult, nodes), make([]error, nodes)
	var wg sync.WaitGroup
	for i, c := range cfgs {
		if i == 2 {
			waitForMembers(t, ctx, h, 2)
		}
		nctx := ctx
		if i == 2 {
			nctx = lostCtx
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			res[i], errs[i] = RunCluster(nctx, c, testLogger(t))
		}()
	}
	wg.Wait()
	for i := range 2 {
		if errs[i] != nil {
			t.Fatalf("node n%d: %v", i, errs[i])
		}
		if res[i].Gen != 2 || res[i].World != 2 || res[i].Summary.Steps != steps {
			t.Errorf("node n%d: gen %d world %d, %d steps; want gen 2 world 2, %d steps", i, res[i].Gen, res[i].World, res[i].Summary.Steps, steps)
		}
	}
	if !errors.Is(errs[2], context.Canceled) {
		t.Errorf("node n2: %v; want it stopped (context canceled)", errs[2])
	}
	st, err := coordinator.RequestStatus(ctx, h.nc, h.spec.Job, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if st.Status != coordinator.Done || st.Committed != steps || st.Gen.Gen != 2 {
		t.Fatalf("job %s at step %d in gen %d (%s); want done at %d in gen 2", st.Status, st.Committed, st.Gen.Gen, st.Reason, steps)
	}
	if len(st.History) != steps {
		t.Fatalf("committed history has %d steps; want %d", len(st.History), steps)
	}
	for i, p := range st.History {
		wantGen, wantWorld := uint64(1), nodes
		if p.Step >= st.Gen.Start {
			wantGen, wantWorld = 2, 2
		}
		if p.Step != uint64(i+1) || p.Gen != wantGen || p.World != wantWorld {
			t.Fatalf("committed point %d: step %d gen %d world %d; want step %d gen %d world %d", i, p.Step, p.Gen, p.World, i+1, wantGen, wantWorld)
		}
	}
	if st.Gen.Start > lostAt || st.Gen.Start < 2 {
		t.Errorf("generation 2 starts at step %d; want after a committed step before %d", st.Gen.Start, lostAt)
	}
	t.Logf("n2 lost in step %d; generation 2 (world 2) from step %d; done at %d", lostAt, st.Gen.Start, st.Committed)
	got := manifestOf(t, filepath.Join(out, "checkpoints", fmt.Sprintf("step-%08d", steps)))
	last := st.Checkpoints[len(st.Checkpoints)-1]
	if last.Step != steps || len(last.Files) != len(got.Files) {
		t.Fatalf("last committed checkpoint: step %d, %d files; rank 0 wrote %d", last.Step, len(last.Files), len(got.Files))
	}

	// The oracle: three workers to the committed step, then two from its
	// checkpoint to the end, in one process. The survivors rolled back to
	// exactly that state, so the bits are the same.
	from := int(st.Gen.Start) - 1
	tcfg := cfgs[0].Train
	tcfg.Version = "test"
	one, two := t.TempDir(), t.TempDir()
	local := func(dir string, nodes, maxSteps, every int, checkpoint string) {
		c := tcfg
		c.OutDir, c.MaxSteps, c.CheckpointEvery = dir, maxSteps, every
		if _, err := RunLocal(ctx, LocalConfig{Train: c, Nodes: nodes, Transport: "nats", Lanes: 2, Threads: nodes, Backend: equivBackend,
			Allreduce: cfgs[0].Allreduce, Checkpoint: checkpoint, Output: train.NewRunFolder(dir, nil, testLogger(t))}, testLogger(t)); err != nil {
			t.Fatal(err)
		}
	}
	local(one, nodes, from, 1000, "")
	local(two, 2, steps, 4, filepath.Join(one, "checkpoints", fmt.Sprintf("step-%08d", from)))
	want := manifestOf(t, filepath.Join(two, "checkpoints", fmt.Sprintf("step-%08d", steps)))
	for i := range want.Files {
		if i >= len(got.Files) || got.Files[i] != want.Files[i] {
			t.Errorf("checkpoint file %s: the cluster's differs from 3 workers to step %d, then 2 from its checkpoint: want the same bits", want.Files[i].Name, from)
		}
	}
}

// waitForMembers waits until the job has n live members, so that the next
// node to join takes rank n.
func waitForMembers(t *testing.T, ctx context.Context, h *clusterHarness, n int) {
	t.Helper()
	for {
		st, err := coordinator.RequestStatus(ctx, h.nc, h.spec.Job, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if len(st.Members) >= n {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%d members: not before %v", n, ctx.Err())
		case <-time.After(20 * time.Millisecond): // polling the coordinator's status under ctx
		}
	}
}

// failingOutput fails rank 0's first checkpoint: a failure of the node itself
// (its disk), not of the ring.
type failingOutput struct{ train.Output }

func (failingOutput) Checkpoint(*train.Trainer) (string, error) {
	return "", errors.New("disk full")
}

// TestClusterNodeFails: a node that fails on its own (rank 0 cannot write
// its checkpoint) leaves the job with its error; the others go on in the
// next generation, the node that was rank 1 becomes rank 0 and writes the
// run folder, and the job is done.
func TestClusterNodeFails(t *testing.T) {
	const nodes, steps = 3, 8
	r := equivRecipe(t, "demo")
	root := t.TempDir()
	if _, err := train.PrepareData(context.Background(), root, r, nil, testLogger(t)); err != nil {
		t.Fatal(err)
	}
	h := startCoordinator(t, r, root, func(s *coordinator.Spec) {
		s.MinNodes, s.MaxSteps, s.CheckpointEvery, s.ChecksumEvery = nodes, steps, 4, 2
	})
	// Under the coordinator's node timeout (a minute here): the others must
	// not have to wait for n0 to time out, n0 leaves.
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	outs := []string{t.TempDir(), t.TempDir(), t.TempDir()}
	var cfgs []ClusterConfig
	for i := range nodes {
		cfgs = append(cfgs, h.nodeConfig(fmt.Sprintf("n%d", i), outs[i]))
	}
	cfgs[0].Output = func(bool) (train.Output, func(), error) {
		return failingOutput{train.NewRunFolder(outs[0], nil, testLogger(t))}, func() {}, nil
	}
	res, errs := make([]ClusterResult, nodes), make([]error, nodes)
	var wg sync.WaitGroup
	for i, c := range cfgs {
		waitForMembers(t, ctx, h, i) // n0 joins first: rank 0
		wg.Add(1)
		go func() {
			defer wg.Done()
			res[i], errs[i] = RunCluster(ctx, c, testLogger(t))
		}()
	}
	wg.Wait()
	if errs[0] == nil || !strings.Contains(errs[0].Error(), "disk full") {
		t.Errorf("node n0: %v; want its own error (disk full)", errs[0])
	}
	for i := 1; i < nodes; i++ {
		if errs[i] != nil || res[i].Gen != 2 || res[i].World != 2 {
			t.Errorf("node n%d: gen %d world %d: %v; want done in gen 2 of world 2", i, res[i].Gen, res[i].World, errs[i])
		}
	}
	st, err := coordinator.RequestStatus(ctx, h.nc, h.spec.Job, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if st.Status != coordinator.Done || st.Committed != steps || len(st.History) != steps {
		t.Fatalf("job %s at step %d with %d committed points (%s); want done at %d", st.Status, st.Committed, len(st.History), st.Reason, steps)
	}
	// n1 became rank 0: its run folder has the last checkpoint.
	manifestOf(t, filepath.Join(outs[1], "checkpoints", fmt.Sprintf("step-%08d", steps)))
	t.Logf("n0 failed at its checkpoint; generation 2 from step %d; done at %d", st.Gen.Start, st.Committed)
}
