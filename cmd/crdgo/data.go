package main

import (
	"fmt"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/crdgo/crdgo/crd/data"
)

// newDataCmd groups the dataset tools.
func newDataCmd(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "data",
		Short: "Dataset tools: generate the synthetic datasets",
	}
	cmd.AddCommand(newDataSynthCmd(g), newDataPushCmd(g), newDataLsCmd(g), newDataFetchCmd(g))
	return cmd
}

func newDataSynthCmd(g *globalFlags) *cobra.Command {
	cfg := data.DefaultSynthConfig()
	var out string
	nTest := 0 // n/10
	cmd := &cobra.Command{
		Use:   "synth --kind edges2shapes|shapes2night --out DIR",
		Short: "Generate a synthetic dataset with a ground truth, in the layout of the real ones",
		Long: `Generate a synthetic image-to-image dataset, deterministic for a given seed.

edges2shapes (paired, pix2pix layout): DIR/train/*.png and DIR/val/*.png, each 2S×S:
  A = edge map of one to three circles, squares and triangles (dark outlines on white) |
  B = the same shapes filled in their type's colour and shaded with a fixed light.
shapes2night (unpaired, CycleGAN layout): DIR/trainA (day scenes) and DIR/trainB (night
  scenes), drawn independently; DIR/testA/i.png and DIR/testB/i.png are the day and night
  renderings of the same scene, so testB is the ground truth of A→B on the test split.

DIR/synth.json, written last, records the configuration. Running the same command again
does nothing; a split folder that is not empty and not this dataset is an error. An
interrupted run is redone: its files, named by DIR/synth.partial.json (written before
any image), are removed, and nothing else is. While it runs, DIR/crdgo.lock keeps a
second process out of DIR.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.newLogger()
			if err != nil {
				return err
			}
			defer log.Sync()
			if out == "" {
				return fmt.Errorf("--out: a directory is required")
			}
			cfg.NTest = nTest
			if !cmd.Flags().Changed("n-test") {
				cfg.NTest = max(1, cfg.N/10)
			}
			if err := cfg.Validate(); err != nil {
				return err
			}
			if done, err := data.SynthDone(out, cfg); err != nil {
				return err
			} else if done {
				fmt.Fprintf(cmd.OutOrStdout(), "%s: already in %s (seed %d)\n", cfg.Kind, out, cfg.Seed)
				return nil
			}
			if err := data.CheckSynthTarget(out, cfg); err != nil {
				return err // before the lock: a refused folder stays as it was
			}
			release, err := lockFolder(out, log)
			if err != nil {
				return err
			}
			defer release()
			bar := progressbar.NewOptions(cfg.Files(),
				progressbar.OptionSetWriter(os.Stderr),
				progressbar.OptionSetDescription("synth "+cfg.Kind),
				progressbar.OptionShowCount(),
				progressbar.OptionShowIts(),
				progressbar.OptionSetItsString("files"),
				progressbar.OptionThrottle(100*time.Millisecond),
				progressbar.OptionOnCompletion(func() { fmt.Fprintln(os.Stderr) }),
			)
			progress := func() {
				if err := bar.Add(1); err != nil {
					log.Debug("progress bar not drawn", zap.Error(err))
				}
			}
			if err := data.Synthesize(cmd.Context(), out, cfg, progress, log); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: %d files in %s (seed %d)\n", cfg.Kind, cfg.Files(), out, cfg.Seed)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Kind, "kind", cfg.Kind, "dataset: edges2shapes or shapes2night")
	f.IntVar(&cfg.Size, "size", cfg.Size, "image side S in pixels (edges2shapes files are 2S×S)")
	f.IntVar(&cfg.N, "n", cfg.N, "training examples (edges2shapes: train pairs; shapes2night: images in trainA and in trainB)")
	f.IntVar(&nTest, "n-test", nTest, "test examples (edges2shapes: val pairs; shapes2night: testA/testB pairs) (default n/10, at least 1)")
	f.Uint64Var(&cfg.Seed, "seed", cfg.Seed, "random seed: the same seed gives the same files")
	f.StringVar(&out, "out", "", "output directory (created if missing)")
	return cmd
}
