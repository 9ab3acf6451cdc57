package allreduce

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// Every rank ends with the same bits, the bits of the documented reduction order,
// within float32 rounding of the float64 sum: for every world size 1..8 and
// lengths 0, 1, < world, = world, non-multiples of the chunk.
func TestSumProperty(t *testing.T) {
	for _, tc := range transportCases() {
		t.Run(tc.name, func(t *testing.T) {
			const seed = 7
			rng := rand.New(rand.NewPCG(seed, 0))
			cfg := testConfig(5 * time.Second)
			chunk := cfg.chunkElems()
			for world := 1; world <= 8; world++ {
				if testing.Short() && world > 4 && tc.name != "mem" {
					continue
				}
				rg := newRing(t, tc.make(t, world), cfg, 1)
				lengths := []int{0, 1, world - 1, world, world + 1, chunk - 1, chunk*world + 1, 3*chunk*world + world - 1, 1 + rng.IntN(200)}
				for step, n := range lengths {
					if n < 0 {
						continue
					}
					inputs := randomInputs(rng, world, n)
					got := rg.sum(t, context.Background(), uint64(step), inputs)
					checkSum(t, seed, NewPlan(world, n, chunk), inputs, got)
				}
			}
		})
	}
}

// checkSum checks that every rank holds refSum's bits and that they are within
// float32 rounding of the float64 sum.
func checkSum(t *testing.T, seed uint64, p Plan, inputs, got [][]float32) {
	t.Helper()
	want := refSum(p, inputs)
	const u = 1.0 / (1 << 24) // unit roundoff of float32
	for i := range want {
		var exact, abs float64
		for r := range inputs {
			exact += float64(inputs[r][i])
			abs += math.Abs(float64(inputs[r][i]))
		}
		// Recursive summation of world terms: |error| <= (world-1) u sum|x| (+ u^2).
		if tol := float64(p.World-1)*u*abs*1.001 + 1e-30; math.Abs(float64(want[i])-exact) > tol {
			t.Fatalf("seed %d world %d n %d: elem %d = %v; float64 sum %v, error beyond %g", seed, p.World, p.Len, i, want[i], exact, tol)
		}
		for r := range got {
			if math.Float32bits(got[r][i]) != math.Float32bits(want[i]) {
				t.Fatalf("seed %d: Sum(world=%d, n=%d): rank %d elem %d = %v (%#x); want %v (%#x)",
					seed, p.World, p.Len, r, i, got[r][i], math.Float32bits(got[r][i]), want[i], math.Float32bits(want[i]))
			}
		}
	}
}

func TestAverage(t *testing.T) {
	for _, tc := range transportCases() {
		t.Run(tc.name, func(t *testing.T) {
			rg := newRing(t, tc.make(t, 3), testConfig(5*time.Second), 1)
			inputs := [][]float32{{1, 2, 3, 4, 5, 6, 7}, {3, 2, 1, 0, -1, -2, -3}, {2, 2, 2, 2, 2, 2, 2}}
			bufs := copies(inputs)
			errs := rg.run(func(i int, r *Reducer) error { return r.Average(context.Background(), 1, "D", bufs[i]) })
			for i, err := range errs {
				if err != nil {
					t.Fatalf("rank %d: %v", i, err)
				}
			}
			want := []float32{2, 2, 2, 2, 2, 2, 2}
			for r := range bufs {
				for i := range want {
					if bufs[r][i] != want[i] {
						t.Fatalf("Average(world=3): rank %d elem %d = %v; want %v", r, i, bufs[r][i], want[i])
					}
				}
			}
		})
	}
}

