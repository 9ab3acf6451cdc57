package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/crdgo/crdgo/crd/model"
	"github.com/crdgo/crdgo/crd/tensor"
	"github.com/crdgo/crdgo/crd/train"
)

// engineFlags choose the compute backend.
type engineFlags struct {
	backend string
	threads int
}

func (e *engineFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&e.backend, "backend", string(tensor.DefaultCPUKind()), fmt.Sprintf("CPU backend: one of %v", tensor.CPUKinds()))
	cmd.Flags().IntVar(&e.threads, "threads", 0, "compute threads (0: all CPUs)")
}

func (e *engineFlags) open() (tensor.Backend, error) {
	for _, k := range tensor.CPUKinds() {
		if string(k) == e.backend {
			if e.threads < 0 {
				return nil, fmt.Errorf("--threads %d: want ≥ 0", e.threads)
			}
			if e.threads > 0 {
				runtime.GOMAXPROCS(e.threads)
			}
			return tensor.NewCPU(k, e.threads), nil
		}
	}
	return nil, fmt.Errorf("--backend %q: want one of %v", e.backend, tensor.CPUKinds())
}

// pretrainedFlags point at the pretrained networks people already have.
type pretrainedFlags struct {
	vgg, inception, realStats string
}

func (p *pretrainedFlags) register(cmd *cobra.Command, withVGG bool) {
	if withVGG {
		cmd.Flags().StringVar(&p.vgg, "vgg", "", "VGG16 weights for the perceptual terms: torchvision's vgg16-397923af.pth or a safetensors file (without it they are off)")
	}
	cmd.Flags().StringVar(&p.inception, "inception", "", "Inception weights for FID/KID: pytorch-fid's pt_inception-2015-12-05-6726825d.pth or safetensors (without it no FID)")
	cmd.Flags().StringVar(&p.realStats, "real-stats", "", "real statistics for FID: an npz with mu and sigma (GAN Compression's real_stat files); default: the recipe's file in the dataset folder, else computed from the evaluation images")
}

func (p *pretrainedFlags) load(be tensor.Backend, log *zap.Logger) (train.Extras, error) {
	var ext train.Extras
	if p.vgg != "" {
		v, err := model.LoadVGG16(be, p.vgg)
		if err != nil {
			return ext, fmt.Errorf("--vgg: %w", err)
		}
		ext.VGG = v
	} else if log != nil {
		log.Warn("no VGG16 weights (--vgg): training without the perceptual style and feature terms")
	}
	if p.inception != "" {
		inc, err := model.LoadInception(be, p.inception)
		if err != nil {
			return ext, fmt.Errorf("--inception: %w", err)
		}
		ext.Inception = inc
	}
	return ext, nil
}

type trainFlags struct {
	recipe, dataRoot, out string
	maxSteps              int
	resume, noProgress    bool
	logEvery, sampleEvery int
	checkpointEvery, keep int
	workers               int
	engine                engineFlags
	pre                   pretrainedFlags
}

