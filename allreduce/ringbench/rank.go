package ringbench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"github.com/crdgo/crdgo/allreduce"
	"github.com/crdgo/crdgo/natsd"
	"github.com/nats-io/nats.go"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"
)

// RunWorker is the body of a worker process: it decodes spec, takes part in the
// series as its rank and writes its times to out as JSON.
func RunWorker(ctx context.Context, spec []byte, out io.Writer, log *zap.Logger) error {
	var s WorkerSpec
	if err := json.Unmarshal(spec, &s); err != nil {
		return fmt.Errorf("ringbench: worker spec: %w", err)
	}
	if err := s.Validate(); err != nil {
		return fmt.Errorf("ringbench: worker spec: %w", err)
	}
	if s.Rank < 0 || s.Rank >= s.World {
		return fmt.Errorf("ringbench: worker spec: rank %d of %d", s.Rank, s.World)
	}
	ctx, cancel := deadline(ctx, s.Series)
	defer cancel()
	r, err := runRank(ctx, s, quiet(log).With(zap.Int("rank", s.Rank)))
	if err != nil {
		return err
	}
	return json.NewEncoder(out).Encode(r)
}

// rank is one rank's side of a series.
type rank struct {
	spec  WorkerSpec
	ctl   *nats.Conn
	round int
}

// barrier waits until every rank arrived at this round and returns what each
// shared. The wait is bounded by the ring timeout (and a moment for the reply
// to travel): the coordinator answers a round that some rank did not reach in
// time with the ranks it lacks, and the error names them.
func (r *rank) barrier(ctx context.Context, info string) ([]string, error) {
	req, err := json.Marshal(barrierMsg{Rank: r.spec.Rank, Round: r.round, Info: info})
	if err != nil {
		return nil, err
	}
	round := r.round
	r.round++
	wctx, cancel := context.WithTimeout(ctx, r.spec.Reducer.RingTimeout+replySlack)
	defer cancel()
	m, err := r.ctl.RequestWithContext(wctx, barrierSubject(r.spec.Bench), req)
	if err != nil {
		if ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
			return nil, fmt.Errorf("barrier %d: no answer from the coordinator within %v: %w", round, r.spec.Reducer.RingTimeout+replySlack, err)
		}
		return nil, fmt.Errorf("barrier %d: %w", round, err)
	}
	var rep barrierReply
	if err := json.Unmarshal(m.Data, &rep); err != nil {
		return nil, fmt.Errorf("barrier %d: reply %q", round, m.Data)
	}
	if len(rep.Missing) > 0 {
		return nil, fmt.Errorf("barrier %d: %w", round, &MissingError{Ranks: rep.Missing, Timeout: r.spec.Reducer.RingTimeout})
	}
	if len(rep.Infos) != r.spec.World {
		return nil, fmt.Errorf("barrier %d: reply %q", round, m.Data)
	}
	return rep.Infos, nil
}

func runRank(ctx context.Context, s WorkerSpec, log *zap.Logger) (report, error) {
	ctl, err := nats.Connect(s.ControlURL, nats.Name(fmt.Sprintf("ringbench rank %d", s.Rank)))
	if err != nil {
		return report{}, fmt.Errorf("connect to %s: %w", s.ControlURL, err)
	}
	defer ctl.Close()
	r := &rank{spec: s, ctl: ctl}
	host, _ := os.Hostname()
	hosts, err := r.barrier(ctx, fmt.Sprintf("%s/%d", host, os.Getpid()))
	if err != nil {
		return report{}, err
	}

	var op func(ctx context.Context, step int, buf []float32) error
	if s.Kind == Raw {
		ring, err := dialRaw(ctx, r)
		if err != nil {
			return report{}, err
		}
		defer ring.close()
		moved := int64(float64(s.Bytes()) * s.busFactor())
		op = func(ctx context.Context, _ int, _ []float32) error { return ring.transfer(ctx, moved) }
	} else {
		t, cleanup, err := transport(ctx, s, ctl, log)
		if err != nil {
			return report{}, err
		}
		defer cleanup()
		red, err := allreduce.New(t, s.Reducer, log)
		if err != nil {
			return report{}, err
		}
		defer red.Close()
		if err := red.Join(ctx, allreduce.Group{Job: "ringbench", Gen: 1, Rank: s.Rank, Hosts: hosts}); err != nil {
			return report{}, err
		}
		op = func(ctx context.Context, step int, buf []float32) error {
			return red.SumInPlace(ctx, uint64(step), "bench", buf)
		}
	}

	buf := make([]float32, s.Floats)
	for i := range buf {
		buf[i] = float32(s.Rank + 1)
	}
	var rep report
	step := 0
	timed := func(f func() error) (time.Duration, error) {
		if _, err := r.barrier(ctx, ""); err != nil {
			return 0, err
		}
		start := time.Now()
		err := f()
		return time.Since(start), err
	}
	for i := range s.Warmup + s.Runs {
		d, err := timed(func() error { return op(ctx, step, buf) })
		if err != nil {
			return report{}, fmt.Errorf("run %d: %w", i, err)
		}
		if step == 0 && s.Kind != Raw {
			if err := checkSum(s.Series, buf); err != nil {
				return report{}, err
			}
		}
		step++
		if i >= s.Warmup {
			rep.Times = append(rep.Times, d)
		}
	}
	if s.Compute > 0 {
		scratch := make([]float32, computeFloats)
		for range s.Runs {
			d, err := timed(func() error { computeLoop(s.Compute, scratch); return nil })
			if err != nil {
				return report{}, err
			}
			rep.Compute = append(rep.Compute, d)
		}
		for i := range s.Runs {
			d, err := timed(func() error {
				done := make(chan error, 1)
				go func() { done <- op(ctx, step, buf) }()
				computeLoop(s.Compute, scratch)
				return <-done
			})
			if err != nil {
				return report{}, fmt.Errorf("overlap run %d: %w", i, err)
			}
			step++
			rep.Both = append(rep.Both, d)
		}
	}
	// A rank's operation ends when it has its result, while its last frames may
	// still be on their way to its right neighbour: tear nothing down before
	// every rank has its result too.
	if _, err := r.barrier(ctx, ""); err != nil {
		return report{}, err
	}
	return rep, nil
}

