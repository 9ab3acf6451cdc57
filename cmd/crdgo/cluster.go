package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/crdgo/crdgo/allreduce"
	"github.com/crdgo/crdgo/coordinator"
	"github.com/crdgo/crdgo/crd/train"
	"github.com/crdgo/crdgo/internal/zaplevel"
	"github.com/crdgo/crdgo/launch"
	"github.com/crdgo/crdgo/natsd"
)

// newClusterCmd groups the operator's view of a running cluster.
func newClusterCmd(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cluster",
		Short: "Start a cluster on this machine (up), or look at a running one (status)",
	}
	cmd.AddCommand(newClusterStatusCmd(g), newClusterUpCmd(g))
	return cmd
}

func newClusterStatusCmd(g *globalFlags) *cobra.Command {
	var (
		job, httpURL string
		timeout      time.Duration
		asJSON       bool
		nf           natsFlags
	)
	cmd := &cobra.Command{
		Use:   "status --job NAME [--nats URL | --http http://HOST:PORT]",
		Short: "Print a job's members, leader, generation, step, samples/s and per-rank times",
		Long: `Ask any coordinator replica of a job for its status — over NATS (the
crdgo.<job>.ctl.status request, any replica answers) or over HTTP (GET /status
of one replica) — and print it as a table, or as JSON with --json.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.newLogger()
			if err != nil {
				return err
			}
			defer log.Sync()
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			var st coordinator.Status
			if httpURL != "" {
				st, err = coordinator.FetchStatus(ctx, httpURL)
			} else {
				ncfg, cerr := nf.config(cmd, "crdgo-cluster-status")
				if cerr != nil {
					return cerr
				}
				nc, cerr := natsd.Connect(ncfg, zaplevel.AtLeast(log, zap.WarnLevel))
				if cerr != nil {
					return cerr
				}
				defer nc.Close()
				st, err = coordinator.RequestStatus(ctx, nc, job, time.Second)
			}
			if err != nil {
				return err
			}
			if asJSON {
				b, err := jsonIndent(st)
				if err != nil {
					return err
				}
				_, err = cmd.OutOrStdout().Write(append(b, '\n'))
				return err
			}
			return st.WriteTable(cmd.OutOrStdout())
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&job, "job", "", "job name")
	fl.StringVar(&httpURL, "http", "", "ask this coordinator's HTTP endpoint instead of NATS (http://host:port)")
	fl.DurationVar(&timeout, "timeout", 10*time.Second, "give up after this long")
	fl.BoolVar(&asJSON, "json", false, "print the status as JSON")
	nf.register(cmd)
	cmd.PreRunE = func(cmd *cobra.Command, _ []string) error {
		if httpURL == "" && job == "" {
			return errFlag("--job", "needed to ask over NATS (or give --http)")
		}
		return nil
	}
	return cmd
}

// newNATSCmd runs an embedded NATS server: the cluster's message bus without
// installing nats-server.
func newNATSCmd(g *globalFlags) *cobra.Command {
	cfg := natsd.DefaultConfig()
	var (
		listen  string
		nkeys   string
		routes  string
		cluster string
		pw      secret
	)
	cmd := &cobra.Command{
		Use:   "nats [--listen HOST:PORT] [--user U --password-file F] [--nkeys U…,U…] [--tls-cert … --tls-key …]",
		Short: "Run a NATS server for the cluster (embedded nats-server)",
		Long: `Run the NATS server coordinators and nodes talk through, from this binary.
Require credentials on anything but a private loopback: --user with a password
(--password-file or $CRDGO_NATS_PASSWORD) and/or nkey users (--nkeys, their
public keys), and TLS with --tls-cert/--tls-key (--tls-ca with --tls-verify to
require client certificates). --cluster-listen and --routes join several such
servers into one NATS cluster.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.newLogger()
			if err != nil {
				return err
			}
			defer log.Sync()
			host, port, err := splitHostPort(listen)
			if err != nil {
				return errFlag("--listen", err.Error())
			}
			cfg.Host, cfg.Port = host, port
			if cfg.Password, err = pw.get(); err != nil {
				return err
			}
			if nkeys != "" {
				cfg.NKeys = strings.Split(nkeys, ",")
			}
			if cluster != "" {
				h, p, err := splitHostPort(cluster)
				if err != nil {
					return errFlag("--cluster-listen", err.Error())
				}
				cfg.Cluster.Name, cfg.Cluster.Host, cfg.Cluster.Port = "crdgo", h, p
				if routes != "" {
					cfg.Cluster.Routes = strings.Split(routes, ",")
				}
			}
			srv, err := natsd.Start(cfg, log)
			if err != nil {
				return err
			}
			defer srv.Shutdown()
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			<-ctx.Done()
			log.Info("stopping")
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&listen, "listen", "127.0.0.1:4222", "client listen address")
	fl.StringVar(&cfg.User, "user", "", "require this user (with a password)")
	pw.register(cmd, "password", "CRDGO_NATS_PASSWORD", "the user's password")
	fl.StringVar(&nkeys, "nkeys", "", "admit these nkey users: public keys U…, comma-separated")
	fl.StringVar(&cfg.TLS.Cert, "tls-cert", "", "server certificate (PEM)")
	fl.StringVar(&cfg.TLS.Key, "tls-key", "", "server key (PEM)")
	fl.StringVar(&cfg.TLS.CA, "tls-ca", "", "CA (PEM) client certificates must chain to, with --tls-verify")
	fl.BoolVar(&cfg.TLS.Verify, "tls-verify", false, "require and verify client certificates")
	fl.StringVar(&cluster, "cluster-listen", "", "listen for routes from other servers on HOST:PORT")
	fl.StringVar(&routes, "routes", "", "other servers' route URLs, nats-route://host:port,…")
	return cmd
}