func newTrainCmd(g *globalFlags) *cobra.Command {
	f := &trainFlags{}
	cmd := &cobra.Command{
		Use:   "train",
		Short: "Distil a teacher into a student with CRD (default: the synthetic demo)",
		Long: `Train a teacher GAN and distil it into a student with Content Relationship
Distillation, following a recipe (CRD.md §6): the teacher, its online
discriminator and the student train together.

With no flags it runs the demo recipe: it generates the synthetic edges2shapes
dataset under ./data if it is missing and writes checkpoints, sample grids
(input | teacher | student | target), loss.png and metrics.jsonl under
./runs/demo. Interrupt it (Ctrl-C) and run it again with --resume: training
continues bit for bit from the newest intact checkpoint.

Built-in recipes: ` + strings.Join(train.Recipes(), ", ") + ` (cityscapes is crdgo's
extrapolation, not part of the CRD release). --recipe also takes a YAML file.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.newLogger()
			if err != nil {
				return err
			}
			defer log.Sync()
			return runTrain(cmd.Context(), f, log)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.recipe, "recipe", "demo", "recipe name or YAML file")
	fl.StringVar(&f.dataRoot, "data-root", "data", "folder holding the datasets (synthetic ones are generated here)")
	fl.StringVar(&f.out, "out", "", "run folder for checkpoints and reports (default runs/<recipe>)")
	fl.IntVar(&f.maxSteps, "max-steps", 0, "stop after this many steps (0: the recipe's epochs)")
	fl.BoolVar(&f.resume, "resume", false, "continue from the newest intact checkpoint in the run folder (start from scratch if there is none)")
	fl.BoolVar(&f.noProgress, "no-progress", false, "no progress bar")
	fl.IntVar(&f.logEvery, "log-every", 10, "steps between metrics.jsonl lines")
	fl.IntVar(&f.sampleEvery, "sample-every", 200, "steps between sample grids and loss plots")
	fl.IntVar(&f.checkpointEvery, "checkpoint-every", 0, "steps between checkpoints (0: the recipe's save_latest_freq)")
	fl.IntVar(&f.keep, "keep", 3, "intact step checkpoints to keep (≥ 1; broken ones newer than the oldest kept stay too)")
	fl.IntVar(&f.workers, "workers", 0, "image decoding goroutines (0: one per CPU)")
	f.engine.register(cmd)
	f.pre.register(cmd, true)
	return cmd
}

func runTrain(ctx context.Context, f *trainFlags, log *zap.Logger) error {
	if err := f.check(); err != nil {
		return err
	}
	rec, err := train.LoadRecipe(f.recipe)
	if err != nil {
		return err
	}
	if rec.Extrapolation {
		log.Warn("this recipe is crdgo's extrapolation, not part of the CRD release", zap.String("recipe", rec.Name))
	}
	out := f.out
	if out == "" {
		out = filepath.Join("runs", rec.Name)
	}
	release, err := openRun(out, log)
	if err != nil {
		return err
	}
	defer release()
	ckDir := filepath.Join(out, "checkpoints")
	if !f.resume {
		if cps, _ := train.Checkpoints(ckDir); len(cps) > 0 {
			return fmt.Errorf("%s already has checkpoints: pass --resume to continue, or choose another --out", out)
		}
	}
	be, err := f.engine.open()
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	progress := os.Stderr
	if f.noProgress {
		progress = nil
	}
	if err := prepareData(ctx, f.dataRoot, rec, progress, log); err != nil {
		return err
	}
	ext, err := f.pre.load(be, log)
	if err != nil {
		return err
	}
	cfg := train.Config{Recipe: rec, DataRoot: f.dataRoot, OutDir: out, RealStats: f.pre.realStats,
		MaxSteps: f.maxSteps, LogEvery: f.logEvery, SampleEvery: f.sampleEvery, CheckpointEvery: f.checkpointEvery,
		KeepCheckpoints: f.keep, Workers: f.workers, Version: versionString()}
	tr, err := train.New(cfg, be, ext, log)
	if err != nil {
		return err
	}
	if f.resume {
		cp, err := train.LatestCheckpoint(ckDir, log)
		if err != nil {
			return err
		}
		if cp == "" {
			log.Info("no checkpoint to resume from yet: starting from step 0", zap.String("dir", ckDir))
		} else {
			if err := tr.LoadCheckpoint(cp); err != nil {
				return err
			}
			log.Info("resumed", zap.String("checkpoint", cp), zap.Int("step", tr.State().Step), zap.Int("epoch", tr.State().Epoch))
		}
	}
	sum, err := tr.Run(ctx, nil, progress)
	if errors.Is(err, context.Canceled) {
		log.Info("interrupted: continue with --resume", zap.String("checkpoint", sum.Checkpoint), zap.Int("step", sum.Steps))
		return nil
	}
	if err != nil {
		return err
	}
	fields := []zap.Field{zap.Int("steps", sum.Steps), zap.Int("epochs", sum.Epochs), zap.String("checkpoint", sum.Checkpoint),
		zap.String("samples", filepath.Join(out, "samples", "latest.png")), zap.String("loss_plot", filepath.Join(out, "loss.png"))}
	if e := sum.Eval; e != nil {
		fields = append(fields, zap.Float64("teacher_psnr", e.Teacher.PSNR), zap.Float64("student_psnr", e.Student.PSNR),
			zap.Float64("teacher_fid", e.Teacher.FID), zap.Float64("student_fid", e.Student.FID))
	}
	log.Info("training done", fields...)
	return nil
}
