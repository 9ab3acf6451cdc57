// Package miniotest runs a real MinIO server for tests and benchmarks, as a
// separate program: MinIO is AGPLv3 and is never linked into crdgo.
//
// Binary builds the pinned server version once, with the Go toolchain, into
// $HOME/.cache/crdgo/minio-<Version>/minio (about 5 minutes on 2 cores; later runs
// take no time). Start runs it on 127.0.0.1 with a fresh folder and random
// credentials and waits on its health endpoint; Kill and Restart stop it hard and
// bring it back on the same folder and port.
//
// In tests, New starts a server or, when MinIO cannot be built here, skips with
// the reason — except under CI (CRDGO_CI=1), where that is a failure.
package miniotest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// Version is the MinIO server module version built and run (it has no tagged
// releases on the module proxy).
const Version = "v0.0.0-20260212201848-7aac2a2c5b7c"

const module = "github.com/minio/minio"

// CacheDir is where the server binary of Version lives: $CRDGO_MINIO_CACHE, or
// $HOME/.cache/crdgo/minio-<Version>.
func CacheDir() (string, error) {
	if d := os.Getenv("CRDGO_MINIO_CACHE"); d != "" {
		return d, nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("miniotest: no home folder for the MinIO cache: %w", err)
	}
	return filepath.Join(home, ".cache", "crdgo", "minio-"+Version), nil
}

// Binary returns the path of the MinIO server, building it first when it is
// missing. Processes building at once wait on a lock file; the binary appears
// under its final name only when the build succeeded. logw receives the build's
// output (io.Discard is fine).
func Binary(ctx context.Context, logw io.Writer) (string, error) {
	dir, err := CacheDir()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "minio")
	if ok, err := runs(bin); ok {
		return bin, nil
	} else if err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("miniotest: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, "build.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", fmt.Errorf("miniotest: %w", err)
	}
	defer lock.Close()
	if err := flock(ctx, lock); err != nil {
		return "", fmt.Errorf("miniotest: waiting for another build of MinIO: %w", err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if ok, _ := runs(bin); ok { // built while we waited
		return bin, nil
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("miniotest: building MinIO needs the Go toolchain: %w", err)
	}
	tmp, err := os.MkdirTemp(dir, "build-")
	if err != nil {
		return "", fmt.Errorf("miniotest: %w", err)
	}
	defer os.RemoveAll(tmp)
	start := time.Now()
	fmt.Fprintf(logw, "miniotest: building MinIO %s into %s (about 5 minutes on 2 cores, once)\n", Version, dir)
	cmd := exec.CommandContext(ctx, goBin, "install", module+"@"+Version)
	cmd.Dir = tmp // outside any module: crdgo's go.mod must not steer the build
	cmd.Env = append(os.Environ(), "GOBIN="+tmp, "GOFLAGS=-mod=mod", "CGO_ENABLED=0")
	var out bytes.Buffer
	cmd.Stdout = io.MultiWriter(&out, logw)
	cmd.Stderr = cmd.Stdout
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("miniotest: go install %s@%s: %w\n%s", module, Version, err, tail(out.Bytes(), 2000))
	}
	if err := os.Rename(filepath.Join(tmp, "minio"), bin); err != nil {
		return "", fmt.Errorf("miniotest: %w", err)
	}
	fmt.Fprintf(logw, "miniotest: built MinIO in %v\n", time.Since(start).Round(time.Second))
	return bin, nil
}

// runs reports whether bin exists and is an executable file.
func runs(bin string) (bool, error) {
	fi, err := os.Stat(bin)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("miniotest: %w", err)
	case !fi.Mode().IsRegular() || fi.Mode()&0o111 == 0:
		return false, fmt.Errorf("miniotest: %s is not an executable file", bin)
	}
	return true, nil
}

// flock takes an exclusive lock on f, giving up when ctx ends.
func flock(ctx context.Context, f *os.File) error {
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond): // a build takes minutes: a coarse poll is fine
		}
	}
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// Server is a running MinIO server.
type Server struct {
	Bin       string
	Dir       string // the server's data folder
	Addr      string // 127.0.0.1:port
	AccessKey string
	SecretKey string

	mu   sync.Mutex
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{} // closed when cmd has exited
}

// Config says how to start a server.
type Config struct {
	Bin string // the server binary (Binary)
	Dir string // data folder, created if missing
	// Addr is the listen address; "" picks a free port on 127.0.0.1.
	Addr string
	// ReadyTimeout bounds the wait for the health endpoint (30 s when 0).
	ReadyTimeout time.Duration
}