type clusterUpFlags struct {
	coordinators, nodes, threads                    int
	recipe, dataRoot, out, job, httpHost, backend   string
	maxSteps, checkpointEvery, batch, checksumEvery int
	seed                                            uint64
	lanes, workers, logEvery, sampleEvery, keep     int
	ringTimeout, raftTimeout, nodeTimeout           time.Duration
	pre                                             pretrainedFlags
}

func newClusterUpCmd(g *globalFlags) *cobra.Command {
	f := &clusterUpFlags{}
	cmd := &cobra.Command{
		Use:   "up --coordinators 3 --nodes N --max-steps S [--recipe R --data-root DIR --out DIR …]",
		Short: "Run a whole cluster on this machine: NATS, the coordinators and the nodes, each its own process",
		Long: `Start the real cluster on loopback with one command: a NATS server (in this
process, with a password), --coordinators raft replicas (crdgo coordinator)
and --nodes worker nodes (crdgo node), each a child process of this binary,
logging into <out>/logs/. It ends when the job ends, with the job's status;
Ctrl-C stops every child. Rank 0 writes the run into --out as crdgo train
does, and its committed checkpoint is bit for bit the one crdgo train --nodes N
writes with the same flags. <out>/cluster.json says where everything is.
See docs/cluster.md.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.newLogger()
			if err != nil {
				return err
			}
			defer log.Sync()
			return runClusterUp(cmd, g, f, log)
		},
	}
	fl := cmd.Flags()
	fl.IntVar(&f.coordinators, "coordinators", 3, "coordinator replicas (1, 3 or 5)")
	fl.IntVar(&f.nodes, "nodes", 2, "worker nodes, 1 to the global batch")
	fl.StringVar(&f.job, "job", "", "job name (default: the recipe's)")
	fl.StringVar(&f.recipe, "recipe", "demo", "recipe name or YAML file")
	fl.StringVar(&f.dataRoot, "data-root", "data", "folder holding the datasets (synthetic ones are generated here)")
	fl.StringVar(&f.out, "out", "", "run folder (default runs/<job>-cluster); it must not hold an earlier run")
	fl.IntVar(&f.maxSteps, "max-steps", 0, "the job's last step (needed: a cluster job ends at a step)")
	fl.IntVar(&f.checkpointEvery, "checkpoint-every", 0, "steps between checkpoints (0: the recipe's save_latest_freq)")
	fl.IntVar(&f.batch, "batch", 0, "global batch size, split across the nodes (0: the recipe's)")
	fl.Uint64Var(&f.seed, "seed", 0, "seed (default: the recipe's)")
	fl.IntVar(&f.checksumEvery, "checksum-every", 0, "steps between the parameter checksums the coordinator compares (0: its default, 50)")
	fl.IntVar(&f.threads, "threads", 0, "compute threads per node (0: the CPUs shared out among the nodes)")
	fl.StringVar(&f.backend, "backend", "", "CPU backend of the nodes (default: crdgo node's)")
	fl.IntVar(&f.lanes, "lanes", 4, "NATS connections per node (allreduce)")
	fl.DurationVar(&f.ringTimeout, "ring-timeout", allreduce.DefaultConfig().RingTimeout, "longest wait for a ring peer in the allreduce before the step fails")
	fl.IntVar(&f.workers, "workers", 0, "image decoding goroutines per node (0: one per CPU)")
	fl.IntVar(&f.logEvery, "log-every", 10, "steps between metrics.jsonl lines")
	fl.IntVar(&f.sampleEvery, "sample-every", 200, "steps between sample grids")
	fl.IntVar(&f.keep, "keep", 3, "intact step checkpoints to keep")
	fl.StringVar(&f.httpHost, "http-host", "127.0.0.1", "where the coordinators' HTTP (live page) listens")
	fl.DurationVar(&f.raftTimeout, "raft-timeout", 500*time.Millisecond, "the coordinators' raft heartbeat and election timeout")
	fl.DurationVar(&f.nodeTimeout, "node-timeout", 10*time.Second, "a node not heard from this long is dropped from the job")
	f.pre.register(cmd, true)
	return cmd
}

func runClusterUp(cmd *cobra.Command, g *globalFlags, f *clusterUpFlags, log *zap.Logger) error {
	rec, err := train.LoadRecipe(f.recipe)
	if err != nil {
		return fmt.Errorf("--recipe: %w", err)
	}
	if batch := cmp.Or(f.batch, rec.Schedule.Batch); f.nodes > batch {
		return fmt.Errorf("--nodes %d: more nodes than the global batch of %d examples: want 1 to %d, or raise --batch", f.nodes, batch, batch)
	}
	bin, err := os.Executable()
	if err != nil {
		return fmt.Errorf("cluster up: this binary's path: %w", err)
	}
	job := f.job
	if job == "" {
		job = launch.JobName(f.recipe)
	}
	out := f.out
	if out == "" {
		out = filepath.Join("runs", job+"-cluster")
	}
	threads := f.threads
	if threads == 0 {
		threads = max(1, runtime.NumCPU()/max(1, f.nodes))
	}
	nodeArgs := []string{"--threads", strconv.Itoa(threads), "--lanes", strconv.Itoa(f.lanes), "--ring-timeout", f.ringTimeout.String(),
		"--workers", strconv.Itoa(f.workers), "--log-every", strconv.Itoa(f.logEvery), "--sample-every", strconv.Itoa(f.sampleEvery),
		"--keep", strconv.Itoa(f.keep)}
	for _, a := range []struct{ flag, v string }{{"--backend", f.backend}, {"--vgg", f.pre.vgg}, {"--inception", f.pre.inception}, {"--real-stats", f.pre.realStats}} {
		if a.v != "" {
			nodeArgs = append(nodeArgs, a.flag, a.v)
		}
	}
	cfg := launch.Config{
		Binary: bin, Out: out, Job: job, Coordinators: f.coordinators, Nodes: f.nodes,
		Recipe: f.recipe, DataRoot: f.dataRoot, MaxSteps: f.maxSteps, CheckpointEvery: f.checkpointEvery,
		Batch: f.batch, ChecksumEvery: f.checksumEvery, NodeArgs: nodeArgs,
		GlobalArgs: []string{"--log-format", g.logFormat, "--log-level", g.logLevel},
		HTTPHost:   f.httpHost, RaftTimeout: f.raftTimeout, NodeTimeout: f.nodeTimeout,
	}
	if cmd.Flags().Changed("seed") {
		cfg.Seed = &f.seed
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// The dataset is generated once, here, before the children hash it.
	if err := prepareData(ctx, localPath(f.dataRoot), rec, os.Stderr, log); err != nil {
		return err
	}
	err = launch.Run(ctx, cfg, cmd.OutOrStdout(), log)
	if errors.Is(err, context.Canceled) {
		log.Info("stopped: every process of the cluster has exited")
		return nil
	}
	return err
}
