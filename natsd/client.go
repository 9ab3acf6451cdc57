package natsd

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"
)

// ClientConfig is how a process (a coordinator, a node, the CLI) connects to
// the cluster's NATS: the URL, one way to authenticate and optional TLS. The
// secrets (Password, the seed and creds files' contents) are never logged.
type ClientConfig struct {
	URL  string // nats://host:port, or several joined by commas
	Name string // the connection's name in the server's monitoring

	User, Password string // user/password authentication
	NKeySeedFile   string // a file holding an nkey user seed (SU…)
	CredsFile      string // a JWT user credentials file (.creds)

	// TLS: CA verifies the server (empty: the system roots); Cert and Key
	// are this client's certificate, for servers that verify clients.
	// RequireTLS refuses a server that does not offer TLS.
	CA, Cert, Key string
	RequireTLS    bool

	// Timeout bounds the initial connection; ReconnectWait is the pause
	// between reconnection attempts, which never stop.
	Timeout       time.Duration
	ReconnectWait time.Duration
}

// DefaultClientConfig returns a loopback URL and the timing defaults.
func DefaultClientConfig() ClientConfig {
	return ClientConfig{URL: nats.DefaultURL, Timeout: 5 * time.Second, ReconnectWait: 250 * time.Millisecond}
}

// Validate reports every problem of c at once, naming the field.
func (c ClientConfig) Validate() error {
	var errs []error
	if c.URL == "" {
		errs = append(errs, errors.New("nats.url: empty"))
	}
	if (c.User == "") != (c.Password == "") {
		errs = append(errs, errors.New("nats.user and nats.password: set both or neither"))
	}
	ways := 0
	for _, set := range []bool{c.User != "", c.NKeySeedFile != "", c.CredsFile != ""} {
		if set {
			ways++
		}
	}
	if ways > 1 {
		errs = append(errs, errors.New("nats credentials: give one of user/password, nkey seed file, creds file"))
	}
	for _, f := range []struct{ name, path string }{{"nats.nkey", c.NKeySeedFile}, {"nats.creds", c.CredsFile}, {"nats.tls_ca", c.CA}, {"nats.tls_cert", c.Cert}, {"nats.tls_key", c.Key}} {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", f.name, err))
		}
	}
	if (c.Cert == "") != (c.Key == "") {
		errs = append(errs, errors.New("nats.tls_cert and nats.tls_key: set both or neither"))
	}
	if c.Timeout <= 0 || c.ReconnectWait <= 0 {
		errs = append(errs, fmt.Errorf("nats.timeout %v and nats.reconnect_wait %v: want > 0", c.Timeout, c.ReconnectWait))
	}
	return errors.Join(errs...)
}

// hasCredentials says whether c authenticates at all.
func (c ClientConfig) hasCredentials() bool {
	return c.User != "" || c.NKeySeedFile != "" || c.CredsFile != "" || c.Cert != ""
}

// Options returns the nats.go options for c.
func (c ClientConfig) Options() ([]nats.Option, error) {
	opts := []nats.Option{
		nats.Name(c.Name), nats.Timeout(c.Timeout),
		nats.MaxReconnects(-1), nats.ReconnectWait(c.ReconnectWait),
	}
	switch {
	case c.User != "":
		opts = append(opts, nats.UserInfo(c.User, c.Password))
	case c.NKeySeedFile != "":
		o, err := nats.NkeyOptionFromSeed(c.NKeySeedFile)
		if err != nil {
			return nil, fmt.Errorf("nats.nkey %s: %w", c.NKeySeedFile, err)
		}
		opts = append(opts, o)
	case c.CredsFile != "":
		opts = append(opts, nats.UserCredentials(c.CredsFile))
	}
	if c.CA != "" {
		opts = append(opts, nats.RootCAs(c.CA))
	}
	if c.Cert != "" {
		opts = append(opts, nats.ClientCert(c.Cert, c.Key))
	}
	if c.RequireTLS {
		opts = append(opts, nats.Secure())
	}
	return opts, nil
}

// Connect connects to c.URL and logs disconnections and reconnections. An
// authentication failure says whether credentials were missing or refused.
// extra options come after c's.
func Connect(c ClientConfig, log *zap.Logger, extra ...nats.Option) (*nats.Conn, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	opts, err := c.Options()
	if err != nil {
		return nil, err
	}
	opts = append(opts,
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			if err != nil { // nil: our own Close
				log.Warn("nats disconnected", zap.String("url", nc.ConnectedUrlRedacted()), zap.Error(err))
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("nats reconnected", zap.String("url", nc.ConnectedUrlRedacted()))
		}),
		nats.ErrorHandler(func(nc *nats.Conn, sub *nats.Subscription, err error) {
			subj := ""
			if sub != nil {
				subj = sub.Subject
			}
			log.Warn("nats error", zap.String("subject", subj), zap.Error(err))
		}),
	)
	nc, err := nats.Connect(c.URL, append(opts, extra...)...)
	if err != nil {
		return nil, connectError(c, err)
	}
	log.Info("nats connected", zap.String("url", nc.ConnectedUrlRedacted()), zap.Bool("tls", nc.TLSRequired()))
	return nc, nil
}

// connectError explains a failed connection without repeating secrets.
func connectError(c ClientConfig, err error) error {
	url := redact(c.URL)
	msg := strings.ToLower(err.Error())
	switch {
	case errors.Is(err, nats.ErrAuthorization) || strings.Contains(msg, "authorization violation") || strings.Contains(msg, "authentication"):
		if !c.hasCredentials() {
			return fmt.Errorf("natsd: connect %s: the server requires credentials and none were given (user/password, an nkey seed or a creds file): %w", url, err)
		}
		return fmt.Errorf("natsd: connect %s: the server refused these credentials: %w", url, err)
	case strings.Contains(msg, "tls") || strings.Contains(msg, "x509") || strings.Contains(msg, "certificate"):
		return fmt.Errorf("natsd: connect %s: TLS: %w", url, err)
	}
	return fmt.Errorf("natsd: connect %s: %w", url, err)
}

// redact drops user:password@ from URLs.
func redact(urls string) string {
	var out []string
	for _, u := range strings.Split(urls, ",") {
		if at := strings.LastIndexByte(u, '@'); at >= 0 {
			if i := strings.Index(u, "://"); i >= 0 && i < at {
				u = u[:i+3] + "[redacted]@" + u[at+1:]
			}
		}
		out = append(out, u)
	}
	return strings.Join(out, ",")
}
