// Package ringbench measures ring allreduce bandwidth over each transport of
// package allreduce, beside a raw TCP ring that bounds them all, with ranks as
// goroutines of one process or as separate processes. crdgo bench allreduce
// prints its results.
//
// Both modes run the same code: a parent starts an embedded NATS server and
// coordinates barriers over it; every rank (goroutine or process) sets up its own
// connections, reducer and, for nats-cluster, its own server, then times each run
// from the barrier's release to the end of its operation. A run takes as long as
// its slowest rank.
package ringbench

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/crdgo/crdgo/allreduce"
)

// Kind is what carries the ring.
type Kind string

const (
	// NATS: one central server (the parent's); ranks connect over TCP.
	NATS Kind = "nats"
	// NATSInProc: one central server in the process, ranks connected to it in
	// process, without sockets: the single-process deployment. Goroutines only.
	NATSInProc Kind = "nats-inproc"
	// NATSCluster: every rank carries its own server, routed into one cluster
	// with the others; each rank connects to its own server in process.
	NATSCluster Kind = "nats-cluster"
	// TCP: direct TCP between ring neighbours (addresses exchanged over NATS).
	TCP Kind = "tcp"
	// Raw: a TCP ring that only moves the bytes a ring allreduce moves, with no
	// framing and no arithmetic: the ceiling for the others on this machine.
	Raw Kind = "raw"
)

// Kinds lists every kind, in the order tables print them.
var Kinds = []Kind{Raw, TCP, NATS, NATSInProc, NATSCluster}

// Mode is how ranks run.
type Mode string

const (
	Goroutines Mode = "goroutines"
	Processes  Mode = "processes"
)

// Series is one measured configuration.
type Series struct {
	Kind    Kind             `json:"kind"`
	Mode    Mode             `json:"mode"`
	World   int              `json:"world"`
	Floats  int              `json:"floats"`
	Runs    int              `json:"runs"`   // timed runs
	Warmup  int              `json:"warmup"` // untimed runs before them
	Reducer allreduce.Config `json:"reducer"`
	Window  int              `json:"window"` // NATS credit window, frames
	Lanes   int              `json:"lanes"`  // NATS connections per rank, a link's frames striped over them
	// Compute, when > 0, adds the overlap measurement: Runs runs of a CPU-bound
	// loop of Compute iterations alone, then Runs runs of an allreduce with the
	// same loop running beside it.
	Compute int `json:"compute"`
}

// Validate reports every problem of s at once.
func (s Series) Validate() error {
	var errs []error
	if !slices.Contains(Kinds, s.Kind) {
		errs = append(errs, fmt.Errorf("kind %q: want one of %v", s.Kind, Kinds))
	}
	if s.Mode != Goroutines && s.Mode != Processes {
		errs = append(errs, fmt.Errorf("mode %q: want %s or %s", s.Mode, Goroutines, Processes))
	}
	if s.Kind == NATSInProc && s.Mode == Processes {
		errs = append(errs, fmt.Errorf("kind %s: ranks in separate processes cannot share an in-process server", s.Kind))
	}
	if s.World < 2 || s.World > 64 {
		errs = append(errs, fmt.Errorf("world %d: want 2..64", s.World))
	}
	if s.Floats < 1 {
		errs = append(errs, fmt.Errorf("floats %d: want >= 1", s.Floats))
	}
	if s.Runs < 1 || s.Warmup < 0 {
		errs = append(errs, fmt.Errorf("runs %d warmup %d: want runs >= 1, warmup >= 0", s.Runs, s.Warmup))
	}
	if s.Compute < 0 {
		errs = append(errs, fmt.Errorf("compute %d: want >= 0", s.Compute))
	}
	if err := s.Reducer.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := (allreduce.NATSConfig{Window: s.Window}).Validate(); err != nil {
		errs = append(errs, err)
	}
	if s.Lanes < 1 || s.Lanes > allreduce.MaxLanes {
		errs = append(errs, fmt.Errorf("lanes %d: want 1..%d", s.Lanes, allreduce.MaxLanes))
	}
	return errors.Join(errs...)
}

// Bytes is the size of the buffer reduced.
func (s Series) Bytes() int { return 4 * s.Floats }

// busFactor converts algorithm bandwidth to bus bandwidth: the ring moves
// 2(N-1)/N of the buffer over every link.
func (s Series) busFactor() float64 { return 2 * float64(s.World-1) / float64(s.World) }

// Result is a measured series.
type Result struct {
	Series
	Times   []time.Duration // each timed run: the slowest rank's time
	Compute []time.Duration // overlap: the loop alone
	Both    []time.Duration // overlap: allreduce and loop together
}

// Median is the median run time.
func (r Result) Median() time.Duration { return median(r.Times) }

// AlgBW is the algorithm bandwidth, bytes per second: buffer size / median time.
func (r Result) AlgBW() float64 { return float64(r.Bytes()) / r.Median().Seconds() }

// BusBW is the bus bandwidth, bytes per second: AlgBW x 2(N-1)/N, the rate at
// which each link carries data; comparable across world sizes and with a link's
// own bandwidth.
func (r Result) BusBW() float64 { return r.AlgBW() * r.busFactor() }

// OverlapEfficiency is the share of the shorter of allreduce and compute that
// running them together hid: (T_ar + T_c - T_both) / min(T_ar, T_c), from
// medians. 1 is perfect overlap, 0 none; 0 when not measured.
func (r Result) OverlapEfficiency() float64 {
	if len(r.Both) == 0 {
		return 0
	}
	ar, c, both := r.Median().Seconds(), median(r.Compute).Seconds(), median(r.Both).Seconds()
	return (ar + c - both) / min(ar, c)
}

func median(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// ParseKinds parses a comma-separated list of kinds ("all" for every kind).
func ParseKinds(s string) ([]Kind, error) {
	if s == "all" {
		return Kinds, nil
	}
	var out []Kind
	for _, f := range strings.Split(s, ",") {
		k := Kind(strings.TrimSpace(f))
		if !slices.Contains(Kinds, k) {
			return nil, fmt.Errorf("transport %q: want one of %v or all", k, Kinds)
		}
		out = append(out, k)
	}
	return out, nil
}

// computeLoop is the stand-in for a phase's computation: iters passes of a
// multiply-add over a buffer that stays in L1/L2, so it costs CPU, not memory
// bandwidth. It returns a value so the compiler keeps the work.
func computeLoop(iters int, scratch []float32) float32 {
	for range iters {
		for j := range scratch {
			scratch[j] = scratch[j]*0.999 + 0.001
		}
	}
	return scratch[0]
}

// CalibrateCompute returns the number of computeLoop iterations that take about d
// on this machine, one goroutine alone.
func CalibrateCompute(d time.Duration) int {
	scratch := make([]float32, computeFloats)
	iters := 16
	for {
		start := time.Now()
		computeLoop(iters, scratch)
		took := time.Since(start)
		if took > 20*time.Millisecond || iters > 1<<24 {
			per := took.Seconds() / float64(iters)
			return max(1, int(d.Seconds()/per))
		}
		iters *= 4
	}
}

const computeFloats = 16 << 10

// deadline bounds a whole series: generous, since a loaded machine is slow, but a
// stuck benchmark must end.
func deadline(ctx context.Context, s Series) (context.Context, context.CancelFunc) {
	per := 30*time.Second + time.Duration(s.Floats/1000)*time.Millisecond*time.Duration(s.World)
	return context.WithTimeout(ctx, per*time.Duration(2+s.Runs+s.Warmup+2*s.Runs*min(1, s.Compute)))
}
