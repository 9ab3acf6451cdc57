package ringbench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/crdgo/crdgo/internal/zaplevel"
	"github.com/crdgo/crdgo/natsd"
	"github.com/nats-io/nats.go"
	"go.uber.org/zap"
)

// WorkerSpec is what one rank needs to take part in a series. The parent hands it
// to a worker process as JSON.
type WorkerSpec struct {
	Series
	Rank       int    `json:"rank"`
	Bench      string `json:"bench"`       // the series' id in subjects
	ControlURL string `json:"control_url"` // the parent's server
	ClusterURL string `json:"cluster_url"` // nats-cluster: the parent's route URL

	inproc *natsd.Server // nats-inproc: the parent's server itself
}

// Spawner returns the command that runs one worker process: the same binary,
// calling RunWorker with spec and writing what it returns to stdout.
type Spawner func(ctx context.Context, spec []byte) *exec.Cmd

// report is what a rank measured.
type report struct {
	Times   []time.Duration `json:"times"`
	Compute []time.Duration `json:"compute,omitempty"`
	Both    []time.Duration `json:"both,omitempty"`
}

// serverConfig is the embedded server of the parent and of nats-cluster ranks:
// room for the series' frames, and pending limits far above the credit window.
func serverConfig(s Series) natsd.Config {
	cfg := natsd.DefaultConfig()
	cfg.MaxPayload = int32(min(64<<20, max(8<<20, s.Reducer.FrameBytes())))
	cfg.MaxPending = max(64<<20, 4*int64(s.Window)*int64(s.Reducer.FrameBytes()))
	return cfg
}

// quiet keeps per-series notices (joined generation, server started) out of the
// benchmark's output; failures still come back as errors.
func quiet(log *zap.Logger) *zap.Logger { return zaplevel.AtLeast(log, zap.WarnLevel) }

// silent is the servers' logger: at the end of a series the ranks' servers stop in
// no particular order and the survivors log the routes they lose. A server's
// trouble during the runs shows as an allreduce error (a lost chunk, a timeout).
func silent(log *zap.Logger) *zap.Logger { return zaplevel.AtLeast(log, zap.DPanicLevel) }

// Run measures one series: it starts the parent's server and barrier, runs the
// ranks as goroutines or, through spawn, as processes, and combines their times.
// spawn may be nil in goroutine mode.
func Run(ctx context.Context, s Series, spawn Spawner, log *zap.Logger) (Result, error) {
	if err := s.Validate(); err != nil {
		return Result{}, err
	}
	if s.Mode == Processes && spawn == nil {
		return Result{}, fmt.Errorf("ringbench: %s mode needs a spawner", Processes)
	}
	ctx, cancel := deadline(ctx, s)
	defer cancel()

	cfg := serverConfig(s)
	if s.Kind == NATSCluster {
		cfg.Name = "parent"
		cfg.Cluster = natsd.ClusterConfig{Name: "ringbench", Port: -1}
	}
	srv, err := natsd.Start(cfg, silent(log))
	if err != nil {
		return Result{}, err
	}
	defer srv.Shutdown()
	nc, err := srv.Connect()
	if err != nil {
		return Result{}, err
	}
	defer nc.Close()
	id := strconv.FormatInt(time.Now().UnixNano(), 36)
	stop, missing, err := coordinate(ctx, nc, barrierSubject(id), s.World, s.Reducer.RingTimeout)
	if err != nil {
		return Result{}, err
	}
	defer stop()

	reports, err := runRanks(ctx, s, func(ctx context.Context, rank int, started func(pid int)) (report, error) {
		spec := WorkerSpec{Series: s, Rank: rank, Bench: id, ControlURL: srv.ClientURL(), ClusterURL: srv.ClusterURL()}
		if s.Kind == NATSInProc {
			spec.inproc = srv
		}
		if s.Mode == Goroutines {
			return runRank(ctx, spec, quiet(log).With(zap.Int("rank", rank)))
		}
		return runProcess(ctx, spawn, spec, started)
	}, missing)
	if err != nil {
		return Result{}, fmt.Errorf("ringbench: %s %s world %d floats %d: %w", s.Mode, s.Kind, s.World, s.Floats, err)
	}
	return combine(s, reports), nil
}

