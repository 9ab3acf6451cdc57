package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/crdgo/crdgo/crd/tensor"
	"github.com/crdgo/crdgo/crd/train"
	"github.com/crdgo/crdgo/node"
)

// DataParallelConfig is one configuration of the data-parallel benchmark:
// a recipe's training steps on Nodes workers in this process, one compute
// thread each.
type DataParallelConfig struct {
	Recipe         train.Recipe
	DataRoot       string
	Nodes          int
	Transport      string
	Backend        tensor.CPUKind
	Steps, Warmup  int
	ThreadsPerNode int
}

// DataParallelResult is what one run of a configuration measured. Times are
// per timed step, in ms, averaged over the ranks: Step is the step's wall
// time (loader wait, compute and collectives), Compute what the rank spent
// neither in a collective operation nor waiting for data, Allreduce the time
// in collective operations once every rank had arrived (moving data), Wait
// the time a rank spent in them waiting for the last rank to arrive (load
// imbalance, a slower rank), Data the time waiting for the loader.
type DataParallelResult struct {
	Nodes     int       `json:"nodes"`
	Transport string    `json:"transport"`
	Batch     int       `json:"batch"`
	Step      []float64 `json:"step_ms"`
	Compute   []float64 `json:"compute_ms"`
	Allreduce []float64 `json:"allreduce_ms"`
	Wait      []float64 `json:"wait_ms"`
	Data      []float64 `json:"data_ms"`
	PeakRSS   int64     `json:"peak_rss_bytes"`
}

// SamplesPerSecond is the global batch over the median step time.
func (r DataParallelResult) SamplesPerSecond() float64 {
	return float64(r.Batch) / (Median(r.Step) / 1e3)
}

// Merge pools another run's timed steps into r.
func (r *DataParallelResult) Merge(o DataParallelResult) {
	r.Step = append(r.Step, o.Step...)
	r.Compute = append(r.Compute, o.Compute...)
	r.Allreduce = append(r.Allreduce, o.Allreduce...)
	r.Wait = append(r.Wait, o.Wait...)
	r.Data = append(r.Data, o.Data...)
	r.PeakRSS = max(r.PeakRSS, o.PeakRSS)
}