// checkSum checks the first run's result: every rank started with rank+1
// everywhere, so every element is N(N+1)/2.
func checkSum(s Series, buf []float32) error {
	want := float32(s.World * (s.World + 1) / 2)
	for _, i := range []int{0, len(buf) / 2, len(buf) - 1} {
		if buf[i] != want {
			return fmt.Errorf("%s world %d: element %d = %v after the first run; want %v", s.Kind, s.World, i, buf[i], want)
		}
	}
	return nil
}

// transport builds the rank's transport of kind s.Kind; cleanup releases what it
// opened.
func transport(ctx context.Context, s WorkerSpec, ctl *nats.Conn, log *zap.Logger) (allreduce.Transport, func(), error) {
	var conns []*nats.Conn
	var srv *natsd.Server
	cleanup := func() {
		for _, nc := range conns {
			nc.Close()
		}
		if srv != nil {
			srv.Shutdown()
		}
	}
	// lanes opens the data connections, one per lane.
	lanes := func(connect func() (*nats.Conn, error)) (allreduce.Transport, func(), error) {
		for range s.Lanes {
			nc, err := connect()
			if err != nil {
				cleanup()
				return nil, nil, err
			}
			conns = append(conns, nc)
		}
		t, err := allreduce.NewNATS(conns, allreduce.NATSConfig{Window: s.Window}, log)
		if err != nil {
			cleanup()
			return nil, nil, err
		}
		return t, cleanup, nil
	}
	switch s.Kind {
	case NATS:
		return lanes(func() (*nats.Conn, error) { return nats.Connect(s.ControlURL) })
	case NATSInProc:
		if s.inproc == nil {
			return nil, nil, errors.New("nats-inproc: no in-process server (goroutines only)")
		}
		return lanes(func() (*nats.Conn, error) { return s.inproc.Connect() })
	case NATSCluster:
		cfg := serverConfig(s.Series)
		cfg.Name = fmt.Sprintf("rank%d", s.Rank)
		cfg.Cluster = natsd.ClusterConfig{Name: "ringbench", Port: -1, Routes: []string{s.ClusterURL}}
		var err error
		if srv, err = natsd.Start(cfg, silent(log)); err != nil {
			return nil, nil, err
		}
		// Routes to every other rank's server and the parent's, within the ring
		// timeout like every other wait.
		rctx, cancel := context.WithTimeout(ctx, s.Reducer.RingTimeout)
		err = poll(rctx, func() bool { return srv.NumRoutes() >= s.World })
		cancel()
		if err != nil {
			cleanup()
			return nil, nil, fmt.Errorf("cluster: %d routes, want %d: %w", srv.NumRoutes(), s.World, err)
		}
		return lanes(func() (*nats.Conn, error) { return srv.Connect() })
	case TCP:
		t, err := allreduce.NewTCP(ctl, allreduce.DefaultTCPConfig(), log)
		return t, func() {}, err
	}
	return nil, nil, fmt.Errorf("kind %q has no transport", s.Kind)
}

// poll waits for cond under ctx.
func poll(ctx context.Context, cond func() bool) error {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	return nil
}

// rawRing is the ceiling: one TCP connection to the right neighbour and one from
// the left, moving bytes with nothing else.
type rawRing struct {
	in, out    net.Conn
	rbuf, wbuf []byte
}

func dialRaw(ctx context.Context, r *rank) (*rawRing, error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	defer ln.Close()
	addrs, err := r.barrier(ctx, ln.Addr().String())
	if err != nil {
		return nil, err
	}
	right := addrs[(r.spec.Rank+1)%r.spec.World]
	var d net.Dialer
	out, err := d.DialContext(ctx, "tcp", right) // completes in the listener's backlog
	if err != nil {
		return nil, fmt.Errorf("raw: dial %s: %w", right, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		ln.(*net.TCPListener).SetDeadline(dl)
	}
	in, err := ln.Accept()
	if err != nil {
		out.Close()
		return nil, fmt.Errorf("raw: accept: %w", err)
	}
	const piece = 1 << 20
	return &rawRing{in: in, out: out, rbuf: make([]byte, piece), wbuf: make([]byte, piece)}, nil
}

// transfer sends n bytes to the right while receiving n bytes from the left.
func (r *rawRing) transfer(ctx context.Context, n int64) error {
	if dl, ok := ctx.Deadline(); ok {
		r.in.SetDeadline(dl)
		r.out.SetDeadline(dl)
	}
	var eg errgroup.Group
	eg.Go(func() error {
		for left := n; left > 0; {
			k := min(left, int64(len(r.wbuf)))
			if _, err := r.out.Write(r.wbuf[:k]); err != nil {
				return fmt.Errorf("raw: write: %w", err)
			}
			left -= k
		}
		return nil
	})
	eg.Go(func() error {
		for left := n; left > 0; {
			k := min(left, int64(len(r.rbuf)))
			if _, err := io.ReadFull(r.in, r.rbuf[:k]); err != nil {
				return fmt.Errorf("raw: read: %w", err)
			}
			left -= k
		}
		return nil
	})
	return eg.Wait()
}

func (r *rawRing) close() {
	r.in.Close()
	r.out.Close()
}
