package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.uber.org/zap"

	"github.com/crdgo/crdgo/storage"
)

// storeFlags are the flags of commands that open a store URL.
type storeFlags struct {
	accessKey, secretKey string
	credentialsFile      string
	profile              string
	spoolDir             string
	threads              int
}

func (s *storeFlags) register(f *pflag.FlagSet) {
	f.StringVar(&s.accessKey, "access-key", "", "S3 access key (else --credentials-file, else AWS_ACCESS_KEY_ID)")
	f.StringVar(&s.secretKey, "secret-key", "", "S3 secret key (visible to other users in the process list: prefer a file or AWS_SECRET_ACCESS_KEY)")
	f.StringVar(&s.credentialsFile, "credentials-file", "", "AWS shared-credentials file with the S3 keys")
	f.StringVar(&s.profile, "profile", "default", "profile of --credentials-file")
	f.StringVar(&s.spoolDir, "spool-dir", "", "folder for temporary copies of uploads (default: the system's temporary folder)")
	f.IntVar(&s.threads, "part-threads", 4, "parts of one large object uploaded at once")
}

func (s *storeFlags) open(ctx context.Context, url string, log *zap.Logger) (storage.Store, error) {
	o := storage.DefaultOptions()
	o.AccessKey, o.SecretKey = s.accessKey, s.secretKey
	o.CredentialsFile, o.Profile = s.credentialsFile, s.profile
	o.SpoolDir, o.Threads, o.Log = s.spoolDir, s.threads, log
	return storage.Open(ctx, url, o)
}

// rootName says what the root of a store is, for messages.
func rootName(s storage.Store) string {
	if st, ok := s.(*storage.S3); ok {
		return "bucket s3://" + st.Location().Bucket
	}
	if st, ok := s.(*storage.FS); ok {
		return "folder " + st.Dir()
	}
	return s.String()
}

func newDataPushCmd(g *globalFlags) *cobra.Command {
	var sf storeFlags
	var workers int
	var verify bool
	cmd := &cobra.Command{
		Use:   "push DIR URL",
		Short: "Copy a dataset folder into a store (MinIO/S3 or a folder), resumably",
		Long: `Copy the files under DIR into the store at URL, keeping their relative paths:

  crdgo data push data/edges2shapes 's3://crd/datasets/edges2shapes?endpoint=127.0.0.1:9000&tls=false'

URL is s3://BUCKET/PREFIX?endpoint=HOST:PORT[&region=R][&tls=false][&path-style=true],
or file:///DIR. The bucket is created when it is missing. Run it again after a
failure: objects already in the store with the same size and SHA-256 are skipped.
Links to folders inside DIR (valA -> testA) are not copied twice; other links
are followed. Credentials: --access-key/--secret-key, --credentials-file, or
AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			log, err := g.newLogger()
			if err != nil {
				return err
			}
			defer log.Sync()
			if workers < 1 {
				return fmt.Errorf("--workers %d: want ≥ 1", workers)
			}
			dir, url := args[0], args[1]
			if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
				return fmt.Errorf("push: %s is not a folder", dir)
			}
			ctx := cmd.Context()
			s, err := sf.open(ctx, url, log)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			created, err := storage.EnsureRoot(ctx, s)
			if err != nil {
				return err
			}
			if created {
				fmt.Fprintf(out, "created %s (it did not exist)\n", rootName(s))
			}
			files, _, err := storage.PushPlan(dir)
			if err != nil {
				return err
			}
			var total int64
			for _, f := range files {
				total += f.Size
			}
			bar := progressbar.NewOptions64(total,
				progressbar.OptionSetWriter(os.Stderr),
				progressbar.OptionSetDescription(fmt.Sprintf("push %d files", len(files))),
				progressbar.OptionShowBytes(true),
				progressbar.OptionThrottle(100*time.Millisecond),
				progressbar.OptionOnCompletion(func() { fmt.Fprintln(os.Stderr) }),
			)
			start := time.Now()
			rep, err := storage.Push(ctx, dir, s, storage.PushOptions{
				Workers: workers, Verify: verify, Log: log,
				Progress: func(n int64) {
					if err := bar.Add64(n); err != nil {
						log.Debug("progress bar not drawn", zap.Error(err))
					}
				},
			})
			bar.Close()
			if err != nil {
				return fmt.Errorf("%w (%d of %d files sent before the failure; run the command again to resume)", err, rep.Uploaded, rep.Files)
			}
			fmt.Fprintf(out, "pushed %s to %s: %d files, %s; %d uploaded (%s), %d already there; %v\n",
				dir, s, rep.Files, humanBytes(rep.Bytes), rep.Uploaded, humanBytes(rep.UploadedBytes), rep.Skipped, time.Since(start).Round(time.Millisecond))
			if len(rep.LinksSkipped) > 0 {
				fmt.Fprintf(out, "links to folders inside %s not copied: %s\n", dir, strings.Join(rep.LinksSkipped, ", "))
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&workers, "workers", 8, "files uploaded at once")
	f.BoolVar(&verify, "verify", false, "read every uploaded object back whole and check its size and SHA-256")
	sf.register(f)
	return cmd
}

func newDataLsCmd(g *globalFlags) *cobra.Command {
	var sf storeFlags
	var long, summary bool
	cmd := &cobra.Command{
		Use:   "ls URL",
		Short: "List the objects of a store (MinIO/S3 or a folder)",
		Long: `List the objects under URL (s3://BUCKET/PREFIX?endpoint=… or file:///DIR), with
their sizes; --long adds the time and the SHA-256 crdgo recorded, --summary gives
one line per top-level folder instead.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			log, err := g.newLogger()
			if err != nil {
				return err
			}
			defer log.Sync()
			ctx := cmd.Context()
			s, err := sf.open(ctx, args[0], log)
			if err != nil {
				return err
			}
			return listStore(ctx, cmd.OutOrStdout(), s, long, summary)
		},
	}
	f := cmd.Flags()
	f.BoolVarP(&long, "long", "l", false, "show modification times and SHA-256")
	f.BoolVarP(&summary, "summary", "s", false, "one line per top-level folder: objects and bytes")
	sf.register(f)
	return cmd
}

