package launch

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"
	"go.uber.org/zap"

	"github.com/crdgo/crdgo/coordinator"
	"github.com/crdgo/crdgo/crd/train"
)

// The multi-process tests: crdgo cluster up (a NATS server, 3 coordinators,
// 3 nodes, each its own process of the binary built once in TestMain) trains
// the demo recipe while the raft leader is SIGKILLed; the committed steps have
// no gap or repeat, every checksum step agreed, and the committed checkpoint
// is bit for bit crdgo train --nodes 3's. Nodes that differ from the job are
// refused naming the field; a node without credentials is refused by NATS.

// crdgoBin is the crdgo binary built for these tests, in tmp.
var crdgoBin, tmp string

var (
	dataOnce sync.Once
	dataErr  error
)

// demoData is the dataset of the demo recipes (edges2shapes), generated once
// for every test. The tests train demo-ngf4, the demo with its narrow (fast)
// pair: they test the system, not the showcase.
func demoData(t *testing.T) string {
	t.Helper()
	root := filepath.Join(tmp, "data")
	dataOnce.Do(func() {
		rec, err := train.LoadRecipe("demo")
		if err != nil {
			dataErr = err
			return
		}
		start := time.Now()
		_, dataErr = train.PrepareData(context.Background(), root, rec, nil, zap.NewNop())
		t.Logf("demo dataset generated in %v", time.Since(start).Round(time.Millisecond))
	})
	if dataErr != nil {
		t.Fatal(dataErr)
	}
	return root
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "crdgo-launch-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := func() int {
		defer os.RemoveAll(dir)
		tmp = dir
		crdgoBin = filepath.Join(dir, "crdgo")
		gobin, err := exec.LookPath("go")
		if err != nil {
			gobin = filepath.Join(os.Getenv("GOROOT"), "bin", "go")
		}
		build := exec.Command(gobin, "build", "-o", crdgoBin, "github.com/crdgo/crdgo/cmd/crdgo")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		start := time.Now()
		if err := build.Run(); err != nil {
			fmt.Fprintf(os.Stderr, "launch: building crdgo for the multi-process tests: %v\n", err)
			return 1
		}
		fmt.Fprintf(os.Stderr, "launch: built %s in %v\n", crdgoBin, time.Since(start).Round(time.Millisecond))
		code := m.Run()
		if code == 0 {
			if err := goleak.Find(); err != nil {
				fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
				return 1
			}
		}
		return code
	}()
	os.Exit(code)
}

// output collects a child's stdout and stderr; safe to read while it runs.
type output struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (o *output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.Write(p)
}

func (o *output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.String()
}

// proc is a crdgo process of a test, killed with the test.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error // after done
}

func child(t *testing.T, stdout *output, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(crdgoBin, args...)
	cmd.Stdout, cmd.Stderr = stdout, stdout
	childAttrs(cmd)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill() // an error once it has exited: nothing to kill
		<-p.done
	})
	return p
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, within time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		ok, err := cond()
		if err != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(100 * time.Millisecond) // polling an observation under a deadline
	}
}

// exited waits for p with a deadline and returns how it ended.
func exited(t *testing.T, p *proc, within time.Duration, what string) error {
	t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-time.After(within):
		t.Fatalf("%s: still running after %v", what, within)
		return nil
	}
}

func readInfo(dir string) (Info, bool, error) {
	b, err := os.ReadFile(filepath.Join(dir, InfoFile))
	if errors.Is(err, os.ErrNotExist) {
		return Info{}, false, nil
	}
	if err != nil {
		return Info{}, false, err
	}
	var i Info
	if err := json.Unmarshal(b, &i); err != nil {
		return Info{}, false, nil // written as we read it: try again
	}
	return i, true, nil
}

