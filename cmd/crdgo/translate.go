package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/crdgo/crdgo/crd/data"
	"github.com/crdgo/crdgo/crd/nn"
	"github.com/crdgo/crdgo/crd/train"
)

type translateFlags struct {
	checkpoint, net, outDir string
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
forward pass is printed, after one warm-up pass.`,
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
			g, rec, err := train.LoadGenerator(be, cp, train.Generator(f.net))
			if err != nil {
				return err
			}
			size := f.size
			if size == 0 {
				size = rec.Data.CropSize
			}
			g.SetTraining(false)
			w := cmd.OutOrStdout()
			var lat []time.Duration
			tp := nn.NewTape(be)
			warm := false
			for i, in := range ins {
				fh, err := os.Open(in)
				if err != nil {
					return err
				}
				img, err := data.ReadImage(fh, size, 3)
				fh.Close()
				if err != nil {
					return fmt.Errorf("%s: %w", in, err)
				}
				ex := []data.Example{{A: img}}
				if !warm {
					train.Translate(tp, g, ex)
					warm = true
				}
				t0 := time.Now()
				out := train.Translate(tp, g, ex)[0]
				d := time.Since(t0)
				lat = append(lat, d)
				if err := train.WriteImage(outs[i], out, size, size); err != nil {
					return fmt.Errorf("%s: %w", outs[i], err)
				}
				fmt.Fprintf(w, "%s → %s  %.1f ms\n", in, outs[i], float64(d.Microseconds())/1e3)
			}
			slices.Sort(lat)
			fmt.Fprintf(w, "%s %s ngf %d at %d×%d on %s: median %.1f ms/image over %d images\n", f.net, archOf(rec, f.net), ngfOf(rec, f.net),
				size, size, be.Name(), float64(lat[len(lat)/2].Microseconds())/1e3, len(lat))
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.checkpoint, "checkpoint", "", "checkpoint folder, or a run folder (newest intact checkpoint)")
	fl.StringVar(&f.net, "net", "student", "generator: student or teacher")
	fl.StringVar(&f.outDir, "out-dir", "", "write every output into this folder")
	fl.IntVar(&f.size, "size", 0, "image side (0: the recipe's crop size)")
	f.engine.register(cmd)
	return cmd
}

func archOf(r train.Recipe, net string) string {
	if net == "teacher" {
		return r.Teacher.Arch
	}
	return r.Student.Arch
}

func ngfOf(r train.Recipe, net string) int {
	if net == "teacher" {
		return r.Teacher.NGF
	}
	return r.Student.NGF
}
