// Package launch starts a whole crdgo cluster on one machine, each part its
// own process: a NATS server, the coordinator's raft replicas and the worker
// nodes, all children of the same binary (crdgo coordinator, crdgo node), so
// that one command — crdgo cluster up — runs the real system on loopback
// (docs/cluster.md, "crdgo cluster up").
//
// The children log into <out>/logs/<name>.log. The NATS server runs in this
// process and requires a password, which the children read from
// <out>/nats.password; the coordinators' HTTP token is in <out>/http.token.
// <out>/cluster.json says where everything is, and <out>/status.json is the
// job's final status, which decides how Run ends. Stop (and cancelling Run's
// ctx) stops the nodes, then the coordinators, then NATS; on Linux the
// children are also killed by the kernel if this process dies.
package launch

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/crdgo/crdgo/coordinator"
	"github.com/crdgo/crdgo/natsd"
)

// Config is a cluster on this machine.
type Config struct {
	// Binary is the crdgo executable the children run (os.Executable).
	Binary string
	// Out is the run folder: rank 0 writes the run there (checkpoints/,
	// samples/, metrics.jsonl), and the cluster its logs/, coordinators/ (raft
	// logs), the secrets and cluster.json. It must not hold an earlier run.
	Out string
	// Job names the job (empty: the recipe's name, made a NATS token).
	Job string
	// Coordinators is the number of raft replicas (1, 3 or 5); Nodes the
	// number of worker nodes (1 to the global batch).
	Coordinators, Nodes int
	// The job: recipe (a name or a YAML file), the datasets' folder, the last
	// step, the checkpoint schedule (0: the recipe's), the global batch (0:
	// the recipe's), the seed (nil: the recipe's), the parameter checksums'
	// interval (0: the coordinator's default).
	Recipe, DataRoot string
	MaxSteps         int
	CheckpointEvery  int
	Batch            int
	Seed             *uint64
	ChecksumEvery    int
	// NodeArgs are more flags for every node (crdgo node --help): the
	// engine, the allreduce, the pretrained networks, the reports.
	NodeArgs []string
	// GlobalArgs go to every child before its command (--log-format …).
	GlobalArgs []string
	// HTTPHost is where the coordinators' HTTP listens (empty: 127.0.0.1).
	HTTPHost string
	// RaftTimeout and NodeTimeout are the coordinators' (0: 500 ms and 10 s,
	// for a machine that also trains the nodes).
	RaftTimeout, NodeTimeout time.Duration
	// StopTimeout is how long a child may take to stop after SIGTERM before
	// it is killed (0: 15 s).
	StopTimeout time.Duration
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// Validate reports every problem at once, naming the flag.
func (c Config) Validate() error {
	var errs []error
	if c.Binary == "" {
		errs = append(errs, errors.New("launch: no crdgo binary"))
	}
	if c.Out == "" {
		errs = append(errs, errors.New("--out: empty: want the run folder"))
	}
	if c.Job != "" && !nameRE.MatchString(c.Job) {
		errs = append(errs, fmt.Errorf("--job %q: want 1-64 letters, digits, '-' or '_'", c.Job))
	}
	if c.Coordinators != 1 && c.Coordinators != 3 && c.Coordinators != 5 {
		errs = append(errs, fmt.Errorf("--coordinators %d: want 1, 3 or 5 (a raft group of an odd size)", c.Coordinators))
	}
	if c.Nodes < 1 || c.Nodes > 64 {
		errs = append(errs, fmt.Errorf("--nodes %d: want 1..64", c.Nodes))
	}
	if c.Recipe == "" {
		errs = append(errs, errors.New("--recipe: empty"))
	}
	if c.DataRoot == "" {
		errs = append(errs, errors.New("--data-root: empty"))
	}
	if c.MaxSteps < 1 {
		errs = append(errs, fmt.Errorf("--max-steps %d: a cluster job ends at a step: want ≥ 1", c.MaxSteps))
	}
	for _, f := range []struct {
		name string
		v    int
	}{{"--checkpoint-every", c.CheckpointEvery}, {"--batch", c.Batch}, {"--checksum-every", c.ChecksumEvery}} {
		if f.v < 0 {
			errs = append(errs, fmt.Errorf("%s %d: want ≥ 0", f.name, f.v))
		}
	}
	if c.RaftTimeout < 0 || c.NodeTimeout < 0 || c.StopTimeout < 0 {
		errs = append(errs, errors.New("launch: negative timeouts"))
	}
	return errors.Join(errs...)
}

// JobName makes a recipe's name (or a YAML file's) a job name.
func JobName(recipe string) string {
	return coordinator.NameFrom(strings.TrimSuffix(filepath.Base(recipe), filepath.Ext(recipe)), "job")
}

// Process is one child.
type Process struct {
	Name string   // n0, c1, …
	Role string   // "coordinator" or "node"
	Args []string // after the binary
	Log  string   // its log file

	cmd  *exec.Cmd
	done chan struct{}
	err  error // after done: how it ended
}

// Pid is the child's process ID.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Done is closed when the child has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Err is how the child ended (nil: exit status 0); valid after Done.
func (p *Process) Err() error { return p.err }

// Kill sends SIGKILL to the child (tests kill the raft leader with it).
func (p *Process) Kill() error { return p.cmd.Process.Kill() }

// Info is cluster.json: where everything of a running cluster is.
type Info struct {
	Job          string        `json:"job"`
	NATS         string        `json:"nats"`
	NATSUser     string        `json:"nats_user"`
	PasswordFile string        `json:"nats_password_file"`
	TokenFile    string        `json:"http_token_file"`
	LivePages    []string      `json:"live_pages"`
	Processes    []ProcessInfo `json:"processes"`
}

// ProcessInfo is one child in cluster.json.
type ProcessInfo struct {
	Name string `json:"name"`
	Role string `json:"role"`
	Pid  int    `json:"pid"`
	Log  string `json:"log"`
	HTTP string `json:"http,omitempty"` // a coordinator's HTTP address
}

// InfoFile is cluster.json's name in the run folder.
const InfoFile = "cluster.json"

// Cluster is a started cluster.
type Cluster struct {
	cfg   Config
	log   *zap.Logger
	nats  *natsd.Server
	info  Info
	procs []*Process

	stopOnce sync.Once
	wg       sync.WaitGroup
}

// Start checks the run folder, starts NATS in this process, then the
// coordinators and the nodes, and writes cluster.json. It returns once every
// child has started; Wait waits for the job.
func Start(cfg Config, log *zap.Logger) (*Cluster, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Job == "" {
		cfg.Job = JobName(cfg.Recipe)
	}
	if cfg.RaftTimeout == 0 {
		cfg.RaftTimeout = 500 * time.Millisecond
	}
	if cfg.NodeTimeout == 0 {
		cfg.NodeTimeout = 10 * time.Second
	}
	if cfg.StopTimeout == 0 {
		cfg.StopTimeout = 15 * time.Second
	}
	if cfg.HTTPHost == "" {
		cfg.HTTPHost = "127.0.0.1"
	}
	out, err := filepath.Abs(cfg.Out)
	if err != nil {
		return nil, fmt.Errorf("--out %s: %w", cfg.Out, err)
	}
	cfg.Out = out
	if err := freshOut(out); err != nil {
		return nil, err
	}
	for _, d := range []string{"logs", "coordinators"} {
		if err := os.MkdirAll(filepath.Join(out, d), 0o755); err != nil {
			return nil, fmt.Errorf("--out: %w", err)
		}
	}
	c := &Cluster{cfg: cfg, log: log}
	c.info.Job = cfg.Job
	password, token := randomSecret(), randomSecret()
	c.info.NATSUser = "crdgo"
	c.info.PasswordFile = filepath.Join(out, "nats.password")
	c.info.TokenFile = filepath.Join(out, "http.token")
	for _, s := range []struct{ path, v string }{{c.info.PasswordFile, password}, {c.info.TokenFile, token}} {
		if err := os.WriteFile(s.path, []byte(s.v+"\n"), 0o600); err != nil {
			return nil, fmt.Errorf("--out: %w", err)
		}
	}
	ncfg := natsd.DefaultConfig()
	ncfg.User, ncfg.Password = c.info.NATSUser, password
	if c.nats, err = natsd.Start(ncfg, log.Named("nats")); err != nil {
		return nil, fmt.Errorf("launch: NATS server: %w", err)
	}
	c.info.NATS = c.nats.ClientURL()
	if err := c.startChildren(); err != nil {
		c.Stop()
		return nil, err
	}
	b, err := json.MarshalIndent(c.info, "", "  ")
	if err == nil {
		err = os.WriteFile(filepath.Join(out, InfoFile), append(b, '\n'), 0o644)
	}
	if err != nil {
		c.Stop()
		return nil, fmt.Errorf("launch: %s: %w", InfoFile, err)
	}
	return c, nil
}

// freshOut refuses a run folder that holds an earlier run: its checkpoints
// or its coordinators' raft state (which would bring the old job back).
func freshOut(out string) error {
	for _, d := range []string{"checkpoints", "coordinators"} {
		entries, err := os.ReadDir(filepath.Join(out, d))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("--out %s: %w", out, err)
		}
		if len(entries) > 0 {
			return fmt.Errorf("--out %s: holds an earlier run (%s/): a cluster starts in a fresh run folder", out, d)
		}
	}
	return nil
}

