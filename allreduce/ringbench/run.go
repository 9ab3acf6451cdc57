package ringbench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strconv"
	"sync"
	"time"

	"github.com/crdgo/crdgo/natsd"
	"github.com/nats-io/nats.go"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"
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
func quiet(log *zap.Logger) *zap.Logger { return log.WithOptions(zap.IncreaseLevel(zap.WarnLevel)) }

// silent is the servers' logger: at the end of a series the ranks' servers stop in
// no particular order and the survivors log the routes they lose. A server's
// trouble during the runs shows as an allreduce error (a lost chunk, a timeout).
func silent(log *zap.Logger) *zap.Logger { return log.WithOptions(zap.IncreaseLevel(zap.DPanicLevel)) }

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
	stop, err := coordinate(ctx, nc, barrierSubject(id), s.World)
	if err != nil {
		return Result{}, err
	}
	defer stop()

	reports := make([]report, s.World)
	eg, ectx := errgroup.WithContext(ctx)
	for rank := range s.World {
		spec := WorkerSpec{Series: s, Rank: rank, Bench: id, ControlURL: srv.ClientURL(), ClusterURL: srv.ClusterURL()}
		if s.Kind == NATSInProc {
			spec.inproc = srv
		}
		eg.Go(func() error {
			var err error
			if s.Mode == Goroutines {
				reports[rank], err = runRank(ectx, spec, quiet(log).With(zap.Int("rank", rank)))
			} else {
				reports[rank], err = runProcess(ectx, spawn, spec)
			}
			if err != nil {
				return fmt.Errorf("rank %d: %w", rank, err)
			}
			return nil
		})
	}
	if err := eg.Wait(); err != nil {
		return Result{}, fmt.Errorf("ringbench: %s %s world %d floats %d: %w", s.Mode, s.Kind, s.World, s.Floats, err)
	}
	return combine(s, reports), nil
}

func runProcess(ctx context.Context, spawn Spawner, spec WorkerSpec) (report, error) {
	js, err := json.Marshal(spec)
	if err != nil {
		return report{}, err
	}
	cmd := spawn(ctx, js)
	var out bytes.Buffer
	cmd.Stdout = &out
	if err := cmd.Run(); err != nil {
		return report{}, fmt.Errorf("worker %s: %w", cmd.Path, err)
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

// coordinate runs the barrier: once all world ranks have sent their request for a
// round, each gets the list of everyone's Info as the reply. stop ends it.
func coordinate(ctx context.Context, nc *nats.Conn, subj string, world int) (stop func(), err error) {
	sub, err := nc.SubscribeSync(subj)
	if err != nil {
		return nil, err
	}
	if err := nc.Flush(); err != nil {
		sub.Unsubscribe()
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		type round struct {
			msgs  []*nats.Msg
			infos []string
		}
		rounds := map[int]*round{}
		for {
			m, err := sub.NextMsgWithContext(ctx)
			if err != nil {
				return
			}
			var b barrierMsg
			if err := json.Unmarshal(m.Data, &b); err != nil || b.Rank < 0 || b.Rank >= world {
				continue
			}
			r := rounds[b.Round]
			if r == nil {
				r = &round{infos: make([]string, world)}
				rounds[b.Round] = r
			}
			r.msgs = append(r.msgs, m)
			r.infos[b.Rank] = b.Info
			if len(r.msgs) == world {
				reply, err := json.Marshal(r.infos)
				if err != nil {
					return // []string always marshals
				}
				for _, m := range r.msgs {
					m.Respond(reply)
				}
				delete(rounds, b.Round)
			}
		}
	})
	return func() {
		cancel()
		wg.Wait()
		sub.Unsubscribe()
	}, nil
}