// A Reducer has the method set the trainer's GradSync asks for (World, Rank,
// SumInPlace), declared here as the trainer declares it.
func TestReducerIsAGradSync(t *testing.T) {
	type gradSync interface {
		World() int
		Rank() int
		SumInPlace(ctx context.Context, step uint64, phase string, buf []float32) error
	}
	net := NewMemNetwork(2)
	rg := newRing(t, []Transport{net, net}, testConfig(5*time.Second), 1)
	bufs := [][]float32{{1, 2}, {10, 20}}
	errs := rg.run(func(i int, r *Reducer) error {
		var s gradSync = r
		if s.World() != 2 || s.Rank() != i {
			return fmt.Errorf("World() = %d, Rank() = %d; want 2, %d", s.World(), s.Rank(), i)
		}
		return s.SumInPlace(context.Background(), 9, "G_S", bufs[i])
	})
	for i, err := range errs {
		if err != nil {
			t.Fatalf("rank %d: %v", i, err)
		}
	}
	if bufs[0][1] != 22 || bufs[1][0] != 11 {
		t.Fatalf("sums = %v; want [[11 22] [11 22]]", bufs)
	}
}

// A rank that never takes part makes the others fail within the ring timeout, and
// the rank after it names it and its host.
func TestStuckPeerFailsWithinTimeout(t *testing.T) {
	for _, tc := range transportCases() {
		t.Run(tc.name, func(t *testing.T) {
			const world, stuck, timeout = 4, 2, 300 * time.Millisecond
			rg := newRing(t, tc.make(t, world), testConfig(timeout), 1)
			inputs := randomInputs(rand.New(rand.NewPCG(1, 0)), world, 100)
			start := time.Now()
			errs := rg.run(func(i int, r *Reducer) error {
				if i == stuck {
					return nil
				}
				return r.SumInPlace(context.Background(), 1, "G", inputs[i])
			})
			took := time.Since(start)
			if took > 10*timeout {
				t.Errorf("failing took %v; want about the ring timeout %v", took, timeout)
			}
			for i, err := range errs {
				if i == stuck {
					continue
				}
				var pe *PeerError
				if !errors.Is(err, ErrPeerTimeout) || !errors.As(err, &pe) {
					t.Fatalf("rank %d: err = %v; want a *PeerError wrapping ErrPeerTimeout", i, err)
				}
			}
			err := errs[stuck+1]
			var pe *PeerError
			errors.As(err, &pe)
			if pe.Rank != stuck || pe.Host != "host-2" || !strings.Contains(err.Error(), "rank 2 (host-2)") {
				t.Fatalf("rank %d: err = %v; want it to name rank %d (host-2)", stuck+1, err, stuck)
			}
		})
	}
}

// crashTransport wraps a real transport; its links fail like a crashed process
// after sending `after` frames: the connections close and nothing more is sent.
type crashTransport struct {
	Transport
	after int
}

func (c crashTransport) Open(ctx context.Context, g Group, frameBytes int) (Link, error) {
	l, err := c.Transport.Open(ctx, g, frameBytes)
	if err != nil {
		return nil, err
	}
	return &crashLink{Link: l, left: c.after}, nil
}

type crashLink struct {
	Link
	left int
}

func (c *crashLink) Send(ctx context.Context, lane int, hdr, payload []byte) error {
	if c.left == 0 {
		c.Link.Close()
		return errors.New("crashed")
	}
	c.left--
	return c.Link.Send(ctx, lane, hdr, payload)
}

// A rank that dies in the middle of an operation makes the others fail within the
// ring timeout, naming it.
func TestCrashedPeerFailsWithinTimeout(t *testing.T) {
	for _, tc := range transportCases() {
		t.Run(tc.name, func(t *testing.T) {
			const world, dead, timeout = 3, 1, 300 * time.Millisecond
			ts := tc.make(t, world)
			ts[dead] = crashTransport{Transport: ts[dead], after: 3}
			rg := newRing(t, ts, testConfig(timeout), 1)
			inputs := randomInputs(rand.New(rand.NewPCG(2, 0)), world, 200)
			start := time.Now()
			errs := rg.run(func(i int, r *Reducer) error { return r.SumInPlace(context.Background(), 1, "G", inputs[i]) })
			if took := time.Since(start); took > 10*timeout {
				t.Errorf("failing took %v; want about the ring timeout %v", took, timeout)
			}
			err := errs[dead+1]
			var pe *PeerError
			if !errors.As(err, &pe) || pe.Rank != dead || pe.Host != "host-1" || !errors.Is(err, ErrPeerTimeout) {
				t.Fatalf("rank %d: err = %v; want ErrPeerTimeout naming rank %d (host-1)", dead+1, err, dead)
			}
			for i, err := range errs {
				if err == nil {
					t.Errorf("rank %d: err = nil; want a failure", i)
				}
			}
		})
	}
}

