package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/crdgo/crdgo/coordinator"
	"github.com/crdgo/crdgo/crd/train"
	"github.com/crdgo/crdgo/natsd"
	"github.com/crdgo/crdgo/node"
)

type coordinatorFlags struct {
	id, raftAddr, raftAdvertise, raftDir, peers string
	join                                        bool
	httpAddr                                    string
	token                                       secret
	nodeTimeout, raftTimeout                    time.Duration
	nats                                        natsFlags

	job, recipe, recipeHash, dataset, datasetHash, version string
	dataRoot                                               string
	seed                                                   uint64
	batch, minNodes                                        int
	maxSteps, checkpointEvery, checksumEvery               uint64
}

func newCoordinatorCmd(g *globalFlags) *cobra.Command { return coordinatorCmd(g, &coordinatorFlags{}) }

// coordinatorCmd parses into f (tests read it back).
func coordinatorCmd(g *globalFlags, f *coordinatorFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "coordinator --id ID --raft-addr HOST:PORT (--peers ID=HOST:PORT,… | --join) --job NAME [--recipe …]",
		Short: "Run one replica of a job's raft-elected coordinator",
		Long: `Run one replica of the coordinator: a raft group (3 or 5 replicas) that admits
worker nodes, assigns generations (ring order and batch split), commits steps
and checkpoints, and serves the control API on NATS (crdgo.<job>.ctl.>) and
HTTP (/healthz, /status, /metrics, the live page at /).

A new group: start every replica with the same --peers list (each bootstraps
with it). A replica added later: --join asks the group's leader over NATS.
A single replica without either leads alone.

The job: --recipe and the other job flags on the replica(s) that may create it
(a replica started with a different job stops with an error). See docs/cluster.md.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.newLogger()
			if err != nil {
				return err
			}
			defer log.Sync()
			return runCoordinator(cmd, f, log)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.id, "id", "", "this replica's ID (letters, digits, '-', '_')")
	fl.StringVar(&f.raftAddr, "raft-addr", "127.0.0.1:7000", "raft TCP listen address")
	fl.StringVar(&f.raftAdvertise, "raft-advertise", "", "raft address the other replicas dial (default --raft-addr)")
	fl.StringVar(&f.raftDir, "raft-dir", "", "raft log and snapshots (default coordinator/<id>)")
	fl.StringVar(&f.peers, "peers", "", "bootstrap a new group of these replicas: id=host:port,… (this one included)")
	fl.BoolVar(&f.join, "join", false, "join an existing group: ask its leader over NATS to add this replica")
	fl.StringVar(&f.httpAddr, "http", "127.0.0.1:8480", "HTTP listen address for /status, /metrics and the live page (empty: none)")
	f.token.register(cmd, "http-token", "CRDGO_HTTP_TOKEN", "bearer token for state-changing HTTP endpoints (POST /stop)")
	fl.DurationVar(&f.raftTimeout, "raft-timeout", coordinator.DefaultRaftConfig().HeartbeatTimeout, "raft heartbeat and election timeout (lease: half): a lost leader is replaced in about 2-3 of these; raise it on slow or loaded links")
	fl.DurationVar(&f.nodeTimeout, "node-timeout", coordinator.DefaultConfig().NodeTimeout, "a node not heard from this long is dropped from the job")
	f.nats.register(cmd)

	spec := coordinator.DefaultSpec()
	fl.StringVar(&f.job, "job", "", "job name (letters, digits, '-', '_'): the NATS subjects' prefix")
	fl.StringVar(&f.recipe, "recipe", "", "recipe name or YAML file: creates the job with the flags below when the group has none")
	fl.StringVar(&f.recipeHash, "recipe-hash", "", "recipe hash nodes must match (default: computed from --recipe)")
	fl.StringVar(&f.dataset, "dataset", "", "dataset name (default: the recipe's)")
	fl.StringVar(&f.datasetHash, "dataset-hash", "", "dataset hash nodes must match (default: computed from the recipe's dataset under --data-root)")
	fl.StringVar(&f.dataRoot, "data-root", "", "folder holding the recipe's dataset, to compute --dataset-hash from (synthetic datasets are generated here)")
	fl.StringVar(&f.version, "crdgo-version", "", "crdgo version nodes must run (default: this binary's)")
	fl.Uint64Var(&f.seed, "seed", 0, "seed (default: the recipe's)")
	fl.IntVar(&f.batch, "batch", 0, "global batch B (default: the recipe's)")
	fl.IntVar(&f.minNodes, "min-nodes", spec.MinNodes, "nodes that must join before training starts")
	fl.Uint64Var(&f.maxSteps, "max-steps", 0, "the job is done at this step (0: no end)")
	fl.Uint64Var(&f.checkpointEvery, "checkpoint-every", 0, "steps between checkpoints (default: the recipe's save_latest_freq)")
	fl.Uint64Var(&f.checksumEvery, "checksum-every", spec.ChecksumEvery, "steps between parameter checksums the coordinator compares (0: none)")
	return cmd
}

// spec builds the job spec from the recipe and flags; nil without --recipe.
func (f *coordinatorFlags) spec(cmd *cobra.Command, log *zap.Logger) (*coordinator.Spec, error) {
	if f.recipe == "" {
		return nil, nil
	}
	rec, err := train.LoadRecipe(f.recipe)
	if err != nil {
		return nil, fmt.Errorf("--recipe: %w", err)
	}
	s := coordinator.DefaultSpec()
	s.Job, s.Recipe, s.RecipeHash = f.job, rec.Name, f.recipeHash
	if s.RecipeHash == "" {
		if s.RecipeHash, err = node.RecipeHash(rec); err != nil {
			return nil, err
		}
	}
	if f.datasetHash == "" && f.dataRoot != "" {
		ctx := cmd.Context()
		if ctx == nil { // parsed, not executed (tests)
			ctx = context.Background()
		}
		if f.datasetHash, err = datasetHash(ctx, f.dataRoot, rec, log); err != nil {
			return nil, fmt.Errorf("--data-root: %w", err)
		}
	}
	s.Dataset, s.DatasetHash, s.Version = rec.Data.Dataset, f.datasetHash, f.version
	if f.dataset != "" {
		s.Dataset = f.dataset
	}
	if s.Version == "" {
		s.Version = versionString()
	}
	s.Seed, s.GlobalBatch = rec.Seed, rec.Schedule.Batch
	if cmd.Flags().Changed("seed") {
		s.Seed = f.seed
	}
	if f.batch > 0 {
		s.GlobalBatch = f.batch
	}
	s.MinNodes, s.MaxSteps, s.ChecksumEvery = f.minNodes, f.maxSteps, f.checksumEvery
	s.CheckpointEvery = f.checkpointEvery
	if !cmd.Flags().Changed("checkpoint-every") && rec.Schedule.SaveLatestFreq > 0 {
		s.CheckpointEvery = uint64(rec.Schedule.SaveLatestFreq)
	}
	return &s, s.Validate()
}

func (f *coordinatorFlags) config(cmd *cobra.Command, log *zap.Logger) (coordinator.Config, error) {
	cfg := coordinator.DefaultConfig()
	cfg.Job, cfg.HTTPAddr, cfg.NodeTimeout, cfg.JoinRaft = f.job, f.httpAddr, f.nodeTimeout, f.join
	tok, err := f.token.get()
	if err != nil {
		return cfg, err
	}
	cfg.HTTPToken = tok
	if cfg.Spec, err = f.spec(cmd, log); err != nil {
		return cfg, err
	}
	r := &cfg.Raft
	r.ID, r.Bind, r.Advertise, r.Dir = f.id, f.raftAddr, f.raftAdvertise, f.raftDir
	r.HeartbeatTimeout, r.ElectionTimeout, r.LeaderLeaseTimeout = f.raftTimeout, f.raftTimeout, f.raftTimeout/2
	if r.Dir == "" {
		r.Dir = filepath.Join("coordinator", f.id)
	}
	if r.Peers, err = coordinator.ParsePeers(f.peers); err != nil {
		return cfg, fmt.Errorf("--peers: %w", err)
	}
	switch {
	case f.join && len(r.Peers) > 0:
		return cfg, fmt.Errorf("--join and --peers: give one (a new group bootstraps with --peers, a replica added later uses --join)")
	case !f.join:
		r.Bootstrap = true // with --peers, or alone
	}
	return cfg, cfg.Validate()
}

func runCoordinator(cmd *cobra.Command, f *coordinatorFlags, log *zap.Logger) error {
	cfg, err := f.config(cmd, log)
	if err != nil {
		return err
	}
	ncfg, err := f.nats.config(cmd, "crdgo-coordinator-"+f.id)
	if err != nil {
		return err
	}
	nc, err := natsd.Connect(ncfg, log)
	if err != nil {
		return err
	}
	defer nc.Close()
	srv, err := coordinator.Start(cfg, nc, log)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	select {
	case <-ctx.Done():
		log.Info("stopping")
		err = nil
	case err = <-srv.Fatal():
	}
	if cerr := srv.Close(); err == nil {
		err = cerr
	}
	if derr := nc.Drain(); derr != nil && err == nil {
		err = derr
	}
	return err
}

// datasetHash is node.DatasetHash of the recipe's dataset under root, which a
// synthetic recipe generates first: what the job's nodes will compute.
func datasetHash(ctx context.Context, root string, rec train.Recipe, log *zap.Logger) (string, error) {
	root = localPath(root)
	if err := prepareData(ctx, root, rec, nil, log); err != nil {
		return "", err
	}
	src, err := train.LocalDataset(root, rec)
	if err != nil {
		return "", err
	}
	return node.DatasetHash(ctx, src, rec)
}
