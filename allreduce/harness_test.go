package allreduce

import (
	"context"
	"fmt"
	mathrand "math/rand"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/crdgo/crdgo/natsd"
	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"

	"github.com/crdgo/crdgo/internal/fuzzmin"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
)

// TestMain shortens the fuzzer's minimisation (internal/fuzzmin) and checks that
// no goroutine outlives a test.
func TestMain(m *testing.M) {
	fuzzmin.Default()
	goleak.VerifyTestMain(m)
}

// transportCase builds the transports of n ranks, each with its own connections
// as separate processes would have; t.Cleanup releases them.
type transportCase struct {
	name string
	make func(t testing.TB, n int) []Transport
}

// transportCases is every transport: each test runs against all of them, as
// hashicorp/raft's transport tests do.
func transportCases() []transportCase {
	return []transportCase{
		{"mem", func(t testing.TB, n int) []Transport {
			net := NewMemNetwork(4)
			ts := make([]Transport, n)
			for i := range ts {
				ts[i] = net
			}
			t.Cleanup(func() {
				if l := net.Links(); l != 0 {
					t.Errorf("mem network has %d link queues after every reducer closed; want 0", l)
				}
			})
			return ts
		}},
		{"tcp", func(t testing.TB, n int) []Transport {
			s := startNATS(t, natsd.Config{})
			ts := make([]Transport, n)
			for i := range ts {
				nc := connectNATS(t, s.ClientURL())
				tr, err := NewTCP(nc, DefaultTCPConfig(), testLogger(t))
				if err != nil {
					t.Fatal(err)
				}
				ts[i] = tr
			}
			return ts
		}},
		{"nats", func(t testing.TB, n int) []Transport {
			s := startNATS(t, natsd.Config{})
			ts := make([]Transport, n)
			for i := range ts {
				ts[i] = newNATSTransport(t, 4, connectNATS(t, s.ClientURL()))
			}
			return ts
		}},
		{"nats-lanes", func(t testing.TB, n int) []Transport {
			s := startNATS(t, natsd.Config{})
			ts := make([]Transport, n)
			for i := range ts {
				ts[i] = newNATSTransport(t, 2, connectNATS(t, s.ClientURL()), connectNATS(t, s.ClientURL()), connectNATS(t, s.ClientURL()))
			}
			return ts
		}},
		{"nats-cluster", func(t testing.TB, n int) []Transport {
			servers := startCluster(t, min(n, 3))
			ts := make([]Transport, n)
			for i := range ts {
				nc, err := servers[i%len(servers)].Connect()
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(nc.Close)
				ts[i] = newNATSTransport(t, 4, nc)
			}
			return ts
		}},
	}
}

func testLogger(t testing.TB) *zap.Logger {
	return zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
}

func startNATS(t testing.TB, over natsd.Config) *natsd.Server {
	t.Helper()
	cfg := natsd.DefaultConfig()
	cfg.Name, cfg.Cluster = over.Name, over.Cluster
	s, err := natsd.Start(cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
	return s
}

// startCluster starts n servers routed into one cluster and waits for the full mesh.
func startCluster(t testing.TB, n int) []*natsd.Server {
	t.Helper()
	var servers []*natsd.Server
	for i := range n {
		cl := natsd.ClusterConfig{Name: "crd", Port: -1}
		if i > 0 {
			cl.Routes = []string{servers[0].ClusterURL()}
		}
		servers = append(servers, startNATS(t, natsd.Config{Name: fmt.Sprintf("s%d", i), Cluster: cl}))
	}
	waitFor(t, 10*time.Second, "full route mesh", func() bool {
		for _, s := range servers {
			if s.NumRoutes() < n-1 {
				return false
			}
		}
		return true
	})
	return servers
}

func connectNATS(t testing.TB, url string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func newNATSTransport(t testing.TB, window int, conns ...*nats.Conn) *NATS {
	t.Helper()
	tr, err := NewNATS(conns, NATSConfig{Window: window}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

// testRing is n reducers joined to one group.
type testRing struct {
	reducers []*Reducer
	hosts    []string
}

func hostNames(n int) []string {
	hosts := make([]string, n)
	for i := range hosts {
		hosts[i] = fmt.Sprintf("host-%d", i)
	}
	return hosts
}

func newRing(t testing.TB, ts []Transport, cfg Config, gen uint64) *testRing {
	t.Helper()
	rg := &testRing{hosts: hostNames(len(ts))}
	for i, tr := range ts {
		r, err := New(tr, cfg, testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := r.Close(); err != nil {
				t.Errorf("rank %d: Close: %v", i, err)
			}
		})
		rg.reducers = append(rg.reducers, r)
	}
	rg.join(t, gen)
	return rg
}

func (rg *testRing) join(t testing.TB, gen uint64) {
	t.Helper()
	for i, r := range rg.reducers {
		if err := r.Join(context.Background(), Group{Job: "test", Gen: gen, Rank: i, Hosts: rg.hosts}); err != nil {
			t.Fatalf("rank %d: Join(gen %d): %v", i, gen, err)
		}
	}
}

// run calls op on every rank at once and returns each rank's error.
func (rg *testRing) run(op func(rank int, r *Reducer) error) []error {
	errs := make([]error, len(rg.reducers))
	var wg sync.WaitGroup
	for i, r := range rg.reducers {
		wg.Go(func() { errs[i] = op(i, r) })
	}
	wg.Wait()
	return errs
}

// sum runs SumInPlace on every rank with a copy of inputs[rank] and returns the
// buffers.
func (rg *testRing) sum(t *testing.T, ctx context.Context, step uint64, inputs [][]float32) [][]float32 {
	t.Helper()
	bufs := copies(inputs)
	errs := rg.run(func(i int, r *Reducer) error { return r.SumInPlace(ctx, step, "G", bufs[i]) })
	for i, err := range errs {
		if err != nil {
			t.Fatalf("step %d: rank %d: %v", step, i, err)
		}
	}
	return bufs
}

func copies(inputs [][]float32) [][]float32 {
	out := make([][]float32, len(inputs))
	for i := range inputs {
		out[i] = append([]float32(nil), inputs[i]...)
	}
	return out
}

// randomInputs returns world buffers of n values of mixed sign and magnitude.
func randomInputs(rng *rand.Rand, world, n int) [][]float32 {
	scale := []float64{1e-3, 1e-1, 1, 10, 1e3}
	inputs := make([][]float32, world)
	for r := range inputs {
		inputs[r] = make([]float32, n)
		for i := range inputs[r] {
			inputs[r][i] = float32((2*rng.Float64() - 1) * scale[rng.IntN(len(scale))])
		}
	}
	return inputs
}

func newQuickRand() *mathrand.Rand { return mathrand.New(mathrand.NewSource(1)) }

// waitFor polls cond until it holds; the test fails naming what it waited for.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(timeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline:
			t.Fatalf("no %s after %v", what, timeout)
		case <-tick.C:
		}
	}
}

// testConfig is the reducer config of the tests: tiny chunks, so short buffers
// still span many chunks and every path of the pipeline runs.
func testConfig(timeout time.Duration) Config {
	return Config{RingTimeout: timeout, ChunkBytes: 4 * 5}
}