// runRanks runs every rank and waits for all of them. When one fails the others
// get the ring timeout (and a moment) to finish or fail on their own: a rank that
// does neither is stopped or hung, and it is what the error names first, since
// the ranks that failed did so because of it. Then the rest are cancelled
// (worker processes killed) and waited for.
func runRanks(ctx context.Context, s Series, run func(ctx context.Context, rank int, started func(pid int)) (report, error), missing func() []int) ([]report, error) {
	type outcome struct {
		rank int
		rep  report
		err  error
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var mu sync.Mutex
	pids := make([]int, s.World)
	done := make(chan outcome, s.World)
	var wg sync.WaitGroup
	for rank := range s.World {
		wg.Go(func() {
			rep, err := run(ctx, rank, func(pid int) {
				mu.Lock()
				pids[rank] = pid
				mu.Unlock()
			})
			done <- outcome{rank, rep, err}
		})
	}
	defer wg.Wait()

	grace := s.Reducer.RingTimeout + 2*replySlack
	reports := make([]report, s.World)
	finished := make([]bool, s.World)
	var failed []outcome
	var timeout <-chan time.Time
	var stuck []int
	for left := s.World; left > 0; {
		select {
		case o := <-done:
			left--
			finished[o.rank] = true
			reports[o.rank] = o.rep
			if o.err != nil {
				failed = append(failed, o)
				if timeout == nil && len(stuck) == 0 {
					t := time.NewTimer(grace)
					defer t.Stop()
					timeout = t.C
				}
			}
		case <-timeout:
			timeout = nil
			for rank, f := range finished {
				if !f {
					stuck = append(stuck, rank)
				}
			}
			cancel()
		}
	}
	if len(failed) == 0 {
		return reports, nil
	}
	var errs []error
	if len(stuck) > 0 {
		mu.Lock()
		var who []string
		for _, r := range stuck {
			who = append(who, fmt.Sprintf("rank %d (pid %d)", r, pids[r]))
		}
		mu.Unlock()
		errs = append(errs, fmt.Errorf("%s neither finished nor failed within %v of rank %d's failure: stopped or hung (killed)",
			strings.Join(who, ", "), grace, failed[0].rank))
	} else if miss := missing(); len(miss) > 0 {
		errs = append(errs, &MissingError{Ranks: miss, Timeout: s.Reducer.RingTimeout})
	}
	for _, o := range failed {
		if slices.Contains(stuck, o.rank) {
			continue // killed by us, after the diagnosis
		}
		errs = append(errs, fmt.Errorf("rank %d: %w", o.rank, o.err))
	}
	return nil, errors.Join(errs...)
}

// runProcess runs one worker process; started receives its pid. The last line
// the worker wrote to stderr (its error) comes back in the error.
func runProcess(ctx context.Context, spawn Spawner, spec WorkerSpec, started func(pid int)) (report, error) {
	js, err := json.Marshal(spec)
	if err != nil {
		return report{}, err
	}
	cmd := spawn(ctx, js)
	var out bytes.Buffer
	cmd.Stdout = &out
	tail := &tailBuffer{max: 2048}
	if cmd.Stderr != nil {
		cmd.Stderr = io.MultiWriter(cmd.Stderr, tail)
	} else {
		cmd.Stderr = tail
	}
	if err := cmd.Start(); err != nil {
		return report{}, fmt.Errorf("worker %s: %w", cmd.Path, err)
	}
	started(cmd.Process.Pid)
	if err := cmd.Wait(); err != nil {
		if msg := tail.lastLine(); msg != "" {
			return report{}, fmt.Errorf("worker pid %d: %w: %s", cmd.Process.Pid, err, msg)
		}
		return report{}, fmt.Errorf("worker pid %d: %w", cmd.Process.Pid, err)
	}
	var r report
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		return report{}, fmt.Errorf("worker report %q: %w", out.Bytes(), err)
	}
	if len(r.Times) != spec.Runs {
		return report{}, fmt.Errorf("worker reported %d runs, want %d", len(r.Times), spec.Runs)
	}
	return r, nil
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = append(t.b[:0], t.b[len(t.b)-t.max:]...)
	}
	return len(p), nil
}