func randomSecret() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// freePorts finds n free TCP ports on host. Another process may take one
// before the child binds it; the child then fails naming the address.
func freePorts(host string, n int) ([]int, error) {
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	var ports []int
	for range n {
		ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			return nil, fmt.Errorf("launch: a free port on %s: %w", host, err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func (c *Cluster) startChildren() error {
	cfg := c.cfg
	ports, err := freePorts("127.0.0.1", cfg.Coordinators)
	if err != nil {
		return err
	}
	httpPorts, err := freePorts(cfg.HTTPHost, cfg.Coordinators)
	if err != nil {
		return err
	}
	natsArgs := []string{"--nats", c.info.NATS, "--nats-user", c.info.NATSUser, "--nats-password-file", c.info.PasswordFile}
	var peers []string
	for i, p := range ports {
		peers = append(peers, fmt.Sprintf("c%d=127.0.0.1:%d", i, p))
	}
	for i := range cfg.Coordinators {
		id := fmt.Sprintf("c%d", i)
		httpAddr := net.JoinHostPort(cfg.HTTPHost, strconv.Itoa(httpPorts[i]))
		args := []string{"coordinator", "--id", id, "--raft-addr", fmt.Sprintf("127.0.0.1:%d", ports[i]),
			"--peers", strings.Join(peers, ","), "--raft-dir", filepath.Join(cfg.Out, "coordinators", id),
			"--http", httpAddr, "--http-token-file", c.info.TokenFile,
			"--raft-timeout", cfg.RaftTimeout.String(), "--node-timeout", cfg.NodeTimeout.String(),
			"--job", cfg.Job, "--recipe", cfg.Recipe, "--data-root", cfg.DataRoot,
			"--min-nodes", strconv.Itoa(cfg.Nodes), "--max-steps", strconv.Itoa(cfg.MaxSteps)}
		if cfg.CheckpointEvery > 0 {
			args = append(args, "--checkpoint-every", strconv.Itoa(cfg.CheckpointEvery))
		}
		if cfg.Batch > 0 {
			args = append(args, "--batch", strconv.Itoa(cfg.Batch))
		}
		if cfg.Seed != nil {
			args = append(args, "--seed", strconv.FormatUint(*cfg.Seed, 10))
		}
		if cfg.ChecksumEvery > 0 {
			args = append(args, "--checksum-every", strconv.Itoa(cfg.ChecksumEvery))
		}
		p, err := c.start(id, "coordinator", append(args, natsArgs...))
		if err != nil {
			return err
		}
		c.info.LivePages = append(c.info.LivePages, "http://"+httpAddr+"/")
		c.info.Processes = append(c.info.Processes, ProcessInfo{Name: id, Role: p.Role, Pid: p.Pid(), Log: p.Log, HTTP: httpAddr})
	}
	for i := range cfg.Nodes {
		id := fmt.Sprintf("n%d", i)
		args := []string{"node", "--job", cfg.Job, "--id", id, "--recipe", cfg.Recipe, "--data-root", cfg.DataRoot,
			"--out", cfg.Out, "--metrics-addr", "127.0.0.1:0"}
		args = append(args, cfg.NodeArgs...)
		p, err := c.start(id, "node", append(args, natsArgs...))
		if err != nil {
			return err
		}
		c.info.Processes = append(c.info.Processes, ProcessInfo{Name: id, Role: p.Role, Pid: p.Pid(), Log: p.Log})
	}
	return nil
}

// start runs one child with its output in logs/<name>.log.
func (c *Cluster) start(name, role string, args []string) (*Process, error) {
	args = append(slices.Clone(c.cfg.GlobalArgs), args...)
	logPath := filepath.Join(c.cfg.Out, "logs", name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("launch: %s: %w", name, err)
	}
	cmd := exec.Command(c.cfg.Binary, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = os.Environ()
	childAttrs(cmd)
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("launch: start %s (%s %s): %w", name, c.cfg.Binary, args[0], err)
	}
	p := &Process{Name: name, Role: role, Args: args, Log: logPath, cmd: cmd, done: make(chan struct{})}
	c.procs = append(c.procs, p)
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	c.log.Info("started", zap.String("process", name), zap.Int("pid", cmd.Process.Pid), zap.String("log", logPath))
	return p, nil
}

// Info is where everything is (cluster.json).
func (c *Cluster) Info() Info { return c.info }

// Process returns the child named name (c0, n2, …), or nil.
func (c *Cluster) Process(name string) *Process {
	for _, p := range c.procs {
		if p.Name == name {
			return p
		}
	}
	return nil
}

// Processes are the children in start order: coordinators, then nodes.
func (c *Cluster) Processes() []*Process { return slices.Clone(c.procs) }

// Wait waits until every node has exited, or ctx ends, or too few
// coordinators are left for a raft majority; then it stops the rest. A node
// that fails does not end the job by itself: the others go on in the next
// generation without it. Wait returns nil when the job is done (the
// coordinators say so, in StatusFile), else an error naming the job's status
// and the first node that failed with its log, ctx's error, or the lost
// majority.
func (c *Cluster) Wait(ctx context.Context) error {
	defer c.Stop()
	var nodes, coords []*Process
	for _, p := range c.procs {
		if p.Role == "node" {
			nodes = append(nodes, p)
		} else {
			coords = append(coords, p)
		}
	}
	var first error
	pending := slices.Clone(nodes)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for len(pending) > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
		pending = slices.DeleteFunc(pending, func(p *Process) bool {
			select {
			case <-p.done:
			default:
				return false
			}
			if p.err != nil {
				c.log.Warn("node ended", zap.String("node", p.Name), zap.Error(p.err), zap.String("log", p.Log))
				if first == nil {
					first = fmt.Errorf("node %s: %v (its log: %s%s)", p.Name, p.err, p.Log, lastError(p.Log))
				}
			}
			return true
		})
		alive, why := 0, ""
		for _, p := range coords {
			select {
			case <-p.done:
				if why == "" {
					why = fmt.Sprintf("; %s: %v (its log: %s%s)", p.Name, p.err, p.Log, lastError(p.Log))
				}
			default:
				alive++
			}
		}
		if 2*alive <= len(coords) {
			return fmt.Errorf("launch: %d of %d coordinators are left, no raft majority: stopping%s", alive, len(coords), why)
		}
	}
	st, err := c.saveStatus(ctx)
	switch {
	case err != nil && first == nil:
		c.log.Warn("final status not saved", zap.Error(err))
		return nil // every node saw the job done
	case err != nil:
		return first
	case st.Status == coordinator.Done:
		if first != nil {
			c.log.Warn("the job is done without a node that failed", zap.Error(first))
		}
		return nil
	case first != nil:
		return fmt.Errorf("job %s %s (%s); %w", c.cfg.Job, st.Status, st.Reason, first)
	}
	return fmt.Errorf("job %s: %s at step %d after every node ended (%s)", c.cfg.Job, st.Status, st.Committed, st.Reason)
}

// StatusFile is the job's final status in the run folder, as a coordinator
// replica answered after the nodes ended (coordinator.Status, JSON).
const StatusFile = "status.json"

// saveStatus asks the coordinators for the job's status — one that says done
// or failed, if one does within 10 s — and writes it to StatusFile, before
// the coordinators stop.
func (c *Cluster) saveStatus(ctx context.Context) (coordinator.Status, error) {
	nc, err := c.nats.Connect()
	if err != nil {
		return coordinator.Status{}, err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var st coordinator.Status
	for {
		s, err := coordinator.RequestStatus(ctx, nc, c.cfg.Job, time.Second)
		if err != nil {
			if st.V == 0 {
				return st, err
			}
			break // the last answer, not yet final
		}
		st = s
		if st.Status == coordinator.Done || st.Status == coordinator.Failed {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond): // a follower catching up
		}
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return st, err
	}
	return st, os.WriteFile(filepath.Join(c.cfg.Out, StatusFile), append(b, '\n'), 0o644)
}

// lastError is the last line of a log that looks like the error the process
// ended with ("crdgo: …"), for the message that names the process.
func lastError(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > 64<<10 {
		f.Seek(st.Size()-64<<10, io.SeekStart)
	}
	b, _ := io.ReadAll(f)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.HasPrefix(lines[i], "crdgo: ") {
			return ": " + strings.TrimPrefix(lines[i], "crdgo: ")
		}
	}
	return ""
}

// Stop stops every child still running — the nodes first (SIGTERM: they
// leave the job after a step they agree on), then the coordinators — killing
// any that takes longer than StopTimeout, and then NATS. It returns when all
// have exited. It is safe to call more than once.
func (c *Cluster) Stop() {
	c.stopOnce.Do(func() {
		for _, role := range []string{"node", "coordinator"} {
			var group []*Process
			for _, p := range c.procs {
				if p.Role == role {
					group = append(group, p)
				}
			}
			for _, p := range group {
				select {
				case <-p.done:
				default:
					p.cmd.Process.Signal(syscall.SIGTERM)
				}
			}
			deadline := time.After(c.cfg.StopTimeout)
			for _, p := range group {
				select {
				case <-p.done:
				case <-deadline:
					c.log.Warn("child did not stop: killing it", zap.String("process", p.Name), zap.Duration("after", c.cfg.StopTimeout))
					for _, q := range group {
						q.cmd.Process.Kill()
					}
					<-p.done
				}
			}
		}
		c.wg.Wait()
		if c.nats != nil {
			c.nats.Shutdown()
		}
	})
}

// Run starts the cluster, tells w where the live page, the logs and the
// status command are, and waits for the job (see Wait). Cancelling ctx (Ctrl-C)
// stops every child.
func Run(ctx context.Context, cfg Config, w io.Writer, log *zap.Logger) error {
	c, err := Start(cfg, log)
	if err != nil {
		return err
	}
	i := c.Info()
	fmt.Fprintf(w, "crdgo cluster: job %s, %d coordinators, %d nodes, NATS %s\n", i.Job, c.cfg.Coordinators, c.cfg.Nodes, i.NATS)
	fmt.Fprintf(w, "live page:  %s\n", strings.Join(i.LivePages, "  "))
	fmt.Fprintf(w, "logs:       %s\n", filepath.Join(c.cfg.Out, "logs"))
	fmt.Fprintf(w, "status:     crdgo cluster status --job %s --nats %s --nats-user %s --nats-password-file %s\n", i.Job, i.NATS, i.NATSUser, i.PasswordFile)
	fmt.Fprintf(w, "stop:       Ctrl-C, or curl -X POST -H \"Authorization: Bearer $(cat %s)\" %sstop\n", i.TokenFile, i.LivePages[0])
	err = c.Wait(ctx)
	if err == nil {
		fmt.Fprintf(w, "job %s done: the run is in %s\n", i.Job, c.cfg.Out)
	}
	return err
}
