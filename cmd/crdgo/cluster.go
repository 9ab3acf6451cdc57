package main

import (
	"context"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/crdgo/crdgo/coordinator"
	"github.com/crdgo/crdgo/natsd"
)

// newClusterCmd groups the operator's view of a running cluster.
func newClusterCmd(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cluster",
		Short: "Look at a running cluster: status",
	}
	cmd.AddCommand(newClusterStatusCmd(g))
	return cmd
}

func newClusterStatusCmd(g *globalFlags) *cobra.Command {
	var (
		job, httpURL string
		timeout      time.Duration
		asJSON       bool
		nf           natsFlags
	)
	cmd := &cobra.Command{
		Use:   "status --job NAME [--nats URL | --http http://HOST:PORT]",
		Short: "Print a job's members, leader, generation, step, samples/s and per-rank times",
		Long: `Ask any coordinator replica of a job for its status — over NATS (the
crdgo.<job>.ctl.status request, any replica answers) or over HTTP (GET /status
of one replica) — and print it as a table, or as JSON with --json.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.newLogger()
			if err != nil {
				return err
			}
			defer log.Sync()
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			var st coordinator.Status
			if httpURL != "" {
				st, err = coordinator.FetchStatus(ctx, httpURL)
			} else {
				ncfg, cerr := nf.config(cmd, "crdgo-cluster-status")
				if cerr != nil {
					return cerr
				}
				nc, cerr := natsd.Connect(ncfg, log.WithOptions(zap.IncreaseLevel(zap.WarnLevel)))
				if cerr != nil {
					return cerr
				}
				defer nc.Close()
				st, err = coordinator.RequestStatus(ctx, nc, job, time.Second)
			}
			if err != nil {
				return err
			}
			if asJSON {
				b, err := jsonIndent(st)
				if err != nil {
					return err
				}
				_, err = cmd.OutOrStdout().Write(append(b, '\n'))
				return err
			}
			return st.WriteTable(cmd.OutOrStdout())
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&job, "job", "", "job name")
	fl.StringVar(&httpURL, "http", "", "ask this coordinator's HTTP endpoint instead of NATS (http://host:port)")
	fl.DurationVar(&timeout, "timeout", 10*time.Second, "give up after this long")
	fl.BoolVar(&asJSON, "json", false, "print the status as JSON")
	nf.register(cmd)
	cmd.PreRunE = func(cmd *cobra.Command, _ []string) error {
		if httpURL == "" && job == "" {
			return errFlag("--job", "needed to ask over NATS (or give --http)")
		}
		return nil
	}
	return cmd
}

// newNATSCmd runs an embedded NATS server: the cluster's message bus without
// installing nats-server.
func newNATSCmd(g *globalFlags) *cobra.Command {
	cfg := natsd.DefaultConfig()
	var (
		listen  string
		nkeys   string
		routes  string
		cluster string
		pw      secret
	)
	cmd := &cobra.Command{
		Use:   "nats [--listen HOST:PORT] [--user U --password-file F] [--nkeys U…,U…] [--tls-cert … --tls-key …]",
		Short: "Run a NATS server for the cluster (embedded nats-server)",
		Long: `Run the NATS server coordinators and nodes talk through, from this binary.
Require credentials on anything but a private loopback: --user with a password
(--password-file or $CRDGO_NATS_PASSWORD) and/or nkey users (--nkeys, their
public keys), and TLS with --tls-cert/--tls-key (--tls-ca with --tls-verify to
require client certificates). --cluster-listen and --routes join several such
servers into one NATS cluster.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.newLogger()
			if err != nil {
				return err
			}
			defer log.Sync()
			host, port, err := splitHostPort(listen)
			if err != nil {
				return errFlag("--listen", err.Error())
			}
			cfg.Host, cfg.Port = host, port
			if cfg.Password, err = pw.get(); err != nil {
				return err
			}
			if nkeys != "" {
				cfg.NKeys = strings.Split(nkeys, ",")
			}
			if cluster != "" {
				h, p, err := splitHostPort(cluster)
				if err != nil {
					return errFlag("--cluster-listen", err.Error())
				}
				cfg.Cluster.Name, cfg.Cluster.Host, cfg.Cluster.Port = "crdgo", h, p
				if routes != "" {
					cfg.Cluster.Routes = strings.Split(routes, ",")
				}
			}
			srv, err := natsd.Start(cfg, log)
			if err != nil {
				return err
			}
			defer srv.Shutdown()
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			<-ctx.Done()
			log.Info("stopping")
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&listen, "listen", "127.0.0.1:4222", "client listen address")
	fl.StringVar(&cfg.User, "user", "", "require this user (with a password)")
	pw.register(cmd, "password", "CRDGO_NATS_PASSWORD", "the user's password")
	fl.StringVar(&nkeys, "nkeys", "", "admit these nkey users: public keys U…, comma-separated")
	fl.StringVar(&cfg.TLS.Cert, "tls-cert", "", "server certificate (PEM)")
	fl.StringVar(&cfg.TLS.Key, "tls-key", "", "server key (PEM)")
	fl.StringVar(&cfg.TLS.CA, "tls-ca", "", "CA (PEM) client certificates must chain to, with --tls-verify")
	fl.BoolVar(&cfg.TLS.Verify, "tls-verify", false, "require and verify client certificates")
	fl.StringVar(&cluster, "cluster-listen", "", "listen for routes from other servers on HOST:PORT")
	fl.StringVar(&routes, "routes", "", "other servers' route URLs, nats-route://host:port,…")
	return cmd
}