// Start runs a server on a fresh set of random credentials and waits until its
// health endpoint answers.
func Start(ctx context.Context, c Config) (*Server, error) {
	if c.Addr == "" {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		c.Addr = "127.0.0.1:" + strconv.Itoa(port)
	}
	if c.ReadyTimeout == 0 {
		c.ReadyTimeout = 30 * time.Second
	}
	if err := os.MkdirAll(c.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("miniotest: %w", err)
	}
	s := &Server{Bin: c.Bin, Dir: c.Dir, Addr: c.Addr, AccessKey: "crdgo-" + randHex(6), SecretKey: randHex(20)}
	if err := s.start(ctx, c.ReadyTimeout); err != nil {
		return nil, err
	}
	return s, nil
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("miniotest: no free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (s *Server) start(ctx context.Context, readyTimeout time.Duration) error {
	cmd := exec.Command(s.Bin, "server", s.Dir, "--address", s.Addr, "--quiet")
	cmd.Env = append(os.Environ(),
		"MINIO_ROOT_USER="+s.AccessKey,
		"MINIO_ROOT_PASSWORD="+s.SecretKey,
		"MINIO_BROWSER=off",        // no console listener on another port
		"MINIO_UPDATE=off",         // no calls home
		"MINIO_CI_CD=on",           // no root-disk checks on test folders
		"MINIO_API_REQUESTS_MAX=0", // the default, spelled out: no request throttling
	)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // never outlive the test process
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("miniotest: start %s: %w", s.Bin, err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	s.mu.Lock()
	s.cmd, s.out, s.done = cmd, out, done
	s.mu.Unlock()
	if err := s.waitReady(ctx, readyTimeout); err != nil {
		s.Kill()
		return err
	}
	return nil
}

// waitReady polls /minio/health/live until it answers 200, the process exits, or
// the deadline passes.
func (s *Server) waitReady(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	url := "http://" + s.Addr + "/minio/health/live"
	client := &http.Client{Timeout: time.Second}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-s.done:
			return fmt.Errorf("miniotest: MinIO exited before it was ready: %s\n%s", s.cmd.ProcessState, s.out.tail(2000))
		case <-ctx.Done():
			return fmt.Errorf("miniotest: MinIO on %s not ready after %v: %w\n%s", s.Addr, timeout, ctx.Err(), s.out.tail(2000))
		case <-tick.C:
		}
	}
}

// Endpoint is the server's host:port, for s3 URLs' endpoint parameter.
func (s *Server) Endpoint() string { return s.Addr }

// URL is the s3 URL of bucket/prefix on this server.
func (s *Server) URL(bucket, prefix string) string {
	u := "s3://" + bucket
	if prefix != "" {
		u += "/" + prefix
	}
	return u + "?endpoint=" + s.Addr + "&tls=false&path-style=true"
}

// Kill stops the server with SIGKILL, as a crash would, and waits for it to exit.
func (s *Server) Kill() {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Kill()
	<-done
}

// Restart starts the server again on the same folder, port and credentials
// (after Kill or Stop) and waits until it is ready.
func (s *Server) Restart(ctx context.Context) error {
	s.Kill()
	return s.start(ctx, 30*time.Second)
}

// Stop ends the server with SIGTERM, then SIGKILL after 5 s, and waits for it.
func (s *Server) Stop() {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		cmd.Process.Kill()
		<-done
	}
}

// Output is the tail of the server's output, for failure messages.
func (s *Server) Output() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.out == nil {
		return ""
	}
	return string(s.out.tail(4000))
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.b.Len() > 1<<20 { // keep the last MiB or so
		rest := append([]byte(nil), tail(b.b.Bytes(), 512<<10)...)
		b.b.Reset()
		b.b.Write(rest)
	}
	return b.b.Write(p)
}

func (b *syncBuffer) tail(n int) []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]byte(nil), tail(b.b.Bytes(), n)...)
}

// TB is the part of testing.TB New uses (this package does not import testing,
// so that commands may start servers too).
type TB interface {
	Helper()
	Logf(format string, args ...any)
	Fatalf(format string, args ...any)
	Skipf(format string, args ...any)
	Cleanup(func())
	TempDir() string
	Context() context.Context
}

// InCI reports whether CRDGO_CI=1: tests that need MinIO must run, not skip.
func InCI() bool { return os.Getenv("CRDGO_CI") == "1" }

// New starts a server for a test, on a fresh folder, and stops it at the end. When
// MinIO cannot be built or started, the test is skipped with the reason, or fails
// under CI.
func New(t TB) *Server {
	t.Helper()
	ctx := t.Context()
	bin, err := Binary(ctx, logWriter{t})
	if err != nil {
		if InCI() {
			t.Fatalf("MinIO needed under CRDGO_CI=1: %v", err)
		}
		t.Skipf("no MinIO server (%v); CRDGO_CI=1 makes this a failure", err)
	}
	s, err := Start(ctx, Config{Bin: bin, Dir: filepath.Join(t.TempDir(), "minio")})
	if err != nil {
		t.Fatalf("%v", err)
	}
	t.Cleanup(s.Stop)
	return s
}

type logWriter struct{ t TB }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Logf("%s", bytes.TrimRight(p, "\n"))
	return len(p), nil
}
