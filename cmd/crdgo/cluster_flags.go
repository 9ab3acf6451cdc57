package main

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/crdgo/crdgo/natsd"
)

// Flags shared by the cluster commands (coordinator, node, cluster status,
// cluster up, nats).

// secret is a secret taken from a flag, a file or the environment, in that
// order. It is never logged.
type secret struct {
	name, env, value, file string
}

func (s *secret) register(cmd *cobra.Command, name, env, what string) {
	s.name, s.env = name, env
	cmd.Flags().StringVar(&s.value, name, "", what+" (prefer --"+name+"-file or $"+env+": flags show in ps)")
	cmd.Flags().StringVar(&s.file, name+"-file", "", "file holding the "+what)
}

func (s *secret) get() (string, error) {
	switch {
	case s.value != "" && s.file != "":
		return "", fmt.Errorf("--%s and --%s-file: give one", s.name, s.name)
	case s.value != "":
		return s.value, nil
	case s.file != "":
		b, err := os.ReadFile(s.file)
		if err != nil {
			return "", fmt.Errorf("--%s-file: %w", s.name, err)
		}
		return strings.TrimRight(string(b), "\r\n"), nil
	}
	return os.Getenv(s.env), nil
}

// natsFlags connect a process to the cluster's NATS.
type natsFlags struct {
	url, user, nkey, creds, ca, cert, key string
	tls                                   bool
	password                              secret
}

func (n *natsFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&n.url, "nats", "nats://127.0.0.1:4222", "NATS server URL(s), comma-separated ($CRDGO_NATS_URL)")
	fl.StringVar(&n.user, "nats-user", "", "NATS user ($CRDGO_NATS_USER)")
	n.password.register(cmd, "nats-password", "CRDGO_NATS_PASSWORD", "NATS password")
	fl.StringVar(&n.nkey, "nats-nkey", "", "file holding an nkey user seed (SU…)")
	fl.StringVar(&n.creds, "nats-creds", "", "NATS JWT user credentials file")
	fl.StringVar(&n.ca, "nats-ca", "", "CA (PEM) that signs the NATS server's certificate")
	fl.StringVar(&n.cert, "nats-cert", "", "client certificate (PEM) for servers that verify clients")
	fl.StringVar(&n.key, "nats-key", "", "client key (PEM)")
	fl.BoolVar(&n.tls, "nats-tls", false, "require TLS to the NATS server")
}

func (n *natsFlags) config(cmd *cobra.Command, name string) (natsd.ClientConfig, error) {
	c := natsd.DefaultClientConfig()
	c.URL, c.Name, c.User = n.url, name, n.user
	if !cmd.Flags().Changed("nats") && os.Getenv("CRDGO_NATS_URL") != "" {
		c.URL = os.Getenv("CRDGO_NATS_URL")
	}
	if c.User == "" {
		c.User = os.Getenv("CRDGO_NATS_USER")
	}
	pw, err := n.password.get()
	if err != nil {
		return c, err
	}
	c.Password = pw
	c.NKeySeedFile, c.CredsFile, c.CA, c.Cert, c.Key, c.RequireTLS = n.nkey, n.creds, n.ca, n.cert, n.key, n.tls
	return c, c.Validate()
}

func errFlag(flag, why string) error { return fmt.Errorf("%s: %s", flag, why) }

func jsonIndent(v any) ([]byte, error) { return json.MarshalIndent(v, "", "  ") }

// splitHostPort reads host:port; port 0 is refused (a server needs a known
// port), -1 is not a port here.
func splitHostPort(s string) (string, int, error) {
	host, p, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 1 || port > 65535 {
		return "", 0, fmt.Errorf("port %q: want 1..65535", p)
	}
	return host, port, nil
}
