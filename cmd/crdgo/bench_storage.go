package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/crdgo/crdgo/bench"
	"github.com/crdgo/crdgo/storage/miniotest"
	"github.com/crdgo/crdgo/storage/storebench"
)

func newBenchStorageCmd(g *globalFlags) *cobra.Command {
	c := storebench.DefaultConfig()
	cmd := &cobra.Command{
		Use:   "storage",
		Short: "Push and read a dataset of small PNGs against MinIO: crdgo beside plain minio-go calls",
		Long: `Write a dataset of small PNGs, then time, against a MinIO server: crdgo data push
(1 and N workers) beside a loop of minio-go PutObject calls one after another (what
mc mirror does per file); and reading it back: minio-go GetObject one after
another, crdgo's dataset source straight from the store, through the cache's
first epoch (fetch and keep) and its second (from disk, every file verified), and
the same files from a local folder. Each row is timed --runs times after --warmup
passes; the table gives medians.

Without --endpoint it starts its own MinIO on 127.0.0.1 (built once into
~/.cache/crdgo, see docs/storage.md); with one, the keys come from --access-key
and --secret-key or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.newLogger()
			if err != nil {
				return err
			}
			defer log.Sync()
			ctx := cmd.Context()
			c.Log = log
			scratch, err := os.MkdirTemp("", "crdgo-bench-storage-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(scratch)
			c.Dir = scratch
			server := "MinIO at " + c.Endpoint
			if c.Endpoint == "" {
				bin, err := miniotest.Binary(ctx, os.Stderr)
				if err != nil {
					return err
				}
				srv, err := miniotest.Start(ctx, miniotest.Config{Bin: bin, Dir: scratch + "/minio"})
				if err != nil {
					return err
				}
				defer srv.Stop()
				c.Endpoint, c.AccessKey, c.SecretKey = srv.Endpoint(), srv.AccessKey, srv.SecretKey
				server = fmt.Sprintf("MinIO %s started by the benchmark on %s, one drive (a folder on %s), plain HTTP", miniotest.Version, srv.Endpoint(), scratch)
			} else if c.AccessKey == "" {
				c.AccessKey, c.SecretKey = os.Getenv("AWS_ACCESS_KEY_ID"), os.Getenv("AWS_SECRET_ACCESS_KEY")
			}
			rep, err := storebench.Run(ctx, c)
			if err != nil {
				return err
			}
			rep.Print(cmd.OutOrStdout(), bench.Machine(), server)
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&c.Files, "files", c.Files, "PNGs in the dataset")
	f.IntVar(&c.Side, "side", c.Side, "their width and height in pixels")
	f.IntVar(&c.Runs, "runs", c.Runs, "timed passes per row")
	f.IntVar(&c.Warmup, "warmup", c.Warmup, "untimed passes before them")
	f.IntVar(&c.Workers, "workers", c.Workers, "crdgo's concurrency: push workers and readers")
	f.StringVar(&c.Endpoint, "endpoint", "", "host:port of a MinIO/S3 server (plain HTTP); empty: start one")
	f.StringVar(&c.AccessKey, "access-key", "", "access key for --endpoint (else AWS_ACCESS_KEY_ID)")
	f.StringVar(&c.SecretKey, "secret-key", "", "secret key for --endpoint (else AWS_SECRET_ACCESS_KEY)")
	f.StringVar(&c.Bucket, "bucket", c.Bucket, "bucket to use (created if missing; the benchmark's objects are removed as it goes)")
	return cmd
}
