package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"syscall"
	"time"

	"github.com/crdgo/crdgo/allreduce"
	"github.com/crdgo/crdgo/allreduce/ringbench"
	"github.com/crdgo/crdgo/bench"
	"github.com/spf13/cobra"
	"go.uber.org/zap"
)

type benchAllreduceFlags struct {
	ranks      string
	floats     string
	modes      string
	transports string
	full       bool
	runs       int
	warmup     int
	chunkBytes int
	window     int
	lanes      int
	timeout    time.Duration
	overlap    bool
	compute    time.Duration
	worker     string
}

func newBenchAllreduceCmd(g *globalFlags) *cobra.Command {
	f := &benchAllreduceFlags{}
	cmd := &cobra.Command{
		Use:   "allreduce",
		Short: "Ring allreduce bandwidth over NATS, direct TCP and a raw TCP ceiling",
		Long: `Measures ring allreduce (reduce-scatter + all-gather) of float32 buffers with
N ranks, as goroutines of this process or as separate processes, and prints
for each transport the median time over --runs runs (after --warmup), the
algorithm bandwidth algbw = bytes/time and the bus bandwidth
busbw = algbw x 2(N-1)/N, with ratios to direct TCP and to raw TCP, measured
in the same run.

Transports:
  raw           a TCP ring moving the same bytes, no framing or sums: the ceiling
  tcp           allreduce over direct TCP between neighbours
  nats          allreduce through one central nats-server, clients over TCP
  nats-inproc   one nats-server in this process, clients in process (goroutines only)
  nats-cluster  a nats-server per rank, routed into a cluster, client in process

The default matrix (N 2,4,8; 1M and 10M floats; goroutines) takes about a
minute on a 2-core machine; --full adds 25M floats and processes (a few
minutes). NATS links are striped over --lanes connections per rank: one
connection is one server goroutine and one client goroutine per link, which
caps a link at what one core copies. With
--overlap each series runs again, timing a CPU-bound loop (--compute long,
or as long as the allreduce) alone and beside the allreduce of the phase
before, and reports how much of the shorter one the overlap hid.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.newLogger()
			if err != nil {
				return err
			}
			defer log.Sync()
			if f.worker != "" {
				return ringbench.RunWorker(cmd.Context(), []byte(f.worker), cmd.OutOrStdout(), log)
			}
			return runBenchAllreduce(cmd.Context(), cmd.OutOrStdout(), g, f, log)
		},
	}
	def := allreduce.DefaultConfig()
	fl := cmd.Flags()
	fl.StringVar(&f.ranks, "ranks", "2,4,8", "world sizes N, comma-separated")
	fl.StringVar(&f.floats, "floats", "1M,10M", "buffer lengths in float32s, comma-separated (K=1e3, M=1e6)")
	fl.StringVar(&f.modes, "modes", "goroutines", "how ranks run: goroutines, processes or both (comma-separated)")
	fl.StringVar(&f.transports, "transports", "all", "transports, comma-separated: raw, tcp, nats, nats-inproc, nats-cluster, or all")
	fl.BoolVar(&f.full, "full", false, "the full matrix: N 2,4,8; 1M,10M,25M floats; goroutines and processes")
	fl.IntVar(&f.runs, "runs", 10, "timed runs per series (the median is reported)")
	fl.IntVar(&f.warmup, "warmup", 2, "untimed runs before the timed ones")
	fl.IntVar(&f.chunkBytes, "chunk-bytes", def.ChunkBytes, "payload bytes per frame (a multiple of 4)")
	fl.IntVar(&f.window, "window", allreduce.DefaultNATSConfig().Window, "NATS credit window per lane, frames")
	fl.IntVar(&f.lanes, "lanes", 4, "NATS connections per rank; a link's frames are striped over them")
	fl.DurationVar(&f.timeout, "ring-timeout", 30*time.Second, "allreduce ring timeout (every wait)")
	fl.BoolVar(&f.overlap, "overlap", false, "also measure overlap of allreduce with a CPU-bound loop")
	fl.DurationVar(&f.compute, "compute", 0, "length of the overlap loop, calibrated on one idle core (0: as long as the series' allreduce)")
	fl.StringVar(&f.worker, "worker", "", "run as a worker process with this spec (internal)")
	fl.MarkHidden("worker")
	return cmd
}

func runBenchAllreduce(ctx context.Context, out io.Writer, g *globalFlags, f *benchAllreduceFlags, log *zap.Logger) error {
	if f.full {
		f.ranks, f.floats, f.modes = "2,4,8", "1M,10M,25M", "goroutines,processes"
	}
	ranks, errR := ringbench.ParseCounts(f.ranks, "--ranks")
	floats, errF := ringbench.ParseCounts(f.floats, "--floats")
	kinds, errK := ringbench.ParseKinds(f.transports)
	modes, errM := ringbench.ParseModes(f.modes, "--modes")
	for _, err := range []error{errR, errF, errK, errM} {
		if err != nil {
			return err
		}
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("bench allreduce: find own binary for worker processes: %w", err)
	}
	// SIGINT and SIGTERM end the series: the workers get SIGTERM (a stopped one
	// SIGKILL 2 s later), and die with crdgo if it is killed outright.
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	spawn := func(ctx context.Context, spec []byte) *exec.Cmd {
		c := exec.CommandContext(ctx, exe, "bench", "allreduce", "--worker", string(spec),
			"--log-level", g.logLevel, "--log-format", g.logFormat)
		c.Stderr = os.Stderr
		c.Cancel = func() error { return c.Process.Signal(syscall.SIGTERM) }
		c.WaitDelay = 2 * time.Second
		dieWithParent(c)
		return c
	}
	m := ringbench.Matrix{
		Modes: modes, Worlds: ranks, Floats: floats, Kinds: kinds, Runs: f.runs, Warmup: f.warmup,
		Reducer: allreduce.Config{RingTimeout: f.timeout, ChunkBytes: f.chunkBytes},
		Window:  f.window, Lanes: f.lanes, Overlap: f.overlap, Compute: f.compute,
		Machine:     fmt.Sprintf("%s (GOMAXPROCS %d, %s)", bench.Machine(), runtime.GOMAXPROCS(0), runtime.Version()),
		LoadAverage: bench.LoadAverage,
	}
	return m.Run(ctx, out, spawn, log)
}
