package ringbench

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/crdgo/crdgo/allreduce"
	"go.uber.org/zap"
)

// Matrix is the benchmark `crdgo bench allreduce` prints: every mode × world
// size × buffer length × transport, each a Series, with ratios to direct TCP
// and to the raw TCP ceiling measured in the same run (docs/allreduce.md).
type Matrix struct {
	Modes   []Mode
	Worlds  []int
	Floats  []int
	Kinds   []Kind
	Runs    int
	Warmup  int
	Reducer allreduce.Config
	Window  int
	Lanes   int
	// Overlap runs each series again with a CPU-bound loop beside the
	// allreduce; Compute is the loop's length (0: as long as the allreduce).
	Overlap bool
	Compute time.Duration
	// Machine names the computer in the header; LoadAverage, if set, reports
	// the load on it at the start and the end (other work shows in the numbers).
	Machine     string
	LoadAverage func() string
}

func (m Matrix) load() string {
	if m.LoadAverage == nil {
		return "unknown"
	}
	return m.LoadAverage()
}

// Run measures the matrix, printing each row as it is measured (the full
// matrix takes minutes). An interrupted run stops its workers and says so.
func (m Matrix) Run(ctx context.Context, out io.Writer, spawn Spawner, log *zap.Logger) error {
	fmt.Fprintf(out, "crdgo bench allreduce: ring allreduce, median of %d runs after %d warm-up\n", m.Runs, m.Warmup)
	fmt.Fprintf(out, "machine: %s\n", m.Machine)
	fmt.Fprintf(out, "frames: %d B payload + %d B header; NATS: %d lanes, window %d frames per lane; load average at start %s\n\n",
		m.Reducer.ChunkBytes, allreduce.HeaderSize, m.Lanes, m.Window, m.load())
	const row = "%-10s %2v %6s %-12s %9s %10s %10s %6s %6s\n"
	fmt.Fprintf(out, row, "mode", "N", "floats", "transport", "median ms", "algbw GB/s", "busbw GB/s", "vs tcp", "vs raw")
	var overlaps []Result
	for _, mode := range m.Modes {
		for _, n := range m.Worlds {
			for _, nf := range m.Floats {
				var tcp, raw float64
				for _, k := range m.Kinds {
					if k == NATSInProc && mode == Processes {
						continue
					}
					s := Series{
						Kind: k, Mode: mode, World: n, Floats: nf, Runs: m.Runs, Warmup: m.Warmup,
						Reducer: m.Reducer, Window: m.Window, Lanes: m.Lanes,
					}
					r, err := Run(ctx, s, spawn, log)
					if err != nil && ctx.Err() != nil {
						return fmt.Errorf("bench allreduce: interrupted; the workers were stopped")
					}
					if err != nil {
						return err
					}
					bus := r.BusBW()
					switch k {
					case TCP:
						tcp = bus
					case Raw:
						raw = bus
					}
					fmt.Fprintf(out, row, mode, n, HumanFloats(nf), k, millis(r.Median()),
						fmt.Sprintf("%.3f", r.AlgBW()/1e9), fmt.Sprintf("%.3f", bus/1e9), ratio(bus, tcp), ratio(bus, raw))
					if m.Overlap && k != Raw {
						// T_ar, T_c and T_both all come from this second run.
						d := m.Compute
						if d == 0 {
							d = r.Median()
						}
						s.Compute = CalibrateCompute(d)
						o, err := Run(ctx, s, spawn, log)
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
		if m.Compute > 0 {
			what = m.Compute.String()
		}
		fmt.Fprintf(out, "\noverlap: a CPU-bound loop, calibrated to %s on one idle core, runs beside each allreduce\n", what)
		const orow = "%-10s %2v %6s %-12s %12s %10s %8s %10s\n"
		fmt.Fprintf(out, orow, "mode", "N", "floats", "transport", "allreduce ms", "compute ms", "both ms", "efficiency")
		for _, r := range overlaps {
			fmt.Fprintf(out, orow, r.Mode, r.World, HumanFloats(r.Floats), r.Kind, millis(r.Median()),
				millis(median(r.Compute)), millis(median(r.Both)),
				fmt.Sprintf("%.2f", r.OverlapEfficiency()))
		}
	}
	fmt.Fprintf(out, "\nload average at end %s (busbw = algbw x 2(N-1)/N; efficiency = (T_ar + T_c - T_both) / min(T_ar, T_c))\n", m.load())
	return nil
}

// ParseCounts parses "2,4,8" or "1M,10M" (K = 1e3, M = 1e6); flag names the
// flag in the error.
func ParseCounts(s, flag string) ([]int, error) {
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

// ParseModes parses "goroutines,processes"; flag names the flag in the error.
func ParseModes(s, flag string) ([]Mode, error) {
	var modes []Mode
	for _, m := range strings.Split(s, ",") {
		switch mode := Mode(strings.TrimSpace(m)); mode {
		case Goroutines, Processes:
			modes = append(modes, mode)
		default:
			return nil, fmt.Errorf("%s: %q, want goroutines or processes", flag, m)
		}
	}
	return modes, nil
}

// HumanFloats prints a buffer length as 10M, 1K or 123.
func HumanFloats(n int) string {
	switch {
	case n%1_000_000 == 0:
		return fmt.Sprintf("%dM", n/1_000_000)
	case n%1_000 == 0:
		return fmt.Sprintf("%dK", n/1_000)
	}
	return strconv.Itoa(n)
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
