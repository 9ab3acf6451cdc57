// Package natsd runs a nats-server inside the process: for single-machine runs and
// tests (a random port), and on every node of a cluster, where each node carries its
// own server and the servers join one NATS cluster through routes, so that no
// single server carries the whole ring's traffic (see docs/allreduce.md). It also
// connects clients to any NATS server with the cluster's credentials and TLS
// (ClientConfig, Connect), so coordinators and nodes authenticate one way.
package natsd

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"go.uber.org/zap"
)

// Config configures an embedded server.
type Config struct {
	// Name identifies the server in a cluster (and in logs); empty: generated.
	Name string
	// Host and Port are where clients connect; Port -1 picks a free port, 0
	// means the NATS default 4222.
	Host string
	Port int
	// User and Password, when set, are required of clients.
	User, Password string
	// NKeys are the public keys (U…) of nkey users the server admits. With
	// User set as well, a client may authenticate either way.
	NKeys []string
	// TLS, when its Cert is set, makes clients connect over TLS.
	TLS TLSConfig
	// MaxPayload is the largest message, in bytes (NATS's default is 1 MiB).
	MaxPayload int32
	// MaxPending is the most a client connection may have pending in the server
	// before it is cut off as a slow consumer, in bytes (NATS's default 64 MiB).
	MaxPending int64
	// WriteDeadline is how long the server waits on a stalled client write.
	WriteDeadline time.Duration
	// Cluster, when Cluster.Port is not 0, makes the server join a NATS cluster.
	Cluster ClusterConfig
	// ReadyTimeout bounds the wait until the server accepts connections (and, in
	// a cluster, until its listener is up).
	ReadyTimeout time.Duration
}

// ClusterConfig joins the server to a cluster: it listens for routes on Host:Port
// and connects to Routes (the other servers' cluster URLs, nats-route://host:port;
// one seed is enough, the servers gossip the rest).
type ClusterConfig struct {
	Name           string // the cluster's name; the same on every server
	Host           string
	Port           int // -1: a free port; 0: no cluster
	Routes         []string
	User, Password string // route credentials, the same on every server
}

// TLSConfig is a server's TLS: its certificate and key (PEM files) and, to
// verify client certificates, the CA that signs them.
type TLSConfig struct {
	Cert, Key string
	CA        string // with Verify: the CA client certificates must chain to
	Verify    bool   // require and verify client certificates
}

// DefaultConfig returns a loopback server on a free port, with room for 8 MiB
// messages and no cluster.
func DefaultConfig() Config {
	return Config{
		Host:          "127.0.0.1",
		Port:          -1,
		MaxPayload:    8 << 20,
		MaxPending:    64 << 20,
		WriteDeadline: 10 * time.Second,
		ReadyTimeout:  10 * time.Second,
	}
}

// Validate reports every problem of c at once, naming the field.
func (c Config) Validate() error {
	var errs []error
	if c.Port < -1 || c.Port > 65535 {
		errs = append(errs, fmt.Errorf("natsd.port: %d, want -1..65535", c.Port))
	}
	if (c.User == "") != (c.Password == "") {
		errs = append(errs, errors.New("natsd.user and natsd.password: set both or neither"))
	}
	for _, k := range c.NKeys {
		if !nkeys.IsValidPublicUserKey(k) {
			errs = append(errs, fmt.Errorf("natsd.nkeys: %q is not a public user nkey (U…)", k))
		}
	}
	if (c.TLS.Cert == "") != (c.TLS.Key == "") {
		errs = append(errs, errors.New("natsd.tls.cert and natsd.tls.key: set both or neither"))
	}
	if c.TLS.Verify && (c.TLS.CA == "" || c.TLS.Cert == "") {
		errs = append(errs, errors.New("natsd.tls.verify: needs natsd.tls.ca and a server certificate"))
	}
	if c.MaxPayload < 0 || c.MaxPayload > 64<<20 {
		errs = append(errs, fmt.Errorf("natsd.max_payload: %d, want 0 (default) .. %d bytes", c.MaxPayload, 64<<20))
	}
	if c.MaxPending < 0 {
		errs = append(errs, fmt.Errorf("natsd.max_pending: %d, want >= 0", c.MaxPending))
	}
	if c.MaxPending > 0 && int64(c.MaxPayload) > c.MaxPending {
		errs = append(errs, fmt.Errorf("natsd.max_payload %d exceeds natsd.max_pending %d", c.MaxPayload, c.MaxPending))
	}
	if c.WriteDeadline < 0 {
		errs = append(errs, fmt.Errorf("natsd.write_deadline: %v, want >= 0", c.WriteDeadline))
	}
	if c.ReadyTimeout <= 0 {
		errs = append(errs, fmt.Errorf("natsd.ready_timeout: %v, want > 0", c.ReadyTimeout))
	}
	cl := c.Cluster
	if cl.Port < -1 || cl.Port > 65535 {
		errs = append(errs, fmt.Errorf("natsd.cluster.port: %d, want -1..65535", cl.Port))
	}
	if cl.Port == 0 && len(cl.Routes) > 0 {
		errs = append(errs, errors.New("natsd.cluster.routes: set, but natsd.cluster.port is 0 (no cluster)"))
	}
	if (cl.User == "") != (cl.Password == "") {
		errs = append(errs, errors.New("natsd.cluster.user and natsd.cluster.password: set both or neither"))
	}
	for _, r := range cl.Routes {
		if u, err := url.Parse(r); err != nil || u.Scheme != "nats-route" && u.Scheme != "nats" || u.Host == "" {
			errs = append(errs, fmt.Errorf("natsd.cluster.routes: %q, want nats-route://host:port", r))
		}
	}
	return errors.Join(errs...)
}

