package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/crdgo/crdgo/allreduce"
	"github.com/crdgo/crdgo/allreduce/ringbench"
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
	ranks, errR := parseInts(f.ranks, "--ranks")
	floats, errF := parseInts(f.floats, "--floats")
	kinds, errK := ringbench.ParseKinds(f.transports)
	var modes []ringbench.Mode
	var errM error
	for _, m := range strings.Split(f.modes, ",") {
		switch mode := ringbench.Mode(strings.TrimSpace(m)); mode {
		case ringbench.Goroutines, ringbench.Processes:
			modes = append(modes, mode)
		default:
			errM = fmt.Errorf("--modes: %q, want goroutines or processes", m)
		}
	}
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

	fmt.Fprintf(out, "crdgo bench allreduce: ring allreduce, median of %d runs after %d warm-up\n", f.runs, f.warmup)
	fmt.Fprintf(out, "machine: %s\n", machine())
	fmt.Fprintf(out, "frames: %d B payload + %d B header; NATS: %d lanes, window %d frames per lane; load average at start %s\n\n",
		f.chunkBytes, allreduce.HeaderSize, f.lanes, f.window, loadAverage())
	// Rows are printed as they are measured: the full matrix takes minutes.
	const row = "%-10s %2v %6s %-12s %9s %10s %10s %6s %6s\n"
	fmt.Fprintf(out, row, "mode", "N", "floats", "transport", "median ms", "algbw GB/s", "busbw GB/s", "vs tcp", "vs raw")
	var overlaps []ringbench.Result
	for _, mode := range modes {
		for _, n := range ranks {
			for _, nf := range floats {
				var tcp, raw float64
				for _, k := range kinds {
					if k == ringbench.NATSInProc && mode == ringbench.Processes {
						continue
					}
					s := ringbench.Series{
						Kind: k, Mode: mode, World: n, Floats: nf, Runs: f.runs, Warmup: f.warmup,
						Reducer: allreduce.Config{RingTimeout: f.timeout, ChunkBytes: f.chunkBytes},
						Window:  f.window, Lanes: f.lanes,
					}
					r, err := ringbench.Run(ctx, s, spawn, log)
					if err != nil && ctx.Err() != nil {
						return fmt.Errorf("bench allreduce: interrupted; the workers were stopped")
					}
					if err != nil {
						return err
					}
					bus := r.BusBW()
					switch k {
					case ringbench.TCP:
						tcp = bus
					case ringbench.Raw:
						raw = bus
					}
					fmt.Fprintf(out, row, mode, n, humanFloats(nf), k, millis(r.Median()),
						fmt.Sprintf("%.3f", r.AlgBW()/1e9), fmt.Sprintf("%.3f", bus/1e9), ratio(bus, tcp), ratio(bus, raw))
					if f.overlap && k != ringbench.Raw {
						// T_ar, T_c and T_both all come from this second run.
						d := f.compute
						if d == 0 {
							d = r.Median()
						}
						s.Compute = ringbench.CalibrateCompute(d)
						o, err := ringbench.Run(ctx, s, spawn, log)
						if err != nil {
							return err
						}
						overlaps = append(overlaps, o)
					}
				}
			}
		}
	}
	if len(overlaps) > 0 {
		what := "as long as the allreduce alone"
		if f.compute > 0 {
			what = f.compute.String()
		}
		fmt.Fprintf(out, "\noverlap: a CPU-bound loop, calibrated to %s on one idle core, runs beside each allreduce\n", what)
		const orow = "%-10s %2v %6s %-12s %12s %10s %8s %10s\n"
		fmt.Fprintf(out, orow, "mode", "N", "floats", "transport", "allreduce ms", "compute ms", "both ms", "efficiency")
		for _, r := range overlaps {
			fmt.Fprintf(out, orow, r.Mode, r.World, humanFloats(r.Floats), r.Kind, millis(r.Median()),
				millis(median(r.Compute)), millis(median(r.Both)),
				fmt.Sprintf("%.2f", r.OverlapEfficiency()))
		}
	}
	fmt.Fprintf(out, "\nload average at end %s (busbw = algbw x 2(N-1)/N; efficiency = (T_ar + T_c - T_both) / min(T_ar, T_c))\n", loadAverage())
	return nil
}

func median(d []time.Duration) time.Duration {
	r := ringbench.Result{Times: d}
	return r.Median()
}

// millis prints d in milliseconds, with three decimals below 10 ms (latency rows).
func millis(d time.Duration) string {
	ms := d.Seconds() * 1e3
	if ms < 10 {
		return fmt.Sprintf("%.3f", ms)
	}
	return fmt.Sprintf("%.1f", ms)
}

func ratio(x, base float64) string {
	if base == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", x/base)
}

// parseInts parses "2,4,8" or "1M,10M" (K = 1e3, M = 1e6).
func parseInts(s, flag string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		mul := 1
		switch {
		case strings.HasSuffix(f, "K"), strings.HasSuffix(f, "k"):
			mul, f = 1_000, f[:len(f)-1]
		case strings.HasSuffix(f, "M"), strings.HasSuffix(f, "m"):
			mul, f = 1_000_000, f[:len(f)-1]
		}
		v, err := strconv.Atoi(f)
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("%s: %q is not a positive count", flag, f)
		}
		out = append(out, v*mul)
	}
	return out, nil
}

func humanFloats(n int) string {
	switch {
	case n%1_000_000 == 0:
		return fmt.Sprintf("%dM", n/1_000_000)
	case n%1_000 == 0:
		return fmt.Sprintf("%dK", n/1_000)
	}
	return strconv.Itoa(n)
}

// machine names the CPU and what Go sees of it.
func machine() string {
	model := "unknown CPU"
	if fh, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
		fh.Close()
	}
	return fmt.Sprintf("%s, %d cores (GOMAXPROCS %d), %s/%s, %s", model, runtime.NumCPU(), runtime.GOMAXPROCS(0),
		runtime.GOOS, runtime.GOARCH, runtime.Version())
}

// loadAverage is the 1/5/15-minute load average: other work on the machine
// shows here, and in the numbers.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	fields := strings.Fields(string(b))
	if len(fields) < 3 {
		return "unknown"
	}
	return strings.Join(fields[:3], " ")
}
