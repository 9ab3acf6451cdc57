package ringbench

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/crdgo/crdgo/allreduce"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
)

const (
	workerEnv = "CRDGO_RINGBENCH_WORKER"
	stopEnv   = "CRDGO_RINGBENCH_STOP" // "RANK DELAY": that worker SIGSTOPs itself after DELAY
)

// stopSelf is the fault of TestStoppedWorker: the worker of the rank stopEnv
// names stops itself with SIGSTOP after the delay, as a user's kill -STOP would.
func stopSelf(spec string) {
	var rank int
	var after string
	if _, err := fmt.Sscan(os.Getenv(stopEnv), &rank, &after); err != nil {
		return
	}
	delay, err := time.ParseDuration(after)
	if err != nil {
		return
	}
	var s WorkerSpec
	if json.Unmarshal([]byte(spec), &s) != nil || s.Rank != rank {
		return
	}
	time.AfterFunc(delay, func() { syscall.Kill(os.Getpid(), syscall.SIGSTOP) })
}

// TestMain doubles as the worker process of the processes-mode test: the test
// binary re-executes itself with the spec in the environment.
func TestMain(m *testing.M) {
	if spec := os.Getenv(workerEnv); spec != "" {
		stopSelf(spec)
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

// TestStoppedWorker reproduces issue 19's fourth defect: one worker process
// stopped (SIGSTOP) left the others waiting in the harness's barrier until the
// series deadline (34 s × runs), and the error named whichever worker exited
// first. Every wait is now bounded by the ring timeout, the error names the
// stopped rank, and it is killed and reaped. The worker stops itself before
// the first barrier (the others wait there) or in the middle of the runs.
func TestStoppedWorker(t *testing.T) {
	for _, after := range []string{"0s", "4s"} {
		t.Run("after "+after, func(t *testing.T) { stoppedWorker(t, after) })
	}
}

func stoppedWorker(t *testing.T, after string) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	cmds := map[int]*exec.Cmd{}
	spawn := func(ctx context.Context, spec []byte) *exec.Cmd {
		var ws WorkerSpec
		if err := json.Unmarshal(spec, &ws); err != nil {
			t.Errorf("spec: %v", err)
		}
		cmd := exec.CommandContext(ctx, exe, "-test.run=^$")
		cmd.Env = append(os.Environ(), workerEnv+"="+string(spec), stopEnv+"=1 "+after)
		mu.Lock()
		cmds[ws.Rank] = cmd
		mu.Unlock()
		return cmd
	}
	s := testSeries(TCP, Processes)
	s.Runs, s.Warmup = 1_000_000, 1 // far more than fit in the test: only the fault ends it
	s.Reducer.RingTimeout = 2 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	start := time.Now()
	_, err = Run(ctx, s, spawn, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)))
	took := time.Since(start)
	if err == nil {
		t.Fatal("Run with a stopped worker = nil error")
	}
	t.Logf("after %v: %v", took.Round(time.Millisecond), err)
	// The stop, then the ring timeout, the reply slack and the grace for the
	// others: about 10 s at most. 25 s leaves room for a loaded machine.
	if took > 25*time.Second {
		t.Errorf("Run returned after %v; want within 25 s of start (ring timeout %v)", took, s.Reducer.RingTimeout)
	}
	mu.Lock()
	stopped := cmds[1]
	mu.Unlock()
	want := fmt.Sprintf("rank 1 (pid %d) neither finished nor failed", stopped.Process.Pid)
	if !strings.HasPrefix(strings.TrimPrefix(err.Error(), "ringbench: processes tcp world 3 floats 1000: "), want) {
		t.Errorf("error %q does not start by naming the stopped worker: want %q", err, want)
	}
	if stopped.ProcessState == nil {
		t.Errorf("the stopped worker (pid %d) was not reaped", stopped.Process.Pid)
	}
}

func TestParseCounts(t *testing.T) {
	got, err := ParseCounts("2, 4,1K,10M", "--floats")
	if err != nil || !slices.Equal(got, []int{2, 4, 1_000, 10_000_000}) {
		t.Fatalf("ParseCounts = %v, %v", got, err)
	}
	for _, bad := range []string{"", "0", "-2", "1G", "x"} {
		if _, err := ParseCounts(bad, "--floats"); err == nil || !strings.Contains(err.Error(), "--floats") {
			t.Errorf("ParseCounts(%q) = %v, want an error naming --floats", bad, err)
		}
	}
	if _, err := ParseModes("goroutines,threads", "--modes"); err == nil || !strings.Contains(err.Error(), "threads") {
		t.Errorf("ParseModes accepted threads: %v", err)
	}
	if HumanFloats(25_000_000) != "25M" || HumanFloats(3_000) != "3K" || HumanFloats(7) != "7" {
		t.Error("HumanFloats")
	}
}