// Server is a running embedded nats-server.
type Server struct {
	ns  *server.Server
	cfg Config
	log *zap.Logger
}

// Start starts a server and returns once it accepts connections.
func Start(cfg Config, log *zap.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	opts := &server.Options{
		ServerName:    cfg.Name,
		Host:          cfg.Host,
		Port:          cfg.Port,
		MaxPayload:    cfg.MaxPayload,
		MaxPending:    cfg.MaxPending,
		WriteDeadline: cfg.WriteDeadline,
		NoSigs:        true,
		NoLog:         false,
	}
	// Users and Nkeys as lists: the server takes either list, or both, but
	// not its single Username alongside Nkeys.
	if cfg.User != "" {
		opts.Users = []*server.User{{Username: cfg.User, Password: cfg.Password}}
	}
	for _, k := range cfg.NKeys {
		opts.Nkeys = append(opts.Nkeys, &server.NkeyUser{Nkey: k})
	}
	if cfg.TLS.Cert != "" {
		tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: cfg.TLS.Cert, KeyFile: cfg.TLS.Key, CaFile: cfg.TLS.CA, Verify: cfg.TLS.Verify})
		if err != nil {
			return nil, fmt.Errorf("natsd: tls: %w", err)
		}
		opts.TLSConfig, opts.TLS, opts.TLSVerify, opts.TLSTimeout = tc, true, cfg.TLS.Verify, 2
	}
	if cfg.Cluster.Port != 0 {
		cl := cfg.Cluster
		opts.Cluster = server.ClusterOpts{
			Name: cl.Name, Host: cl.Host, Port: cl.Port,
			Username: cl.User, Password: cl.Password,
			// Gradients do not compress: spend no CPU trying.
			Compression: server.CompressionOpts{Mode: server.CompressionOff},
		}
		if opts.Cluster.Host == "" {
			opts.Cluster.Host = cfg.Host
		}
		for _, r := range cl.Routes {
			u, _ := url.Parse(r) // checked by Validate
			opts.Routes = append(opts.Routes, u)
		}
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("natsd: %w", err)
	}
	ns.SetLoggerV2(zapLogger{log}, false, false, false)
	ns.Start()
	if !ns.ReadyForConnections(cfg.ReadyTimeout) {
		ns.Shutdown()
		ns.WaitForShutdown()
		return nil, fmt.Errorf("natsd: server on %s:%d not ready after %v (port taken?)", cfg.Host, cfg.Port, cfg.ReadyTimeout)
	}
	s := &Server{ns: ns, cfg: cfg, log: log}
	log.Info("nats server ready", zap.String("name", ns.Name()), zap.String("url", s.ClientURL()), zap.String("cluster_url", s.ClusterURL()))
	return s, nil
}

// ClientURL is the URL clients connect to (nats://host:port).
func (s *Server) ClientURL() string { return s.ns.ClientURL() }

// ClusterURL is the URL other servers route to (nats-route://host:port), or ""
// when the server is not in a cluster.
func (s *Server) ClusterURL() string {
	a := s.ns.ClusterAddr()
	if a == nil {
		return ""
	}
	host := a.IP.String()
	return "nats-route://" + net.JoinHostPort(host, strconv.Itoa(a.Port))
}

// Name is the server's name in the cluster.
func (s *Server) Name() string { return s.ns.Name() }

// NumRoutes is the number of routes to other servers of the cluster.
func (s *Server) NumRoutes() int { return s.ns.NumRoutes() }

// Connect opens a client connection to this server inside the process (no
// socket), with the server's credentials. The caller closes it.
func (s *Server) Connect(opts ...nats.Option) (*nats.Conn, error) {
	all := []nats.Option{nats.InProcessServer(s.ns)}
	if s.cfg.User != "" {
		all = append(all, nats.UserInfo(s.cfg.User, s.cfg.Password))
	}
	nc, err := nats.Connect(s.ClientURL(), append(all, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("natsd: connect in process to %s: %w", s.ns.Name(), err)
	}
	return nc, nil
}

// Shutdown stops the server and returns once its goroutines are gone.
func (s *Server) Shutdown() {
	s.ns.Shutdown()
	s.ns.WaitForShutdown()
}

// zapLogger adapts zap to the server's logger: one constant message, the server's
// text in a field. Notices (slow consumers, routes) are info.
type zapLogger struct{ l *zap.Logger }

func (z zapLogger) Noticef(format string, v ...any) { z.l.Info("nats-server", text(format, v)) }
func (z zapLogger) Warnf(format string, v ...any)   { z.l.Warn("nats-server", text(format, v)) }
func (z zapLogger) Errorf(format string, v ...any)  { z.l.Error("nats-server", text(format, v)) }
func (z zapLogger) Debugf(format string, v ...any)  { z.l.Debug("nats-server", text(format, v)) }
func (z zapLogger) Tracef(format string, v ...any)  { z.l.Debug("nats-server", text(format, v)) }

// Fatalf logs at error level: the server calls it for conditions it then handles
// (a listener that fails), and this process must not exit from inside a library.
func (z zapLogger) Fatalf(format string, v ...any) { z.l.Error("nats-server", text(format, v)) }

func text(format string, v []any) zap.Field { return zap.String("text", fmt.Sprintf(format, v...)) }
