package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"

	"github.com/spf13/cobra"

	"github.com/crdgo/crdgo/crd/train"
)

type evalFlags struct {
	checkpoint, dataRoot string
	maxImages            int
	asJSON               bool
	engine               engineFlags
	pre                  pretrainedFlags
}

func newEvalCmd(g *globalFlags) *cobra.Command {
	f := &evalFlags{}
	cmd := &cobra.Command{
		Use:   "eval --checkpoint DIR",
		Short: "Measure teacher and student of a checkpoint: FID/KID, and PSNR/SSIM/L1 on paired data",
		Long: `Evaluate the teacher and the student of a checkpoint on the recipe's evaluation
set (docs/crd.md §7): generated images are converted to uint8 as the reference does
(truncation), FID uses pytorch-fid's Inception (--inception) against real
statistics (--real-stats npz, the recipe's file in the dataset folder, or
computed from the real images), and KID when the real images are used. On
paired data (the synthetic recipes) PSNR, SSIM and L1 against the ground truth
are reported too. --checkpoint takes a step folder or a run folder (its newest
intact checkpoint); the recipe comes from the checkpoint.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.newLogger()
			if err != nil {
				return err
			}
			defer log.Sync()
			if f.checkpoint == "" {
				return fmt.Errorf("--checkpoint: required (a step folder or a run folder)")
			}
			if f.maxImages < 0 {
				return fmt.Errorf("--max-images %d: want ≥ 0 (0: all)", f.maxImages)
			}
			cp, err := train.ResolveCheckpoint(f.checkpoint, log)
			if err != nil {
				return err
			}
			be, err := f.engine.open()
			if err != nil {
				return err
			}
			teacher, rec, err := train.LoadGenerator(be, cp, train.TeacherGenerator)
			if err != nil {
				return err
			}
			student, _, err := train.LoadGenerator(be, cp, train.StudentGenerator)
			if err != nil {
				return err
			}
			if f.maxImages > 0 {
				rec.Eval.MaxImages = f.maxImages
			}
			ext, err := f.pre.load(be, nil)
			if err != nil {
				return err
			}
			if ext.Inception == nil && !rec.Eval.Paired {
				return fmt.Errorf("recipe %s has no ground truth: pass --inception to measure FID", rec.Name)
			}
			ctx := cmd.Context()
			src, err := train.LocalDataset(f.dataRoot, rec)
			if err != nil {
				return err
			}
			ds, err := train.OpenEvalSet(ctx, src, rec, log)
			if err != nil {
				return err
			}
			stats := f.pre.realStats
			ev, err := train.NewEvaluator(ctx, be, ds, rec, ext.Inception, stats, log)
			if err != nil {
				return err
			}
			res, err := ev.Evaluate(ctx, teacher, student)
			if err != nil {
				return err
			}
			if f.asJSON {
				return json.NewEncoder(cmd.OutOrStdout()).Encode(map[string]any{"checkpoint": cp, "recipe": rec.Name, "eval": res})
			}
			printEval(cmd.OutOrStdout(), cp, rec, res)
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.checkpoint, "checkpoint", "", "checkpoint folder, or a run folder (newest intact checkpoint)")
	fl.StringVar(&f.dataRoot, "data-root", "data", "folder holding the datasets")
	fl.IntVar(&f.maxImages, "max-images", 0, "evaluate at most this many images (0: all)")
	fl.BoolVar(&f.asJSON, "json", false, "print JSON")
	f.engine.register(cmd)
	f.pre.register(cmd, false)
	return cmd
}

func printEval(w io.Writer, cp string, rec train.Recipe, res train.EvalResult) {
	fmt.Fprintf(w, "checkpoint %s, recipe %s, %d images\n", cp, rec.Name, res.Images)
	if res.RealStats != "" {
		fmt.Fprintf(w, "real statistics: %s\n", res.RealStats)
	}
	fmt.Fprintf(w, "| network | FID | KID | PSNR dB | SSIM | L1 | PSNR to teacher dB | SSIM to teacher |\n|---|---|---|---|---|---|---|---|\n")
	for _, row := range []struct {
		name string
		s    train.Scores
	}{{fmt.Sprintf("teacher %s ngf %d", rec.Teacher.Arch, rec.Teacher.NGF), res.Teacher},
		{fmt.Sprintf("student %s ngf %d", rec.Student.Arch, rec.Student.NGF), res.Student}} {
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %s |\n", row.name, num(row.s.FID, 2), num(row.s.KID, 4), num(row.s.PSNR, 2),
			num(row.s.SSIM, 4), num(row.s.L1, 4), num(row.s.PSNRTeacher, 2), num(row.s.SSIMTeacher, 4))
		if row.s.Warning != "" {
			fmt.Fprintf(w, "  warning: %s\n", row.s.Warning)
		}
	}
}

func num(v float64, prec int) string {
	if math.IsNaN(v) {
		return "–"
	}
	return fmt.Sprintf("%.*f", prec, v)
}