func connect(t *testing.T, i Info) *nats.Conn {
	t.Helper()
	pw, err := os.ReadFile(i.PasswordFile)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(i.NATS, nats.UserInfo(i.NATSUser, strings.TrimSpace(string(pw))), nats.Name("launch test"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func manifestAt(t *testing.T, run string, step int) train.Manifest {
	t.Helper()
	m, err := train.VerifyCheckpoint(filepath.Join(run, "checkpoints", fmt.Sprintf("step-%08d", step)))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestClusterUp is the seam of the whole system, on loopback.
func TestClusterUp(t *testing.T) {
	steps, every, checks := 100, 40, 10
	if testing.Short() {
		steps, every, checks = 24, 10, 5
	}
	data, work := demoData(t), t.TempDir()
	common := []string{"--recipe", "demo-ngf4", "--data-root", data, "--max-steps", fmt.Sprint(steps), "--checkpoint-every", fmt.Sprint(every),
		"--ring-timeout", "2m", "--log-every", "1000", "--sample-every", "1000"}

	// The reference: the same job in one process, three workers over NATS.
	ref := filepath.Join(work, "ref")
	var refOut output
	start := time.Now()
	refCmd := child(t, &refOut, append([]string{"train", "--out", ref, "--nodes", "3", "--transport", "nats", "--threads", "3", "--no-progress"}, common...)...)
	if err := exited(t, refCmd, 10*time.Minute, "crdgo train --nodes 3"); err != nil {
		t.Fatalf("crdgo train --nodes 3: %v\n%s", err, refOut.String())
	}
	t.Logf("crdgo train --nodes 3, %d steps: %v", steps, time.Since(start).Round(time.Millisecond))

	// The cluster.
	out := filepath.Join(work, "cluster")
	var upOut output
	start = time.Now()
	up := child(t, &upOut, append([]string{"cluster", "up", "--coordinators", "3", "--nodes", "3", "--out", out, "--threads", "1",
		"--checksum-every", fmt.Sprint(checks)}, common...)...)
	var info Info
	waitFor(t, 2*time.Minute, "cluster.json", func() (bool, error) {
		select {
		case <-up.done:
			return false, fmt.Errorf("crdgo cluster up ended: %v\n%s", up.err, upOut.String())
		default:
		}
		i, ok, err := readInfo(out)
		info = i
		return ok, err
	})
	nc := connect(t, info)
	pids := map[string]int{}
	for _, p := range info.Processes {
		pids[p.Name] = p.Pid
	}

	// Watch the job; kill the raft leader once, a third of the way in.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var (
		last      coordinator.Status
		killedAt  uint64
		oldLeader string
		killTime  time.Time
		healed    time.Duration
		upErr     error
		upEnded   bool
	)
	for !upEnded {
		select {
		case <-up.done:
			upErr, upEnded = up.err, true
			continue
		case <-ctx.Done():
			t.Fatalf("the job did not end within 10 minutes; last status: %s at %d\n%s", last.Status, last.Committed, upOut.String())
		case <-time.After(100 * time.Millisecond): // polling the status under ctx's deadline
		}
		sctx, scancel := context.WithTimeout(ctx, 3*time.Second)
		st, err := coordinator.RequestStatus(sctx, nc, info.Job, time.Second)
		scancel()
		if err != nil {
			continue // a replica was killed or the cluster is stopping: ask again
		}
		if st.Committed > last.Committed {
			last = st
		}
		// The leader as the leader itself says (a follower's view may trail).
		leading := st.RaftState == "Leader" && st.Leader == st.Replica
		if oldLeader == "" && st.Status == coordinator.Running && st.Committed >= uint64(steps/3) && leading {
			oldLeader, killedAt, killTime = st.Leader, st.Committed, time.Now()
			pid, ok := pids[oldLeader]
			if !ok {
				t.Fatalf("leader %q is not a process of %v", oldLeader, pids)
			}
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
				t.Fatalf("kill leader %s (pid %d): %v", oldLeader, pid, err)
			}
			t.Logf("killed the raft leader %s (pid %d) at committed step %d", oldLeader, pid, killedAt)
		}
		if oldLeader != "" && healed == 0 && leading && st.Leader != oldLeader && st.Committed > killedAt {
			healed = time.Since(killTime)
			t.Logf("new leader %s committed step %d, %v after the kill", st.Leader, st.Committed, healed.Round(time.Millisecond))
		}
	}
	t.Logf("crdgo cluster up, %d steps: %v", steps, time.Since(start).Round(time.Millisecond))
	if upErr != nil {
		t.Fatalf("crdgo cluster up: %v\n%s", upErr, upOut.String())
	}
	if oldLeader == "" || healed == 0 {
		t.Fatalf("the leader was not killed and replaced (killed %q at %d, healed %v)", oldLeader, killedAt, healed)
	}
	b, err := os.ReadFile(filepath.Join(out, StatusFile))
	if err != nil {
		t.Fatal(err)
	}
	last = coordinator.Status{}
	if err := json.Unmarshal(b, &last); err != nil {
		t.Fatal(err)
	}
	if last.Status != coordinator.Done || last.Committed != uint64(steps) {
		t.Fatalf("%s: %s at step %d (%s); want done at %d", StatusFile, last.Status, last.Committed, last.Reason, steps)
	}
	if last.Spec == nil || last.Spec.ChecksumEvery != uint64(checks) {
		t.Fatalf("spec %+v: want checksums every %d steps", last.Spec, checks)
	}
	// Done means every step committed, each after every rank's report, with
	// the checksums of steps checks, 2·checks, … equal (a mismatch or a
	// missing one fails the job: coordinator/fsm.go, node/cluster_test.go).
	if len(last.History) != steps {
		t.Fatalf("committed history has %d points; want %d", len(last.History), steps)
	}
	for i, p := range last.History {
		if p.Step != uint64(i+1) || p.World != 3 || p.Gen != 1 {
			t.Fatalf("committed point %d: step %d, world %d, gen %d; want step %d of world 3 in gen 1 (no gap, no repeat)", i, p.Step, p.World, p.Gen, i+1)
		}
	}
	cps := last.Checkpoints
	if len(cps) == 0 || cps[len(cps)-1].Step != uint64(steps) {
		t.Fatalf("committed checkpoints %v: want the last at step %d", cps, steps)
	}
	got, want := manifestAt(t, out, steps), manifestAt(t, ref, steps)
	committed := cps[len(cps)-1]
	if len(got.Files) != len(want.Files) || len(committed.Files) != len(got.Files) {
		t.Fatalf("checkpoint files: cluster %d, committed %d, crdgo train %d", len(got.Files), len(committed.Files), len(want.Files))
	}
	for k := range want.Files {
		g, w, c := got.Files[k], want.Files[k], committed.Files[k]
		if g != w {
			t.Errorf("%s: cluster %d bytes sha256 %.12s; crdgo train --nodes 3 %d bytes %.12s: want the same bits", w.Name, g.Size, g.SHA256, w.Size, w.SHA256)
		}
		if c.Name != g.Name || c.SHA256 != g.SHA256 || c.Size != g.Size {
			t.Errorf("committed manifest's %s (%.12s) is not the file rank 0 wrote (%.12s)", c.Name, c.SHA256, g.SHA256)
		}
	}
	for name, pid := range pids {
		waitFor(t, 30*time.Second, "process "+name+" gone", func() (bool, error) {
			return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH), nil
		})
	}
	logs, err := os.ReadDir(filepath.Join(out, "logs"))
	if err != nil || len(logs) != 6 {
		t.Errorf("logs/: %d files (%v); want one per process (6)", len(logs), err)
	}

}

// TestNodeRefused: a node is refused at join with the field that differs —
// crdgo_version, recipe_hash, dataset_hash — and a node without credentials
// is refused by an authenticating NATS server, each with a clear error. Two
// single-replica jobs on one NATS server (crdgo nats with a password): one
// requires another crdgo version, one another dataset.
func TestNodeRefused(t *testing.T) {
	data, work := demoData(t), t.TempDir()
	pwFile := filepath.Join(work, "nats.pw")
	if err := os.WriteFile(pwFile, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ports, err := freePorts("127.0.0.1", 3)
	if err != nil {
		t.Fatal(err)
	}
	url := fmt.Sprintf("nats://127.0.0.1:%d", ports[0])
	creds := []string{"--nats", url, "--nats-user", "crd", "--nats-password-file", pwFile}
	var natsOut output
	child(t, &natsOut, "nats", "--listen", fmt.Sprintf("127.0.0.1:%d", ports[0]), "--user", "crd", "--password-file", pwFile)
	waitFor(t, time.Minute, "crdgo nats listening", func() (bool, error) {
		nc, err := nats.Connect(url, nats.UserInfo("crd", "s3cret"))
		if err != nil {
			return false, nil
		}
		nc.Close()
		return true, nil
	})
	var c1, c2 output
	child(t, &c1, append([]string{"coordinator", "--id", "c0", "--raft-addr", fmt.Sprintf("127.0.0.1:%d", ports[1]), "--raft-dir", filepath.Join(work, "r1"),
		"--http", "", "--job", "versioned", "--recipe", "demo-ngf4", "--data-root", data, "--max-steps", "5", "--crdgo-version", "v0.0.0-other"}, creds...)...)
	child(t, &c2, append([]string{"coordinator", "--id", "c0", "--raft-addr", fmt.Sprintf("127.0.0.1:%d", ports[2]), "--raft-dir", filepath.Join(work, "r2"),
		"--http", "", "--job", "hashed", "--recipe", "demo-ngf4", "--max-steps", "5", "--dataset-hash", strings.Repeat("ab", 32)}, creds...)...)

	alt := filepath.Join(work, "demo-ngf4-alt.yaml")
	yaml, err := os.ReadFile(filepath.Join("..", "crd", "train", "recipes", "demo-ngf4.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(yaml, []byte("lambda_recon: 100")) {
		t.Fatal("demo-ngf4.yaml has no lambda_recon: 100 to change")
	}
	if err := os.WriteFile(alt, bytes.Replace(yaml, []byte("lambda_recon: 100"), []byte("lambda_recon: 99"), 1), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"version", append([]string{"--job", "versioned", "--recipe", "demo-ngf4"}, creds...), "crdgo_version differs"},
		{"dataset", append([]string{"--job", "hashed", "--recipe", "demo-ngf4"}, creds...), "dataset_hash differs"},
		{"recipe", append([]string{"--job", "hashed", "--recipe", alt}, creds...), "recipe_hash differs"},
		{"no credentials", []string{"--job", "hashed", "--nats", url}, "the server requires credentials"},
		{"wrong password", []string{"--job", "hashed", "--nats", url, "--nats-user", "crd", "--nats-password", "guess"}, "refused these credentials"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var out output
			args := append([]string{"node", "--id", "n0", "--data-root", data, "--out", t.TempDir(), "--metrics-addr", ""}, tt.args...)
			cmd := child(t, &out, args...)
			err := exited(t, cmd, time.Minute, "crdgo node ("+tt.name+")")
			if err == nil || !strings.Contains(out.String(), tt.want) {
				t.Errorf("crdgo node (%s): %v\n%s\nwant an error saying %q\ncoordinators:\n%s\n%s", tt.name, err, out.String(), tt.want, c1.String(), c2.String())
			}
		})
	}
}

// TestClusterUpInterrupt: Ctrl-C (SIGINT) on crdgo cluster up stops every
// process of the cluster; while it runs, every node serves /metrics at the
// address it gave the coordinator.
func TestClusterUpInterrupt(t *testing.T) {
	data, out := demoData(t), filepath.Join(t.TempDir(), "run")
	var upOut output
	up := child(t, &upOut, "cluster", "up", "--coordinators", "3", "--nodes", "2", "--out", out, "--recipe", "demo-ngf4", "--data-root", data,
		"--max-steps", "100000", "--checkpoint-every", "100000", "--threads", "1", "--ring-timeout", "1m")
	var info Info
	waitFor(t, 2*time.Minute, "cluster.json", func() (bool, error) {
		select {
		case <-up.done:
			return false, fmt.Errorf("crdgo cluster up ended: %v\n%s", up.err, upOut.String())
		default:
		}
		i, ok, err := readInfo(out)
		info = i
		return ok, err
	})
	nc := connect(t, info)
	var st coordinator.Status
	waitFor(t, 3*time.Minute, "step 3 committed", func() (bool, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		s, err := coordinator.RequestStatus(ctx, nc, info.Job, time.Second)
		st = s
		return err == nil && s.Committed >= 3, nil
	})
	for _, m := range st.Members {
		resp, err := http.Get("http://" + m.Addr + "/metrics")
		if err != nil {
			t.Fatalf("node %s: GET /metrics on %q: %v", m.ID, m.Addr, err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK || !bytes.Contains(b, []byte("\ncrdgo_node_step ")) || !bytes.Contains(b, []byte("crdgo_node_world 2")) {
			t.Fatalf("node %s: /metrics: %d, %v; want crdgo_node_step and crdgo_node_world 2 in:\n%.2000s", m.ID, resp.StatusCode, err, b)
		}
	}
	if len(st.Members) != 2 {
		t.Fatalf("members %v: want 2", st.Members)
	}
	start := time.Now()
	if err := up.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	if err := exited(t, up, time.Minute, "crdgo cluster up after SIGINT"); err != nil {
		t.Errorf("crdgo cluster up after SIGINT: %v\n%s", err, upOut.String())
	}
	t.Logf("crdgo cluster up stopped %v after SIGINT", time.Since(start).Round(time.Millisecond))
	for _, p := range info.Processes {
		if !errors.Is(syscall.Kill(p.Pid, 0), syscall.ESRCH) {
			t.Errorf("process %s (pid %d) outlived crdgo cluster up", p.Name, p.Pid)
		}
	}
}

// TestClusterUpNodeLost: a node process SIGKILLed mid-run (rank 2, then
// rank 0) ends its generation; the coordinator drops it after
// --node-timeout, the two others roll back to the committed step and finish
// the job in generation 2, and crdgo cluster up ends with status 0: the job
// is done, nothing lost.
func TestClusterUpNodeLost(t *testing.T) {
	for _, rank := range []int{2, 0} {
		t.Run(fmt.Sprintf("rank%d", rank), func(t *testing.T) {
			if testing.Short() && rank == 0 {
				t.Skip("-short: rank 2 only")
			}
			clusterUpNodeLost(t, rank)
		})
	}
}

// clusterUpNodeLost kills the node of rank lost. Rank 0 writes the run
// folder: when it is lost, the new rank 0 (a node that was rank 1) takes the
// same folder over and writes the checkpoints from the committed step on.
func clusterUpNodeLost(t *testing.T, lost int) {
	steps := 30
	if testing.Short() {
		steps = 20
	}
	data, out := demoData(t), filepath.Join(t.TempDir(), "run")
	var upOut output
	up := child(t, &upOut, "cluster", "up", "--coordinators", "3", "--nodes", "3", "--out", out, "--recipe", "demo-ngf4", "--data-root", data,
		"--max-steps", fmt.Sprint(steps), "--checkpoint-every", "10", "--checksum-every", "5", "--threads", "1",
		"--ring-timeout", "2m", "--node-timeout", "4s", "--log-every", "1000", "--sample-every", "1000")
	var info Info
	waitFor(t, 2*time.Minute, "cluster.json", func() (bool, error) {
		select {
		case <-up.done:
			return false, fmt.Errorf("crdgo cluster up ended: %v\n%s", up.err, upOut.String())
		default:
		}
		i, ok, err := readInfo(out)
		info = i
		return ok, err
	})
	nc := connect(t, info)
	pids := map[string]int{}
	for _, p := range info.Processes {
		pids[p.Name] = p.Pid
	}
	var victim string
	waitFor(t, 5*time.Minute, "step 8 committed", func() (bool, error) {
		select {
		case <-up.done:
			return false, fmt.Errorf("crdgo cluster up ended: %v\n%s", up.err, upOut.String())
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		st, err := coordinator.RequestStatus(ctx, nc, info.Job, time.Second)
		if err != nil || st.Committed < 8 {
			return false, nil
		}
		for _, m := range st.Members {
			if m.Rank == lost {
				victim = m.ID
			}
		}
		return victim != "", nil
	})
	if err := syscall.Kill(pids[victim], syscall.SIGKILL); err != nil {
		t.Fatalf("kill node %s: %v", victim, err)
	}
	if err := exited(t, up, 10*time.Minute, "crdgo cluster up"); err != nil {
		t.Fatalf("crdgo cluster up after node %s was killed: %v\n%s", victim, err, upOut.String())
	}
	b, err := os.ReadFile(filepath.Join(out, StatusFile))
	if err != nil {
		t.Fatal(err)
	}
	var st coordinator.Status
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	if st.Status != coordinator.Done || st.Committed != uint64(steps) || st.Gen.Gen != 2 || len(st.Gen.Ring) != 2 {
		t.Fatalf("%s: %s at step %d, generation %d of %d ranks (%s); want done at %d in generation 2 of 2", StatusFile, st.Status, st.Committed, st.Gen.Gen, len(st.Gen.Ring), st.Reason, steps)
	}
	if len(st.History) != steps {
		t.Fatalf("committed history has %d points; want %d", len(st.History), steps)
	}
	for i, p := range st.History {
		gen, world := uint64(1), 3
		if p.Step >= st.Gen.Start {
			gen, world = 2, 2
		}
		if p.Step != uint64(i+1) || p.Gen != gen || p.World != world {
			t.Fatalf("committed point %d: step %d gen %d world %d; want step %d gen %d world %d", i, p.Step, p.Gen, p.World, i+1, gen, world)
		}
	}
	t.Logf("node %s killed; generation 2 (world 2) from step %d; done at %d", victim, st.Gen.Start, st.Committed)
	if cps := st.Checkpoints; len(cps) == 0 || cps[len(cps)-1].Step != uint64(steps) {
		t.Fatalf("committed checkpoints %v: want the last at step %d", cps, steps)
	}
	manifestAt(t, out, steps)
}

// TestRunInProcess drives the launcher itself in the test process (so the
// race detector sees Start, Wait and Stop): a short job on 1 coordinator and
// 2 nodes ends done, with status.json, one log per child, and no child left.
func TestRunInProcess(t *testing.T) {
	data, out := demoData(t), filepath.Join(t.TempDir(), "run")
	cfg := Config{Binary: crdgoBin, Out: out, Coordinators: 1, Nodes: 2, Recipe: "demo-ngf4", DataRoot: data, MaxSteps: 6, CheckpointEvery: 3,
		ChecksumEvery: 2, NodeArgs: []string{"--threads", "1", "--ring-timeout", "1m", "--sample-every", "3"}}
	var w output
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := Run(ctx, cfg, &w, zap.NewNop()); err != nil {
		t.Fatalf("Run: %v\n%s", err, w.String())
	}
	if !strings.Contains(w.String(), "live page:  http://127.0.0.1:") || !strings.Contains(w.String(), "job demo-ngf4 done") {
		t.Errorf("Run printed:\n%s\nwant the live page and the job done", w.String())
	}
	b, err := os.ReadFile(filepath.Join(out, StatusFile))
	if err != nil {
		t.Fatal(err)
	}
	var st coordinator.Status
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	if st.Status != coordinator.Done || st.Committed != 6 || len(st.Checkpoints) != 2 {
		t.Fatalf("%s: %s at %d with %d checkpoints; want done at 6 with 2", StatusFile, st.Status, st.Committed, len(st.Checkpoints))
	}
	if st.Sample == nil || st.Sample.Step != 6 {
		t.Errorf("the live page's sample grid: %+v; want rank 0's of step 6", st.Sample)
	}
	i, ok, err := readInfo(out)
	if err != nil || !ok {
		t.Fatalf("%s: %v", InfoFile, err)
	}
	for _, p := range i.Processes {
		if _, err := os.Stat(p.Log); err != nil {
			t.Errorf("%s: log %v", p.Name, err)
		}
		if !errors.Is(syscall.Kill(p.Pid, 0), syscall.ESRCH) {
			t.Errorf("process %s (pid %d) outlived Run", p.Name, p.Pid)
		}
	}
	if err := Run(ctx, cfg, &w, zap.NewNop()); err == nil || !strings.Contains(err.Error(), "holds an earlier run") {
		t.Errorf("Run on the same --out again: %v; want refused (an earlier run)", err)
	}
}