// Median is the median of ms (0 for none).
func Median(ms []float64) float64 {
	s := slices.Clone(ms)
	slices.Sort(s)
	switch {
	case len(s) == 0:
		return 0
	case len(s)%2 == 1:
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// opTimes records when each rank entered and left each collective operation.
type opTimes struct {
	mu  sync.Mutex
	ops [][]opTime // by rank, in call order
}

type opTime struct {
	step         uint64
	arrive, done time.Time
}

// timedSync records every operation of one rank.
type timedSync struct {
	train.GradSync
	rank int
	rec  *opTimes
}

func (s *timedSync) SumInPlace(ctx context.Context, step uint64, phase string, buf []float32) error {
	start := time.Now()
	err := s.GradSync.SumInPlace(ctx, step, phase, buf)
	end := time.Now()
	if strings.HasPrefix(phase, "eval") {
		// The run's closing evaluation shares the last step's number but is
		// not part of its time (StepInfo.Sync).
		return err
	}
	s.rec.mu.Lock()
	s.rec.ops[s.rank] = append(s.rec.ops[s.rank], opTime{step, start, end})
	s.rec.mu.Unlock()
	return err
}

// RunDataParallel trains cfg.Warmup + cfg.Steps steps and times the last
// cfg.Steps. Every rank's collective operations are timed; an operation's
// i-th call on every rank is the same operation, so the time from a rank's
// arrival to the last rank's arrival is that rank's wait.
func RunDataParallel(ctx context.Context, cfg DataParallelConfig, log *zap.Logger) (DataParallelResult, error) {
	total := cfg.Warmup + cfg.Steps
	rec := &opTimes{ops: make([][]opTime, cfg.Nodes)}
	infos := make([][]train.StepInfo, cfg.Nodes)
	var mu sync.Mutex
	r := cfg.Recipe
	r.Eval.MaxImages = 1 // the run's closing evaluation is not timed: keep it short
	tcfg := train.Config{Recipe: r, DataRoot: cfg.DataRoot, OutDir: "", MaxSteps: total,
		LogEvery: total + 1, SampleEvery: total + 1, CheckpointEvery: total + 1, Workers: 1}
	lc := node.LocalConfig{
		Train: tcfg, Nodes: cfg.Nodes, Transport: cfg.Transport, Threads: cfg.Nodes * max(1, cfg.ThreadsPerNode), Backend: cfg.Backend,
		OnStep: func(rank int, _ *node.Worker, info train.StepInfo) error {
			mu.Lock()
			infos[rank] = append(infos[rank], info)
			mu.Unlock()
			return nil
		},
		WrapSync: func(rank int, s train.GradSync) train.GradSync { return &timedSync{GradSync: s, rank: rank, rec: rec} },
	}
	lc.Train.OutDir = "-" // no Output is given: nothing is written there
	if _, err := node.RunLocal(ctx, lc, log); err != nil {
		return DataParallelResult{}, err
	}
	res := DataParallelResult{Nodes: cfg.Nodes, Transport: cfg.Transport, Batch: cfg.Recipe.Schedule.Batch}
	if cfg.Nodes == 1 {
		res.Transport = "-"
	}
	// Wait per rank and step, from the arrivals at each operation.
	wait := make([]map[uint64]time.Duration, cfg.Nodes)
	for r := range wait {
		wait[r] = map[uint64]time.Duration{}
	}
	if cfg.Nodes > 1 {
		n := len(rec.ops[0])
		for r := range rec.ops {
			n = min(n, len(rec.ops[r]))
		}
		for k := range n {
			var last time.Time
			for r := range rec.ops {
				if a := rec.ops[r][k].arrive; a.After(last) {
					last = a
				}
			}
			for r := range rec.ops {
				o := rec.ops[r][k]
				wait[r][o.step] += last.Sub(o.arrive)
			}
		}
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1e3 }
	for s := cfg.Warmup; s < total; s++ {
		var step, compute, sync, wt, dt float64
		for r := range infos {
			if s >= len(infos[r]) {
				return res, fmt.Errorf("bench: rank %d reported %d steps; want %d", r, len(infos[r]), total)
			}
			in := infos[r][s]
			w := wait[r][uint64(in.State.Step)]
			step += ms(in.Took)
			compute += ms(in.Took - in.Sync - in.Data)
			sync += ms(in.Sync - w)
			wt += ms(w)
			dt += ms(in.Data)
		}
		n := float64(cfg.Nodes)
		res.Step = append(res.Step, step/n)
		res.Compute = append(res.Compute, compute/n)
		res.Allreduce = append(res.Allreduce, sync/n)
		res.Wait = append(res.Wait, wt/n)
		res.Data = append(res.Data, dt/n)
	}
	var err error
	res.PeakRSS, err = PeakRSS()
	return res, err
}

// DataParallelTable is `crdgo bench dataparallel`: the step of Recipe timed in
// fresh worker processes, one worker with one thread and two workers with one
// thread each over every transport, Repeats processes per configuration run
// alternately, printed as a markdown table with the scaling efficiency.
type DataParallelTable struct {
	Recipe     train.Recipe
	DataRoot   string
	Transports []string
	Backend    string
	Coretype   string // OPENBLAS_CORETYPE: auto, keep or a name (OpenBLASCoretype)
	Steps      int
	Warmup     int
	Repeats    int
	// Worker makes the command of one worker process, which prints one
	// DataParallelResult as JSON on stdout.
	Worker func(ctx context.Context, nodes int, transport string) *exec.Cmd
}

// Run measures the table and prints it to w.
func (t DataParallelTable) Run(ctx context.Context, w io.Writer) error {
	type conf struct {
		nodes     int
		transport string
	}
	confs := []conf{{1, "nats"}}
	for _, tr := range t.Transports {
		confs = append(confs, conf{2, tr})
	}
	coretype, says := OpenBLASCoretype(t.Coretype)
	loadStart := LoadAverage()
	results := make([]DataParallelResult, len(confs))
	for rep := range t.Repeats {
		for i, c := range confs {
			cmd := t.Worker(ctx, c.nodes, c.transport)
			cmd.Env = append(os.Environ(), ThreadEnv(c.nodes)...)
			if coretype != "" {
				cmd.Env = append(cmd.Env, "OPENBLAS_CORETYPE="+coretype)
			}
			var errb strings.Builder
			cmd.Stderr = &errb
			out, err := cmd.Output()
			if err != nil {
				return fmt.Errorf("bench dataparallel: %d workers over %s: %w\n%s", c.nodes, c.transport, err, errb.String())
			}
			var r DataParallelResult
			if err := json.Unmarshal(out, &r); err != nil {
				return fmt.Errorf("bench dataparallel: %d workers over %s: decode %q: %w", c.nodes, c.transport, out, err)
			}
			if rep == 0 {
				results[i] = r
			} else {
				results[i].Merge(r)
			}
		}
	}
	fmt.Fprintf(w, "machine: %s; load average %s at start, %s at end\n%s\n", Machine(), loadStart, LoadAverage(), says)
	fmt.Fprintf(w, "step: recipe %s (%s), global batch %d; one compute thread per worker; %d timed steps after %d warm-up per process, %d processes per configuration run alternately; medians over all their timed steps\n\n",
		t.Recipe.Name, t.Recipe.Description, t.Recipe.Schedule.Batch, t.Steps, t.Warmup, t.Repeats)
	fmt.Fprintln(w, "| workers | transport | samples/s | step ms | compute ms | allreduce ms | waiting ms | data ms | scaling | peak RSS |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|")
	base := results[0].SamplesPerSecond()
	for _, r := range results {
		scaling := "–"
		if r.Nodes > 1 {
			scaling = fmt.Sprintf("%.2f", r.SamplesPerSecond()/(float64(r.Nodes)*base))
		}
		fmt.Fprintf(w, "| %d | %s | %.1f | %.1f | %.1f | %.2f | %.2f | %.2f | %s | %s |\n", r.Nodes, r.Transport, r.SamplesPerSecond(),
			Median(r.Step), Median(r.Compute), Median(r.Allreduce), Median(r.Wait), Median(r.Data), scaling, MiB(r.PeakRSS))
	}
	fmt.Fprintln(w, "\nscaling: samples/s on N workers over N times samples/s on 1 (1.00 is perfect)")
	return nil
}

// LoadAverage is the 1/5/15-minute load average: other work on the machine
// shows here, and in a benchmark's numbers.
func LoadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	if f := strings.Fields(string(b)); len(f) >= 3 {
		return strings.Join(f[:3], " ")
	}
	return "unknown"
}