// listStore prints a store's objects page by page (a listing of millions does not
// sit in memory), then the totals.
func listStore(ctx context.Context, w io.Writer, s storage.Store, long, summary bool) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', tabwriter.AlignRight)
	type group struct {
		n     int
		bytes int64
	}
	groups := map[string]*group{}
	var n int
	var total int64
	after := ""
	for {
		p, err := s.List(ctx, "", after, 1000)
		if err != nil {
			return err
		}
		for _, o := range p.Objects {
			n++
			total += o.Size
			after = o.Key
			switch {
			case summary:
				top, _, found := strings.Cut(o.Key, "/")
				if !found {
					top = "."
				}
				if groups[top] == nil {
					groups[top] = &group{}
				}
				groups[top].n++
				groups[top].bytes += o.Size
			case long:
				sha := o.SHA256
				if sha == "" {
					sha = "-"
				}
				fmt.Fprintf(tw, "%d\t  %s\t  %s  %s\n", o.Size, o.ModTime.UTC().Format(time.DateTime), sha, o.Key)
			default:
				fmt.Fprintf(tw, "%d\t  %s\n", o.Size, o.Key)
			}
		}
		if !p.More {
			break
		}
	}
	if summary {
		names := make([]string, 0, len(groups))
		for k := range groups {
			names = append(names, k)
		}
		slices.Sort(names)
		for _, k := range names {
			fmt.Fprintf(tw, "%d objects\t  %s\t  %s\n", groups[k].n, humanBytes(groups[k].bytes), path.Clean(k+"/"))
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "%d objects, %s in %s\n", n, humanBytes(total), s)
	return err
}

// humanBytes writes a byte count in B, KiB, MiB or GiB.
func humanBytes(b int64) string {
	switch {
	case b < 1<<10:
		return fmt.Sprintf("%d B", b)
	case b < 1<<20:
		return fmt.Sprintf("%.1f KiB", float64(b)/(1<<10))
	case b < 1<<30:
		return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
	}
	return fmt.Sprintf("%.2f GiB", float64(b)/(1<<30))
}