// Cancelling the context unblocks every waiter at once, long before the ring
// timeout; goleak (TestMain) checks that nothing is left behind.
func TestCancelAbortsAllWaiters(t *testing.T) {
	for _, tc := range transportCases() {
		t.Run(tc.name, func(t *testing.T) {
			const world, absent = 3, 2
			rg := newRing(t, tc.make(t, world), testConfig(time.Minute), 1)
			inputs := randomInputs(rand.New(rand.NewPCG(3, 0)), world, 300)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan []error)
			go func() {
				done <- rg.run(func(i int, r *Reducer) error {
					if i == absent {
						return nil
					}
					return r.SumInPlace(ctx, 1, "G", inputs[i])
				})
			}()
			// Both are waiting once rank 1 has applied a chunk from rank 0.
			waitFor(t, 10*time.Second, "progress on rank 1", func() bool { return rg.reducers[1].Stats().FramesRecv > 0 })
			start := time.Now()
			cancel()
			errs := <-done
			if took := time.Since(start); took > 5*time.Second {
				t.Errorf("abort took %v; want well under the 1m ring timeout", took)
			}
			for i, err := range errs {
				if i != absent && !errors.Is(err, context.Canceled) {
					t.Errorf("rank %d: err = %v; want context.Canceled", i, err)
				}
			}
		})
	}
}

// Join with a newer generation aborts the operation in flight with
// ErrStaleGeneration; the new generation then works.
func TestNewerGenerationAborts(t *testing.T) {
	for _, tc := range transportCases() {
		t.Run(tc.name, func(t *testing.T) {
			const world = 3
			rg := newRing(t, tc.make(t, world), testConfig(time.Minute), 1)
			rng := rand.New(rand.NewPCG(4, 0))
			inputs := randomInputs(rng, world, 300)
			done := make(chan error)
			go func() { done <- rg.reducers[0].SumInPlace(context.Background(), 1, "G", copies(inputs)[0]) }()
			waitFor(t, 10*time.Second, "rank 0 sending", func() bool { return rg.reducers[0].Stats().FramesSent > 0 })
			start := time.Now()
			rg.join(t, 2)
			err := <-done
			if took := time.Since(start); took > 5*time.Second {
				t.Errorf("abort took %v; want well under the 1m ring timeout", took)
			}
			if !errors.Is(err, ErrStaleGeneration) {
				t.Fatalf("rank 0: err = %v; want ErrStaleGeneration", err)
			}
			if err := rg.reducers[1].Join(context.Background(), Group{Job: "test", Gen: 1, Rank: 1, Hosts: rg.hosts}); !errors.Is(err, ErrStaleGeneration) {
				t.Errorf("Join(gen 1) after gen 2: err = %v; want ErrStaleGeneration", err)
			}
			inputs = randomInputs(rng, world, 123)
			got := rg.sum(t, context.Background(), 1, inputs)
			checkSum(t, 4, NewPlan(world, 123, testConfig(0).chunkElems()), inputs, got)
		})
	}
}

