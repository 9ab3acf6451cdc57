package main

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"

	"github.com/crdgo/crdgo/crd/train"
)

type translateFlags struct {
	checkpoint, net, outDir string
	maxMemory               string
	size                    int
	engine                  engineFlags
}

func newTranslateCmd(g *globalFlags) *cobra.Command {
	f := &translateFlags{}
	cmd := &cobra.Command{
		Use:   "translate --checkpoint DIR IN.png OUT.png | --out-dir DIR IN...",
		Short: "Translate images with a checkpoint's student (or teacher), with latency per image",
		Long: `Translate image files with the student (default) or the teacher generator of a
checkpoint. Each input is resized to the recipe's image size (bicubic), run
through the generator in evaluation mode, and written as PNG. With two
arguments the second is the output file; with --out-dir every input is
translated into that folder under its own name (.png). The time of each
forward pass is printed, after one warm-up pass. Before anything is allocated
the memory of the chosen size is estimated from the generator (a forward pass
on shapes only) and a size that does not fit in --max-memory, or in the
memory free now, is refused with both numbers.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			log, err := g.newLogger()
			if err != nil {
				return err
			}
			defer log.Sync()
			var ins, outs []string
			switch {
			case f.outDir != "":
				if err := os.MkdirAll(f.outDir, 0o755); err != nil {
					return err
				}
				ins = args
				for _, in := range args {
					outs = append(outs, filepath.Join(f.outDir, strings.TrimSuffix(filepath.Base(in), filepath.Ext(in))+".png"))
				}
			case len(args) == 2:
				ins, outs = args[:1], args[1:]
			default:
				return fmt.Errorf("want IN.png OUT.png, or --out-dir DIR with one or more inputs (got %d arguments)", len(args))
			}
			if f.checkpoint == "" {
				return fmt.Errorf("--checkpoint: required")
			}
			cp, err := train.ResolveCheckpoint(f.checkpoint, log)
			if err != nil {
				return err
			}
			be, err := f.engine.open()
			if err != nil {
				return err
			}
			budget, from, err := memoryBudget(f.maxMemory)
			if err != nil {
				return err
			}
			if budget > 0 {
				debug.SetMemoryLimit(budget) // the collector works harder near it
			}
			w := cmd.OutOrStdout()
			sum, err := train.TranslateFiles(cmd.Context(), be, cp, ins, outs,
				train.TranslateOptions{Net: train.Generator(f.net), Size: f.size, MaxMemory: budget, MemoryFrom: from},
				func(t train.Translated) {
					fmt.Fprintf(w, "%s → %s  %.1f ms\n", t.In, t.Out, float64(t.Took.Microseconds())/1e3)
				})
			if err != nil {
				return err
			}
			fmt.Fprintf(w, "%s %s ngf %d at %d×%d on %s: median %.1f ms/image over %d images\n", f.net, sum.Net.Arch, sum.Net.NGF,
				sum.Size, sum.Size, sum.Backend, float64(sum.Median.Microseconds())/1e3, sum.Images)
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.checkpoint, "checkpoint", "", "checkpoint folder, or a run folder (newest intact checkpoint)")
	fl.StringVar(&f.net, "net", "student", "generator: student or teacher")
	fl.StringVar(&f.outDir, "out-dir", "", "write every output into this folder")
	fl.IntVar(&f.size, "size", 0, "image side (0: the recipe's crop size)")
	fl.StringVar(&f.maxMemory, "max-memory", "", "memory the translation may use, e.g. 8G (default: what is free now: MemAvailable, the cgroup's limit, ulimit -v); a size that needs more is refused before anything is allocated")
	f.engine.register(cmd)
	return cmd
}