// lastLine is the last non-empty line written.
func (t *tailBuffer) lastLine() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	lines := strings.Split(strings.TrimSpace(string(t.b)), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

// combine makes each run as long as its slowest rank.
func combine(s Series, reports []report) Result {
	slowest := func(get func(report) []time.Duration) []time.Duration {
		var out []time.Duration
		for i := range get(reports[0]) {
			var m time.Duration
			for _, r := range reports {
				m = max(m, get(r)[i])
			}
			out = append(out, m)
		}
		return out
	}
	return Result{
		Series:  s,
		Times:   slowest(func(r report) []time.Duration { return r.Times }),
		Compute: slowest(func(r report) []time.Duration { return r.Compute }),
		Both:    slowest(func(r report) []time.Duration { return r.Both }),
	}
}

func barrierSubject(id string) string { return "crdgo.ringbench." + id + ".barrier" }

// barrierMsg is a rank's arrival at a barrier round, with a string to share (its
// host name, its listener's address).
type barrierMsg struct {
	Rank  int    `json:"rank"`
	Round int    `json:"round"`
	Info  string `json:"info"`
}

// barrierReply answers a round: everyone's Info once all arrived, or the ranks
// that had not arrived when the round timed out.
type barrierReply struct {
	Infos   []string `json:"infos,omitempty"`
	Missing []int    `json:"missing,omitempty"`
}

// replySlack is how much longer a rank waits for the coordinator's answer than
// the coordinator waits for the round, so that a timed-out round is answered
// with the missing ranks rather than with a bare deadline.
const replySlack = time.Second

// MissingError says which ranks did not reach a barrier round in time: stopped,
// hung or failed.
type MissingError struct {
	Ranks   []int
	Timeout time.Duration
}

func (e *MissingError) Error() string {
	return fmt.Sprintf("rank %s did not arrive within the ring timeout (%v): stopped, hung or failed", joinInts(e.Ranks), e.Timeout)
}

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = strconv.Itoa(x)
	}
	return strings.Join(s, ", ")
}

// coordinate runs the barrier: once all world ranks have sent their request for a
// round, each gets the list of everyone's Info as the reply. A round not
// complete within timeout of its first arrival is answered with the ranks it
// lacks, and they are recorded for missing. stop ends it.
func coordinate(ctx context.Context, nc *nats.Conn, subj string, world int, timeout time.Duration) (stop func(), missing func() []int, err error) {
	sub, err := nc.SubscribeSync(subj)
	if err != nil {
		return nil, nil, err
	}
	if err := nc.Flush(); err != nil {
		sub.Unsubscribe()
		return nil, nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	var (
		mu     sync.Mutex
		absent []int // ranks missing from the first round that timed out
	)
	var wg sync.WaitGroup
	wg.Go(func() {
		type round struct {
			msgs     []*nats.Msg
			infos    []string
			arrived  []bool
			deadline time.Time
		}
		rounds := map[int]*round{}
		respond := func(r *round, rep barrierReply) {
			b, err := json.Marshal(rep)
			if err != nil {
				return // ints and strings always marshal
			}
			for _, m := range r.msgs {
				m.Respond(b)
			}
		}
		for {
			// Wait for the next arrival, or for the earliest round deadline.
			wctx, wcancel := ctx, context.CancelFunc(func() {})
			var first time.Time
			for _, r := range rounds {
				if first.IsZero() || r.deadline.Before(first) {
					first = r.deadline
				}
			}
			if !first.IsZero() {
				wctx, wcancel = context.WithDeadline(ctx, first)
			}
			m, err := sub.NextMsgWithContext(wctx)
			wcancel()
			if ctx.Err() != nil {
				return
			}
			if err != nil && !errors.Is(err, context.DeadlineExceeded) {
				return // the connection is gone: the ranks' requests fail on their own
			}
			if err != nil { // a round's deadline: answer every late round
				now := time.Now()
				for id, r := range rounds {
					if now.Before(r.deadline) {
						continue
					}
					var miss []int
					for rank, ok := range r.arrived {
						if !ok {
							miss = append(miss, rank)
						}
					}
					mu.Lock()
					if absent == nil {
						absent = miss
					}
					mu.Unlock()
					respond(r, barrierReply{Missing: miss})
					delete(rounds, id)
				}
				continue
			}
			var b barrierMsg
			if err := json.Unmarshal(m.Data, &b); err != nil || b.Rank < 0 || b.Rank >= world {
				continue
			}
			r := rounds[b.Round]
			if r == nil {
				r = &round{infos: make([]string, world), arrived: make([]bool, world), deadline: time.Now().Add(timeout)}
				rounds[b.Round] = r
			}
			if r.arrived[b.Rank] {
				continue
			}
			r.msgs = append(r.msgs, m)
			r.infos[b.Rank] = b.Info
			r.arrived[b.Rank] = true
			if len(r.msgs) == world {
				respond(r, barrierReply{Infos: r.infos})
				delete(rounds, b.Round)
			}
		}
	})
	return func() {
			cancel()
			wg.Wait()
			sub.Unsubscribe()
		}, func() []int {
			mu.Lock()
			defer mu.Unlock()
			return slices.Clone(absent)
		}, nil
}
