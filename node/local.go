// Package node runs crdgo's workers. A worker owns a compute engine, a
// trainer and an allreduce Reducer; it drives the trainer's step loop on its
// part of every global batch, with the Reducer as the trainer's GradSync, so
// every replica — the online teacher discriminator included — applies the
// same update (docs/crd.md, "Data-parallel training").
//
// RunLocal runs N workers in one process (crdgo train --nodes N) over an
// in-memory, embedded-NATS or direct-TCP transport. RunCluster runs one
// worker of a cluster job (crdgo node): it joins a job that a raft-elected
// coordinator runs, trains its rank of every generation over NATS and
// reports every step (docs/cluster.md).
package node

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/crdgo/crdgo/allreduce"
	"github.com/crdgo/crdgo/coordinator"
	"github.com/crdgo/crdgo/crd/data"
	"github.com/crdgo/crdgo/crd/tensor"
	"github.com/crdgo/crdgo/crd/train"
	"github.com/crdgo/crdgo/natsd"
)

// Transports are the names LocalConfig.Transport accepts.
var transports = []string{"nats", "mem", "tcp"}

// Transports returns the transport names, the default first.
func Transports() []string { return append([]string(nil), transports...) }

// LocalConfig is a data-parallel run of N workers in one process.
type LocalConfig struct {
	// Train is every worker's trainer configuration (the same on all).
	Train train.Config
	// Nodes is the number of workers, 1 to the recipe's global batch.
	Nodes int
	// Transport carries the allreduce: "nats" (an embedded NATS server, the
	// default), "mem" (shared memory) or "tcp" (direct TCP between ring
	// neighbours, addresses exchanged over the embedded NATS server).
	Transport string
	// Lanes is the number of NATS connections per worker (0: 4).
	Lanes int
	// Threads is the total number of compute threads (0: GOMAXPROCS); each
	// worker's engine gets Threads/Nodes of them, at least 1.
	Threads int
	// Backend is the CPU backend kind ("": the default).
	Backend tensor.CPUKind
	// Allreduce configures the Reducers (zero value: allreduce.DefaultConfig).
	Allreduce allreduce.Config
	// Checkpoint, when not empty, is the checkpoint every worker starts from.
	Checkpoint string
	// Extras loads a worker's pretrained networks (VGG, Inception) onto its
	// engine; nil: none. Every worker evaluates its part of the images.
	Extras func(rank int, be tensor.Backend) (train.Extras, error)
	// Output is rank 0's Output (nil: nothing is written).
	Output train.Output
	// BeforeStep and OnStep, when set, are called before and after every
	// step of every worker, from that worker's goroutine.
	BeforeStep func(rank int, w *Worker, b *data.Batch) error
	OnStep     func(rank int, w *Worker, info train.StepInfo) error
	// WrapSync, when set, wraps each worker's Reducer before the trainer gets
	// it: instrumentation (the data-parallel benchmark times every
	// operation) and fault injection in tests.
	WrapSync func(rank int, s train.GradSync) train.GradSync
}

