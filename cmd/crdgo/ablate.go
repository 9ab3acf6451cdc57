package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/crdgo/crdgo/crd/ablation"
	"github.com/crdgo/crdgo/crd/tensor"
	"github.com/crdgo/crdgo/crd/train"
)

type ablateFlags struct {
	recipe, variants, out, dataRoot string
	seeds, maxSteps, evalEvery      int
	jobs                            int
	engine                          engineFlags
	pre                             pretrainedFlags
}

func newAblateCmd(g *globalFlags) *cobra.Command {
	f := &ablateFlags{}
	cmd := &cobra.Command{
		Use:   "ablate",
		Short: "Train a recipe's ablation variants over seeds (docs/crd.md §11)",
		Long: `Train every variant of a recipe over several seeds, each (variant, seed) as its
own run folder OUT/<variant>/seed-<k>, with the same data, budget and student:

  alone             the student's network trained alone on the task's own loss
  output            plain output distillation: L1 to the teacher's output
  crd-rows-columns  CRD with the row and column sets only
  crd               full CRD (rows, columns, patches), the recipe as written
  crd-offline       full CRD, the teacher trained first and then frozen, no
                    online teacher discriminator

--jobs runs that many at once, each with --threads/--jobs compute threads.
Run it again after a stop: finished runs are skipped, interrupted ones resume
from their newest checkpoint. Then: crdgo report OUT.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.newLogger()
			if err != nil {
				return err
			}
			defer log.Sync()
			return runAblate(cmd.Context(), f, log)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.recipe, "recipe", "demo", "recipe name or YAML file")
	fl.StringVar(&f.variants, "variants", "all", "comma-separated variants, or all: "+strings.Join(train.Variants(), ", "))
	fl.IntVar(&f.seeds, "seeds", 3, "seeds per variant")
	fl.StringVar(&f.out, "out", "", "the ablation's folder (default runs/ablation/<recipe>)")
	fl.StringVar(&f.dataRoot, "data-root", "data", "folder holding the datasets (synthetic ones are generated here)")
	fl.IntVar(&f.maxSteps, "max-steps", 0, "every run's budget: the steps of the online schedule (0: the recipe's epochs); alone and crd-offline train each network as often as the online run does (docs/crd.md §11)")
	fl.IntVar(&f.evalEvery, "eval-every", 0, "evaluate every so many steps too, for the report's curves (0: the schedule's evaluations only)")
	fl.IntVar(&f.jobs, "jobs", 1, "runs trained at once")
	f.engine.register(cmd)
	f.pre.register(cmd, true)
	return cmd
}

func runAblate(ctx context.Context, f *ablateFlags, log *zap.Logger) error {
	rec, err := train.LoadRecipe(f.recipe)
	if err != nil {
		return err
	}
	variants := train.Variants()
	if f.variants != "all" {
		variants = strings.Split(f.variants, ",")
	}
	if f.jobs < 1 {
		return fmt.Errorf("--jobs %d: want ≥ 1", f.jobs)
	}
	kind, threads, err := f.engine.kind()
	if err != nil {
		return err
	}
	out := f.out
	if out == "" {
		out = filepath.Join("runs", "ablation", rec.Name)
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	cfg := ablation.Config{Recipe: rec, Variants: variants, Seeds: f.seeds, Out: out, DataRoot: f.dataRoot,
		MaxSteps: f.maxSteps, EvalEvery: f.evalEvery, Jobs: f.jobs, Threads: threads, Backend: kind,
		RealStats: f.pre.realStats, Version: versionString(), Progress: os.Stdout,
		Extras: func(be tensor.Backend) (train.Extras, error) { return f.pre.load(be, nil) }}
	if _, err := ablation.Execute(ctx, cfg, log); err != nil {
		if errors.Is(err, context.Canceled) {
			log.Info("interrupted: run the same command again to resume", zap.String("out", out))
			return nil
		}
		return err
	}
	log.Info("ablation done: crdgo report "+out, zap.String("out", out))
	return nil
}