// Frames of an aborted operation still in flight when the next one starts are
// dropped and counted, never applied: the next operation is exact.
func TestLateFramesOfAbortedOpAreDropped(t *testing.T) {
	for _, tc := range transportCases() {
		t.Run(tc.name, func(t *testing.T) {
			const world, late = 3, 2
			rg := newRing(t, tc.make(t, world), testConfig(300*time.Millisecond), 1)
			rng := rand.New(rand.NewPCG(5, 0))
			a := randomInputs(rng, world, 200)
			cancelled, cancel := context.WithCancel(context.Background())
			cancel()
			// Round A: the late rank calls with a dead context (so every rank
			// counts the operation) and takes no frames; the others time out.
			errs := rg.run(func(i int, r *Reducer) error {
				if i == late {
					return r.SumInPlace(cancelled, 1, "G", a[i])
				}
				return r.SumInPlace(context.Background(), 1, "G", a[i])
			})
			for i, err := range errs {
				if err == nil {
					t.Fatalf("round A: rank %d succeeded; want a failure", i)
				}
			}
			// Round B: same generation, new data; rank 1's frames of round A wait
			// in rank 2's link.
			b := randomInputs(rng, world, 200)
			got := rg.sum(t, context.Background(), 2, b)
			checkSum(t, 5, NewPlan(world, 200, testConfig(0).chunkElems()), b, got)
			if d := rg.reducers[late].Stats().DroppedStaleOp; d == 0 {
				t.Errorf("rank %d dropped %d stale frames; want > 0 (round A's)", late, d)
			}
		})
	}
}

// Ranks that disagree on the operation fail loudly instead of mixing buffers.
func TestMismatchFails(t *testing.T) {
	for _, tc := range transportCases() {
		t.Run(tc.name, func(t *testing.T) {
			const world = 3
			rg := newRing(t, tc.make(t, world), testConfig(300*time.Millisecond), 1)
			errs := rg.run(func(i int, r *Reducer) error {
				n := 40
				if i == 1 {
					n = 41
				}
				return r.SumInPlace(context.Background(), 1, "G", make([]float32, n))
			})
			if !errors.Is(errs[1], ErrMismatch) {
				t.Fatalf("rank 1 (41 elements, left has 40): err = %v; want ErrMismatch", errs[1])
			}
			if !strings.Contains(errs[1].Error(), "from rank 0 (host-0)") {
				t.Errorf("rank 1: err = %v; want it to name rank 0 (host-0)", errs[1])
			}
		})
	}
}

func TestUsageErrors(t *testing.T) {
	net := NewMemNetwork(1)
	r, err := New(net, DefaultConfig(), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := r.SumInPlace(context.Background(), 1, "G", []float32{1}); !errors.Is(err, ErrNotJoined) {
		t.Errorf("SumInPlace before Join: err = %v; want ErrNotJoined", err)
	}
	if err := r.Join(context.Background(), Group{Job: "bad.job", Rank: 3, Hosts: []string{"a"}}); err == nil ||
		!strings.Contains(err.Error(), "group.job") || !strings.Contains(err.Error(), "group.rank") {
		t.Errorf("Join(bad group): err = %v; want problems with group.job and group.rank", err)
	}
	if err := r.Join(context.Background(), Group{Job: "j", Gen: 1, Hosts: []string{"a"}}); err != nil {
		t.Fatal(err)
	}
	buf := []float32{1, 2}
	if err := r.Average(context.Background(), 1, "G", buf); err != nil || buf[0] != 1 || buf[1] != 2 {
		t.Errorf("Average(world=1) = %v, %v; want [1 2], nil", buf, err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.SumInPlace(context.Background(), 1, "G", buf); !errors.Is(err, ErrClosed) {
		t.Errorf("SumInPlace after Close: err = %v; want ErrClosed", err)
	}
	if net.Links() != 0 {
		t.Errorf("mem network has %d links after Close; want 0", net.Links())
	}
	if _, err := New(net, Config{ChunkBytes: 6}, testLogger(t)); err == nil ||
		!strings.Contains(err.Error(), "ring_timeout") || !strings.Contains(err.Error(), "chunk_bytes") {
		t.Errorf("New(bad config): err = %v; want problems with ring_timeout and chunk_bytes", err)
	}
	if d := DefaultConfig().RingTimeout; d > 5*time.Second {
		t.Errorf("default ring timeout %v; want <= 5s", d)
	}
}
