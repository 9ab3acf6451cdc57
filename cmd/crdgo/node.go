package main

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/crdgo/crdgo/allreduce"
	"github.com/crdgo/crdgo/coordinator"
	"github.com/crdgo/crdgo/crd/tensor"
	"github.com/crdgo/crdgo/crd/train"
	"github.com/crdgo/crdgo/natsd"
	"github.com/crdgo/crdgo/node"
)

type nodeFlags struct {
	job, id, host, recipe, dataRoot, out, metricsAddr string
	lanes, workers, logEvery, sampleEvery, keep       int
	ringTimeout, heartbeat                            time.Duration
	nats                                              natsFlags
	engine                                            engineFlags
	pre                                               pretrainedFlags
}

func newNodeCmd(g *globalFlags) *cobra.Command { return nodeCmd(g, &nodeFlags{}) }

// nodeCmd parses into f (tests read it back).
func nodeCmd(g *globalFlags, f *nodeFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "node --job NAME --id ID [--nats URL …] [--recipe R --data-root DIR --out DIR]",
		Short: "Run one worker node of a cluster job",
		Long: `Run one worker of a job that a raft-elected coordinator runs (crdgo
coordinator): join the job (the coordinator checks this binary's version, the
recipe's hash and the dataset's hash, and refuses a difference naming the
field), wait for a rank, train on that rank's part of every global batch with
the other nodes' gradients summed by a ring allreduce over NATS, report every
step, and, as rank 0, write the checkpoints into --out, which the coordinator
commits. It ends when the job is done.

The job's spec sets the seed, the global batch, the last step and the
checkpoint schedule; the recipe and the data are this machine's, and must be
the job's. See docs/cluster.md.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.newLogger()
			if err != nil {
				return err
			}
			defer log.Sync()
			return runNode(cmd, f, log)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.job, "job", "", "job name (letters, digits, '-', '_')")
	fl.StringVar(&f.id, "id", "", "this node's ID in the job (letters, digits, '-', '_')")
	fl.StringVar(&f.host, "host", "", "how this node is named to its ring peers (default hostname/pid)")
	fl.StringVar(&f.recipe, "recipe", "demo", "recipe name or YAML file: must be the job's")
	fl.StringVar(&f.dataRoot, "data-root", "data", "folder holding the datasets (synthetic ones are generated here)")
	fl.StringVar(&f.out, "out", "", "run folder rank 0 writes checkpoints, samples and metrics into (default runs/<job>)")
	fl.StringVar(&f.metricsAddr, "metrics-addr", "127.0.0.1:9480", "serve /metrics and /healthz here (port 0: any free port; empty: none)")
	fl.IntVar(&f.lanes, "lanes", 4, "NATS connections of the allreduce")
	fl.DurationVar(&f.ringTimeout, "ring-timeout", allreduce.DefaultConfig().RingTimeout, "longest wait for a ring peer in the allreduce before the step fails")
	fl.DurationVar(&f.heartbeat, "heartbeat", coordinator.DefaultClientConfig().HeartbeatInterval, "heartbeat interval (well under the coordinator's --node-timeout)")
	fl.IntVar(&f.workers, "workers", 0, "image decoding goroutines (0: one per CPU)")
	fl.IntVar(&f.logEvery, "log-every", 10, "steps between metrics.jsonl lines (rank 0)")
	fl.IntVar(&f.sampleEvery, "sample-every", 200, "steps between sample grids (rank 0; also sent to the live page)")
	fl.IntVar(&f.keep, "keep", 3, "intact step checkpoints rank 0 keeps")
	f.nats.register(cmd)
	f.engine.register(cmd)
	f.pre.register(cmd, true)
	return cmd
}

// config builds the node's configuration from the flags; log receives the
// pretrained networks' warnings.
func (f *nodeFlags) config(cmd *cobra.Command, log *zap.Logger) (node.ClusterConfig, error) {
	var errs []error
	switch {
	case f.job == "":
		errs = append(errs, errFlag("--job", "needed: the job to join"))
	case f.id == "":
		errs = append(errs, errFlag("--id", "needed: this node's ID in the job"))
	}
	if isStoreURL(f.dataRoot) || isStoreURL(f.out) {
		errs = append(errs, errFlag("--data-root, --out", "store URLs are not supported by crdgo node yet: give local folders"))
	}
	if f.keep < 1 {
		errs = append(errs, fmt.Errorf("--keep %d: want ≥ 1", f.keep))
	}
	if f.lanes < 1 {
		errs = append(errs, fmt.Errorf("--lanes %d: want ≥ 1", f.lanes))
	}
	if f.ringTimeout <= 0 || f.heartbeat <= 0 {
		errs = append(errs, fmt.Errorf("--ring-timeout %v, --heartbeat %v: want > 0", f.ringTimeout, f.heartbeat))
	}
	ncfg, err := f.nats.config(cmd, "")
	errs = append(errs, err)
	rec, err := train.LoadRecipe(f.recipe)
	if err != nil {
		errs = append(errs, fmt.Errorf("--recipe: %w", err))
	}
	kind, threads, err := f.engine.kind()
	errs = append(errs, err)
	if err := errors.Join(errs...); err != nil {
		return node.ClusterConfig{}, err
	}
	out := f.out
	if out == "" {
		out = filepath.Join("runs", f.job)
	}
	cfg := node.ClusterConfig{
		Job: f.job, ID: f.id, Host: f.host, Version: versionString(),
		Train: train.Config{Recipe: rec, DataRoot: localPath(f.dataRoot), OutDir: localPath(out), RealStats: f.pre.realStats,
			LogEvery: f.logEvery, SampleEvery: f.sampleEvery, KeepCheckpoints: f.keep, Workers: f.workers},
		Lanes: f.lanes, Threads: threads, Backend: kind, MetricsAddr: f.metricsAddr,
		Allreduce: allreduce.DefaultConfig(),
		Connect: func(name string) (*nats.Conn, error) {
			c := ncfg
			c.Name = name
			return natsd.Connect(c, log)
		},
		Extras: func(be tensor.Backend) (train.Extras, error) { return f.pre.load(be, log) },
		Output: func(resume bool) (train.Output, func(), error) {
			dir := localPath(out)
			release, err := openRun(dir, log)
			if err != nil {
				return nil, nil, err
			}
			cps, err := train.Checkpoints(filepath.Join(dir, "checkpoints"))
			if err == nil && len(cps) > 0 && !resume {
				err = fmt.Errorf("--out %s already has checkpoints: a cluster job starts in a fresh run folder", out)
			}
			if err != nil {
				release()
				return nil, nil, err
			}
			return train.NewRunFolder(dir, nil, log), release, nil
		},
	}
	cfg.Allreduce.RingTimeout = f.ringTimeout
	cfg.Client = coordinator.DefaultClientConfig()
	cfg.Client.HeartbeatInterval = f.heartbeat
	return cfg, cfg.Validate()
}

func runNode(cmd *cobra.Command, f *nodeFlags, log *zap.Logger) error {
	cfg, err := f.config(cmd, log)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// The dataset must be there before its hash is taken; a synthetic one is
	// generated (the same bytes on every machine: it is seeded).
	if err := prepareData(ctx, cfg.Train.DataRoot, cfg.Train.Recipe, nil, log); err != nil {
		return err
	}
	res, err := node.RunCluster(ctx, cfg, log)
	if errors.Is(err, ctx.Err()) && ctx.Err() != nil {
		log.Info("interrupted: left the job", zap.Int("step", res.Summary.Steps))
		return nil
	}
	if err != nil {
		return err
	}
	fields := []zap.Field{zap.Int("steps", res.Summary.Steps), zap.Uint64("gen", res.Gen), zap.Int("rank", res.Rank), zap.Int("world", res.World)}
	if res.Checkpoint != nil {
		fields = append(fields, zap.Uint64("committed_checkpoint", res.Checkpoint.Step))
	}
	if res.Summary.Checkpoint != "" {
		fields = append(fields, zap.String("checkpoint", res.Summary.Checkpoint))
	}
	log.Info("job done", fields...)
	return nil
}