// Validate reports every problem at once, naming the field.
func (c LocalConfig) Validate() error {
	var errs []error
	batch := c.Train.Recipe.Schedule.Batch
	switch {
	case c.Nodes < 1:
		errs = append(errs, fmt.Errorf("nodes: %d: want 1 to %d (the global batch)", c.Nodes, batch))
	case c.Nodes > batch:
		errs = append(errs, fmt.Errorf("nodes: %d workers for a global batch of %d: want 1 to %d (raise the batch)", c.Nodes, batch, batch))
	}
	if c.Transport != "" && !contains(transports, c.Transport) {
		errs = append(errs, fmt.Errorf("transport: %q: want one of %s", c.Transport, strings.Join(transports, ", ")))
	}
	if c.Lanes < 0 {
		errs = append(errs, fmt.Errorf("lanes: %d: want ≥ 0 (0: 4)", c.Lanes))
	}
	if c.Threads < 0 {
		errs = append(errs, fmt.Errorf("threads: %d: want ≥ 0 (0: every CPU)", c.Threads))
	}
	if c.Allreduce != (allreduce.Config{}) {
		if err := c.Allreduce.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// Worker is one rank of a run: its engine, trainer and GradSync.
type Worker struct {
	Rank    int
	Backend tensor.Backend
	Trainer *train.Trainer
	Sync    train.GradSync
}

// RunLocal runs cfg.Nodes workers in this process until the schedule is done
// and returns rank 0's summary. With one node it is crdgo's one-process
// trainer, with no transport at all. The first worker that fails closes every
// Reducer, so the others stop at once rather than at their ring timeout; its
// error is the one returned.
func RunLocal(ctx context.Context, cfg LocalConfig, log *zap.Logger) (train.Summary, error) {
	if err := cfg.Validate(); err != nil {
		return train.Summary{}, err
	}
	if cfg.Transport == "" {
		cfg.Transport = transports[0]
	}
	if cfg.Allreduce == (allreduce.Config{}) {
		cfg.Allreduce = allreduce.DefaultConfig()
	}
	if cfg.Backend == "" {
		cfg.Backend = tensor.DefaultCPUKind()
	}
	threads := cfg.Threads
	if threads == 0 {
		threads = runtime.GOMAXPROCS(0)
	}
	per := max(1, threads/cfg.Nodes)

	workers := make([]*Worker, cfg.Nodes)
	for r := range workers {
		w, err := newWorker(cfg, r, per, log)
		if err != nil {
			return train.Summary{}, err
		}
		workers[r] = w
	}
	if cfg.Nodes == 1 {
		return runWorker(ctx, cfg, workers[0])
	}

	links, err := openTransports(cfg, log)
	if err != nil {
		return train.Summary{}, err
	}
	defer links.close()
	reducers := make([]*allreduce.Reducer, cfg.Nodes)
	defer func() {
		for _, rd := range reducers {
			if rd != nil {
				rd.Close()
			}
		}
	}()
	hosts := make([]string, cfg.Nodes)
	for r := range hosts {
		hosts[r] = fmt.Sprintf("worker-%d", r)
	}
	job := jobName(cfg.Train.Recipe.Name)
	errs := make([]error, cfg.Nodes)
	var wg sync.WaitGroup
	for r := range reducers {
		rd, err := allreduce.New(links.transports[r], cfg.Allreduce, log.With(zap.Int("rank", r)))
		if err != nil {
			return train.Summary{}, err
		}
		reducers[r] = rd
	}
	// Join concurrently: opening a ring link waits for the neighbour's.
	for r, rd := range reducers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[r] = rd.Join(ctx, allreduce.Group{Job: job, Gen: 1, Rank: r, Hosts: hosts})
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return train.Summary{}, fmt.Errorf("node: joining the ring of %d workers over %s: %w", cfg.Nodes, cfg.Transport, err)
	}
	var (
		mu    sync.Mutex
		first error
		sum   train.Summary
	)
	for r, w := range workers {
		w.Sync = reducers[r]
		if cfg.WrapSync != nil {
			w.Sync = cfg.WrapSync(r, w.Sync)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := runWorker(ctx, cfg, w)
			mu.Lock()
			defer mu.Unlock()
			if r == 0 {
				sum = s
			}
			if err == nil || first != nil {
				return
			}
			first = fmt.Errorf("node: worker %d: %w", r, err)
			if !errors.Is(err, context.Canceled) { // a stop request ends every rank after the same step
				for _, rd := range reducers {
					rd.Close() // the others fail now, not at their ring timeout
				}
			}
		}()
	}
	wg.Wait()
	return sum, first
}

// newWorker builds rank r's engine and trainer (fresh, or from the checkpoint).
func newWorker(cfg LocalConfig, r, threads int, log *zap.Logger) (*Worker, error) {
	be := tensor.NewCPU(cfg.Backend, threads)
	var ext train.Extras
	if cfg.Extras != nil {
		var err error
		if ext, err = cfg.Extras(r, be); err != nil {
			return nil, err
		}
	}
	wlog := log
	if cfg.Nodes > 1 {
		wlog = log.With(zap.Int("rank", r))
	}
	tr, err := train.New(cfg.Train, be, ext, wlog)
	if err != nil {
		return nil, err
	}
	if cfg.Checkpoint != "" {
		if err := tr.LoadCheckpoint(cfg.Checkpoint); err != nil {
			return nil, err
		}
	}
	return &Worker{Rank: r, Backend: be, Trainer: tr}, nil
}

func runWorker(ctx context.Context, cfg LocalConfig, w *Worker) (train.Summary, error) {
	opt := train.RunOptions{Sync: w.Sync}
	if w.Rank == 0 {
		opt.Output = cfg.Output
	}
	if cfg.BeforeStep != nil {
		opt.BeforeStep = func(b *data.Batch) error { return cfg.BeforeStep(w.Rank, w, b) }
	}
	if cfg.OnStep != nil {
		opt.OnStep = func(info train.StepInfo) error { return cfg.OnStep(w.Rank, w, info) }
	}
	return w.Trainer.Run(ctx, opt)
}

// jobName makes a recipe name a valid allreduce job name.
func jobName(recipe string) string { return coordinator.NameFrom(recipe, "local") }

// localLinks are the transports of one local run and what they need.
type localLinks struct {
	transports []allreduce.Transport
	server     *natsd.Server
	conns      []*nats.Conn
}

func openTransports(cfg LocalConfig, log *zap.Logger) (*localLinks, error) {
	l := &localLinks{transports: make([]allreduce.Transport, cfg.Nodes)}
	if cfg.Transport == "mem" {
		net := allreduce.NewMemNetwork(allreduce.DefaultNATSConfig().Window)
		for r := range l.transports {
			l.transports[r] = net
		}
		return l, nil
	}
	ncfg := natsd.DefaultConfig()
	if need := cfg.Allreduce.FrameBytes() + 4096; int(ncfg.MaxPayload) < need { // frames plus the NATS header block
		ncfg.MaxPayload = int32(need)
	}
	s, err := natsd.Start(ncfg, log.Named("natsd"))
	if err != nil {
		return nil, fmt.Errorf("node: embedded NATS server: %w", err)
	}
	l.server = s
	connect := func(r, i int) (*nats.Conn, error) {
		nc, err := s.Connect(nats.Name(fmt.Sprintf("crdgo worker %d lane %d", r, i)))
		if err != nil {
			return nil, err
		}
		l.conns = append(l.conns, nc)
		return nc, nil
	}
	lanes := cfg.Lanes
	if lanes == 0 {
		lanes = 4
	}
	for r := range l.transports {
		switch cfg.Transport {
		case "tcp":
			nc, err := connect(r, 0)
			if err != nil {
				l.close()
				return nil, err
			}
			t, err := allreduce.NewTCP(nc, allreduce.DefaultTCPConfig(), log.With(zap.Int("rank", r)))
			if err != nil {
				l.close()
				return nil, err
			}
			l.transports[r] = t
		default:
			var conns []*nats.Conn
			for i := range lanes {
				nc, err := connect(r, i)
				if err != nil {
					l.close()
					return nil, err
				}
				conns = append(conns, nc)
			}
			t, err := allreduce.NewNATS(conns, allreduce.DefaultNATSConfig(), log.With(zap.Int("rank", r)))
			if err != nil {
				l.close()
				return nil, err
			}
			l.transports[r] = t
		}
	}
	return l, nil
}

func (l *localLinks) close() {
	for _, nc := range l.conns {
		nc.Close()
	}
	if l.server != nil {
		l.server.Shutdown()
	}
}
