package main

import (
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/crdgo/crdgo/storage/fetch"
)

func newDataFetchCmd(g *globalFlags) *cobra.Command {
	var root, baseURL string
	var keep bool
	var attempts int
	cmd := &cobra.Command{
		Use:   "fetch NAME",
		Short: "Download a dataset of the paper into the layout its recipe reads",
		Long: `Download and unpack one of the paper's datasets under --root, as the reference
download scripts do (docs/crd.md §6):

  horse2zebra, summer2winter_yosemite (alias summer2winter)
      the CycleGAN archives (people.eecs.berkeley.edu, mirror efrosgans.eecs.berkeley.edu)
      into ROOT/NAME/{trainA,trainB,testA,testB}, with valA → testA and valB → testB
  edges2shoes (alias edges2shoes-r)
      GAN Compression's re-split (hanlab.mit.edu, mirror huggingface.co) into
      ROOT/edges2shoes-r/{train,val}, 512×256 A|B pairs, val holding 2,048
  cityscapes
      needs a login: prints the steps to follow

An interrupted download is resumed by running the command again. The archive is
checked (size and SHA-256 where known, its own CRC-32s always) and unpacked
safely (no path outside the folder, no links, caps on files and bytes) into a
staging folder renamed into place only when complete. --base-url takes the
archive from another server (BASE/horse2zebra.zip, BASE/edges2shoes-r.tar.gz).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			log, err := g.newLogger()
			if err != nil {
				return err
			}
			defer log.Sync()
			d, ok := fetch.Lookup(args[0])
			if !ok {
				return fmt.Errorf("fetch: no dataset %q: want one of %s", args[0], fetch.Names())
			}
			out := cmd.OutOrStdout()
			if d.Manual != "" {
				fmt.Fprintf(out, "%s\n", d.Manual)
				return fmt.Errorf("fetch %s: %w (the steps are above)", d.Name, fetch.ErrManual)
			}
			if attempts < 1 {
				return fmt.Errorf("--attempts %d: want ≥ 1", attempts)
			}
			o := fetch.DefaultOptions(root)
			o.BaseURL, o.KeepArchive, o.Attempts, o.Log = baseURL, keep, attempts, log
			var bar *progressbar.ProgressBar
			o.Progress = func(done, total int64) {
				if bar == nil || bar.GetMax64() != total {
					bar = progressbar.NewOptions64(total,
						progressbar.OptionSetWriter(os.Stderr),
						progressbar.OptionSetDescription("download "+d.Archive),
						progressbar.OptionShowBytes(true),
						progressbar.OptionThrottle(200*time.Millisecond),
						progressbar.OptionOnCompletion(func() { fmt.Fprintln(os.Stderr) }),
					)
				}
				if err := bar.Set64(done); err != nil {
					log.Debug("progress bar not drawn", zap.Error(err))
				}
			}
			start := time.Now()
			res, err := fetch.Fetch(cmd.Context(), d, o)
			if bar != nil {
				bar.Close()
			}
			if err != nil {
				return err
			}
			if res.Already {
				fmt.Fprintf(out, "%s: already in %s\n", d.Name, res.Dir)
				return nil
			}
			var splits []string
			for _, s := range d.Splits {
				splits = append(splits, fmt.Sprintf("%s %d", s, res.Counts[s]))
			}
			how := ""
			if res.Resumed {
				how = ", resumed"
			}
			fmt.Fprintf(out, "%s: %s in %s (%v%s)\n", d.Name, strings.Join(splits, ", "), res.Dir, time.Since(start).Round(time.Second), how)
			if len(d.Links) > 0 {
				var links []string
				for _, k := range slices.Sorted(maps.Keys(d.Links)) {
					links = append(links, k+" → "+d.Links[k])
				}
				fmt.Fprintf(out, "links: %s\n", strings.Join(links, ", "))
			}
			for _, m := range res.Mismatches {
				fmt.Fprintf(out, "note: %s (count the files against docs/crd.md §6)\n", m)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&root, "root", "data", "data root: the dataset goes to ROOT/NAME (the folder --data-root points at)")
	f.StringVar(&baseURL, "base-url", "", "take the archive from BASE-URL/<archive> instead of the public sources")
	f.BoolVar(&keep, "keep-archive", false, "keep the downloaded archive in ROOT/.downloads")
	f.IntVar(&attempts, "attempts", 5, "attempts per source before trying the next")
	return cmd
}
