package natsd

import (
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func start(t *testing.T, cfg Config) *Server {
	t.Helper()
	s, err := Start(cfg, zaptest.NewLogger(t))
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(s.Shutdown)
	return s
}

func connect(t *testing.T, url string, opts ...nats.Option) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func TestStartServesOverTCPAndInProcess(t *testing.T) {
	s := start(t, DefaultConfig())
	if !strings.HasPrefix(s.ClientURL(), "nats://127.0.0.1:") || strings.HasSuffix(s.ClientURL(), ":4222") {
		t.Fatalf("ClientURL = %q; want a random loopback port", s.ClientURL())
	}
	if s.ClusterURL() != "" {
		t.Errorf("ClusterURL = %q without a cluster; want empty", s.ClusterURL())
	}
	tcp := connect(t, s.ClientURL())
	inproc, err := s.Connect()
	if err != nil {
		t.Fatal(err)
	}
	defer inproc.Close()
	if got, want := inproc.MaxPayload(), int64(8<<20); got != want {
		t.Errorf("MaxPayload = %d; want %d", got, want)
	}
	sub, err := inproc.SubscribeSync("x.y")
	if err != nil {
		t.Fatal(err)
	}
	if err := inproc.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := tcp.Publish("x.y", []byte("hello")); err != nil {
		t.Fatal(err)
	}
	m, err := sub.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatalf("in-process subscriber: %v", err)
	}
	if string(m.Data) != "hello" {
		t.Fatalf("got %q; want hello", m.Data)
	}
}

func TestShutdownClosesThePort(t *testing.T) {
	s, err := Start(DefaultConfig(), zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	addr := strings.TrimPrefix(s.ClientURL(), "nats://")
	s.Shutdown()
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatalf("dial %s after Shutdown succeeded; want refused", addr)
	}
}

func TestUserPassword(t *testing.T) {
	cfg := DefaultConfig()
	cfg.User, cfg.Password = "crd", "s3cret"
	s := start(t, cfg)
	if nc, err := nats.Connect(s.ClientURL()); err == nil {
		nc.Close()
		t.Fatal("connect without credentials succeeded; want authorization violation")
	} else if !errors.Is(err, nats.ErrAuthorization) && !strings.Contains(strings.ToLower(err.Error()), "authorization") {
		t.Fatalf("connect without credentials: %v; want authorization violation", err)
	}
	connect(t, s.ClientURL(), nats.UserInfo("crd", "s3cret"))
	nc, err := s.Connect() // in process, with the server's credentials
	if err != nil {
		t.Fatalf("Connect with configured credentials: %v", err)
	}
	nc.Close()
}

// Two embedded servers in one cluster carry a request from a client of the first
// to a responder on the second and the reply back.
func TestClusterRoutesMessages(t *testing.T) {
	a := DefaultConfig()
	a.Name = "a"
	a.Cluster = ClusterConfig{Name: "crd", Port: -1, User: "route", Password: "pw"}
	sa := start(t, a)
	if !strings.HasPrefix(sa.ClusterURL(), "nats-route://127.0.0.1:") {
		t.Fatalf("ClusterURL = %q; want nats-route://127.0.0.1:port", sa.ClusterURL())
	}
	b := DefaultConfig()
	b.Name = "b"
	seed := strings.Replace(sa.ClusterURL(), "nats-route://", "nats-route://route:pw@", 1)
	b.Cluster = ClusterConfig{Name: "crd", Port: -1, Routes: []string{seed}, User: "route", Password: "pw"}
	sb := start(t, b)

	waitFor(t, 10*time.Second, "a route between a and b", func() bool { return sa.NumRoutes() > 0 && sb.NumRoutes() > 0 })

	ncb, err := sb.Connect()
	if err != nil {
		t.Fatal(err)
	}
	defer ncb.Close()
	sub, err := ncb.Subscribe("svc.echo", func(m *nats.Msg) { m.Respond(append([]byte("b:"), m.Data...)) })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := ncb.Flush(); err != nil {
		t.Fatal(err)
	}
	nca := connect(t, sa.ClientURL())
	// The subscription's interest reaches server a through the route some time
	// after b has it: until then a answers "no responders".
	var reply *nats.Msg
	waitFor(t, 10*time.Second, "a reply through the route", func() bool {
		reply, err = nca.Request("svc.echo", []byte("ping"), time.Second)
		return err == nil
	})
	if string(reply.Data) != "b:ping" {
		t.Fatalf("reply = %q; want b:ping", reply.Data)
	}
}

func TestValidateReportsEveryField(t *testing.T) {
	c := Config{Port: 70000, User: "u", MaxPayload: -1, Cluster: ClusterConfig{Routes: []string{"x"}}}
	err := c.Validate()
	if err == nil {
		t.Fatal("Validate() = nil; want errors")
	}
	for _, field := range []string{"natsd.port", "natsd.password", "natsd.max_payload", "natsd.ready_timeout", "natsd.cluster.routes"} {
		if !strings.Contains(err.Error(), field) {
			t.Errorf("Validate() = %v; want a problem with %s", err, field)
		}
	}
	if err := DefaultConfig().Validate(); err != nil {
		t.Errorf("DefaultConfig().Validate() = %v; want nil", err)
	}
}

// waitFor polls cond until it holds, failing the test with what it waited for
// after timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(timeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline:
			t.Fatalf("no %s after %v", what, timeout)
		case <-tick.C:
		}
	}
}
