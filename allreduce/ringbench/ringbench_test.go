package ringbench

import (
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/crdgo/crdgo/allreduce"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
)

const workerEnv = "CRDGO_RINGBENCH_WORKER"

// TestMain doubles as the worker process of the processes-mode test: the test
// binary re-executes itself with the spec in the environment.
func TestMain(m *testing.M) {
	if spec := os.Getenv(workerEnv); spec != "" {
		if err := RunWorker(context.Background(), []byte(spec), os.Stdout, zap.NewNop()); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

func testSeries(kind Kind, mode Mode) Series {
	return Series{
		Kind: kind, Mode: mode, World: 3, Floats: 1000, Runs: 2, Warmup: 1,
		Reducer: allreduce.Config{RingTimeout: 10 * time.Second, ChunkBytes: 1024}, Window: 4, Lanes: 2,
	}
}

func TestRunGoroutines(t *testing.T) {
	for _, k := range Kinds {
		t.Run(string(k), func(t *testing.T) {
			s := testSeries(k, Goroutines)
			s.Compute = 10
			r, err := Run(context.Background(), s, nil, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)))
			if err != nil {
				t.Fatal(err)
			}
			if len(r.Times) != s.Runs || len(r.Compute) != s.Runs || len(r.Both) != s.Runs {
				t.Fatalf("Run: %d times, %d compute, %d both; want %d each", len(r.Times), len(r.Compute), len(r.Both), s.Runs)
			}
			if r.Median() <= 0 || r.BusBW() <= 0 || math.Abs(r.BusBW()-r.AlgBW()*4/3) > 1e-9*r.BusBW() {
				t.Errorf("median %v algbw %v busbw %v; want positive, busbw = algbw x 2(N-1)/N", r.Median(), r.AlgBW(), r.BusBW())
			}
		})
	}
}

func TestRunProcesses(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	spawn := func(ctx context.Context, spec []byte) *exec.Cmd {
		cmd := exec.CommandContext(ctx, exe, "-test.run=^$")
		cmd.Env = append(os.Environ(), workerEnv+"="+string(spec))
		cmd.Stderr = os.Stderr
		return cmd
	}
	for _, k := range []Kind{TCP, NATSCluster} {
		t.Run(string(k), func(t *testing.T) {
			s := testSeries(k, Processes)
			r, err := Run(context.Background(), s, spawn, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)))
			if err != nil {
				t.Fatal(err)
			}
			if len(r.Times) != s.Runs {
				t.Fatalf("Run: %d times; want %d", len(r.Times), s.Runs)
			}
		})
	}
}

func TestSeriesValidate(t *testing.T) {
	s := testSeries(NATSInProc, Processes)
	s.World = 1
	if err := s.Validate(); err == nil {
		t.Fatal("Validate(nats-inproc in processes, world 1) = nil; want errors")
	}
	if _, err := ParseKinds("tcp,bogus"); err == nil {
		t.Error("ParseKinds(tcp,bogus) = nil error")
	}
	if ks, err := ParseKinds("all"); err != nil || len(ks) != len(Kinds) {
		t.Errorf("ParseKinds(all) = %v, %v", ks, err)
	}
}

func TestMedianAndOverlap(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		var d []time.Duration
		for _, x := range v {
			d = append(d, time.Duration(x)*time.Millisecond)
		}
		return d
	}
	r := Result{Series: Series{World: 4, Floats: 250_000}, Times: ms(30, 10, 20), Compute: ms(10, 10), Both: ms(25, 25)}
	if r.Median() != 20*time.Millisecond {
		t.Errorf("Median = %v; want 20ms", r.Median())
	}
	if got := r.AlgBW(); got != 1e6/0.02 {
		t.Errorf("AlgBW = %v; want %v", got, 1e6/0.02)
	}
	// 20ms allreduce + 10ms compute in 25ms: 5ms of the 10ms hidden.
	if got := r.OverlapEfficiency(); got < 0.4999 || got > 0.5001 {
		t.Errorf("OverlapEfficiency = %v; want 0.5", got)
	}
}
