package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/crdgo/crdgo/allreduce"
	"github.com/crdgo/crdgo/crd/model"
	"github.com/crdgo/crdgo/crd/tensor"
	"github.com/crdgo/crdgo/crd/train"
	"github.com/crdgo/crdgo/node"
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

// kind returns the backend kind and the thread count (0: every CPU), and sets
// GOMAXPROCS to the thread count when one is given.
func (e *engineFlags) kind() (tensor.CPUKind, int, error) {
	if e.threads < 0 {
		return "", 0, fmt.Errorf("--threads %d: want ≥ 0", e.threads)
	}
	for _, k := range tensor.CPUKinds() {
		if string(k) == e.backend {
			threads := e.threads
			if threads > 0 {
				runtime.GOMAXPROCS(threads)
			} else {
				threads = runtime.GOMAXPROCS(0)
			}
			return k, threads, nil
		}
	}
	return "", 0, fmt.Errorf("--backend %q: want one of %v", e.backend, tensor.CPUKinds())
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

// load reads the pretrained networks onto be. A nil log says nothing.
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
	nodes, batch, lanes   int
	transport             string
	ringTimeout           time.Duration
	stores                runStoreFlags
	engine                engineFlags
	pre                   pretrainedFlags
}

func newTrainCmd(g *globalFlags) *cobra.Command {
	f := &trainFlags{}
	cmd := &cobra.Command{
		Use:   "train",
		Short: "Distil a teacher into a student with CRD (default: the synthetic demo)",
		Long: `Train a teacher GAN and distil it into a student with Content Relationship
Distillation, following a recipe (docs/crd.md §6): the teacher, its online
discriminator and the student train together.

With no flags it runs the demo recipe: it generates the synthetic edges2shapes
dataset under ./data if it is missing and writes checkpoints, sample grids
(input | teacher | student | target), loss.png and metrics.jsonl under
./runs/demo. Interrupt it (Ctrl-C) and run it again with --resume: training
continues bit for bit from the newest intact checkpoint.

Data-parallel: --nodes N trains on N workers in this process, each with its
own engine and its share of --threads; every step's global batch (--batch,
default the recipe's) is split across them, their gradients are summed by a
ring allreduce (--transport: an embedded NATS server, shared memory, or
direct TCP), and every replica applies the same update. The global batch does
not depend on N: N workers compute what one process computes on it, up to
float rounding. Rank 0 writes the run folder.

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
	fl.StringVar(&f.dataRoot, "data-root", "data", "folder holding the datasets (synthetic ones are generated here), or a store URL (s3://bucket/datasets?endpoint=…) read through --cache-dir")
	fl.StringVar(&f.out, "out", "", "run folder for checkpoints and reports (default runs/<recipe>), or a store URL (s3://bucket/jobs/NAME?endpoint=…)")
	fl.IntVar(&f.maxSteps, "max-steps", 0, "stop after this many steps (0: the recipe's epochs)")
	fl.BoolVar(&f.resume, "resume", false, "continue from the newest intact checkpoint in the run folder (start from scratch if there is none)")
	fl.BoolVar(&f.noProgress, "no-progress", false, "no progress bar")
	fl.IntVar(&f.logEvery, "log-every", 10, "steps between metrics.jsonl lines")
	fl.IntVar(&f.sampleEvery, "sample-every", 200, "steps between sample grids and loss plots")
	fl.IntVar(&f.checkpointEvery, "checkpoint-every", 0, "steps between checkpoints (0: the recipe's save_latest_freq)")
	fl.IntVar(&f.keep, "keep", 3, "intact step checkpoints to keep (≥ 1; broken ones newer than the oldest kept stay too)")
	fl.IntVar(&f.workers, "workers", 0, "image decoding goroutines per worker (0: one per CPU)")
	fl.IntVar(&f.nodes, "nodes", 1, "data-parallel workers in this process, 1 to the global batch")
	fl.IntVar(&f.batch, "batch", 0, "global batch size, split across the workers (0: the recipe's)")
	fl.StringVar(&f.transport, "transport", node.Transports()[0], "allreduce transport between workers: one of "+strings.Join(node.Transports(), ", "))
	fl.IntVar(&f.lanes, "lanes", 4, "NATS connections per worker (--transport nats)")
	fl.DurationVar(&f.ringTimeout, "ring-timeout", allreduce.DefaultConfig().RingTimeout, "longest wait for a peer in the allreduce before the step fails")
	f.stores.register(fl)
	f.engine.register(cmd)
	f.pre.register(cmd, true)
	return cmd
}

// check validates the data-parallel flags against the recipe's global batch,
// one line per problem, naming the flag and what it accepts.
func (f *trainFlags) check(batch int) error {
	var errs []error
	switch {
	case f.nodes < 1:
		errs = append(errs, fmt.Errorf("--nodes %d: want 1 to %d (the global batch; raise it with --batch)", f.nodes, batch))
	case f.nodes > batch:
		errs = append(errs, fmt.Errorf("--nodes %d: more workers than the global batch of %d examples: want 1 to %d, or raise --batch", f.nodes, batch, batch))
	}
	if f.batch < 0 {
		errs = append(errs, fmt.Errorf("--batch %d: want ≥ 1 (0: the recipe's)", f.batch))
	}
	if !slices.Contains(node.Transports(), f.transport) {
		errs = append(errs, fmt.Errorf("--transport %q: want one of %s", f.transport, strings.Join(node.Transports(), ", ")))
	}
	if f.lanes < 1 {
		errs = append(errs, fmt.Errorf("--lanes %d: want ≥ 1", f.lanes))
	}
	if f.ringTimeout <= 0 {
		errs = append(errs, fmt.Errorf("--ring-timeout %v: want > 0", f.ringTimeout))
	}
	if f.keep < 1 {
		errs = append(errs, fmt.Errorf("--keep %d: want ≥ 1 (the newest intact checkpoint is always kept)", f.keep))
	}
	if f.stores.keepEvery < 0 {
		errs = append(errs, fmt.Errorf("--keep-every %d: want ≥ 0 (0: none)", f.stores.keepEvery))
	}
	if f.stores.cacheSize < 1<<20 {
		errs = append(errs, fmt.Errorf("--cache-size %d: want at least 1 MiB", f.stores.cacheSize))
	}
	return errors.Join(errs...)
}

func runTrain(ctx context.Context, f *trainFlags, log *zap.Logger) error {
	rec, err := train.LoadRecipe(f.recipe)
	if err != nil {
		return err
	}
	if f.batch > 0 && f.batch != rec.Schedule.Batch {
		log.Warn("--batch departs from the recipe: the paper's runs used its batch", zap.String("recipe", rec.Name),
			zap.Int("recipe_batch", rec.Schedule.Batch), zap.Int("batch", f.batch))
		rec.Schedule.Batch = f.batch
		if err := rec.Validate(); err != nil {
			return fmt.Errorf("--batch %d: %w", f.batch, err)
		}
	}
	if err := f.check(rec.Schedule.Batch); err != nil {
		return err
	}
	if rec.Extrapolation {
		log.Warn("this recipe is crdgo's extrapolation, not part of the CRD release", zap.String("recipe", rec.Name))
	}
	out := f.out
	if out == "" {
		out = filepath.Join("runs", rec.Name)
	}
	place, err := f.stores.openRunPlace(ctx, out, log)
	if err != nil {
		return err
	}
	release, err := openRun(place.local, log)
	if err != nil {
		return err
	}
	defer release()
	if !f.resume {
		if has, err := place.hasCheckpoints(ctx); err != nil {
			return err
		} else if has {
			return fmt.Errorf("%s already has checkpoints: pass --resume to continue, or choose another --out", out)
		}
	}
	src, closeData, err := f.stores.dataSource(ctx, f.dataRoot, log)
	if err != nil {
		return err
	}
	defer closeData()
	kind, threads, err := f.engine.kind()
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	var progress io.Writer = os.Stderr
	if f.noProgress {
		progress = nil
	}
	if src == nil {
		if err := prepareData(ctx, localPath(f.dataRoot), rec, progress, log); err != nil {
			return err
		}
	} else if _, err := train.FindDataset(ctx, src, rec); err != nil {
		if rec.Data.Synth != nil {
			return fmt.Errorf("%w: crdgo generates synthetic datasets only on local disk: run crdgo data synth, then crdgo data push it", err)
		}
		return err
	}
	folder := train.NewRunFolder(place.local, progress, log)
	folder.Checkpoints, folder.Mirror = place.checkpoints, place.mirror
	cfg := node.LocalConfig{
		Train: train.Config{Recipe: rec, DataRoot: localPath(f.dataRoot), Data: src, OutDir: place.local, RealStats: f.pre.realStats,
			MaxSteps: f.maxSteps, LogEvery: f.logEvery, SampleEvery: f.sampleEvery, CheckpointEvery: f.checkpointEvery,
			KeepCheckpoints: f.keep, KeepEvery: f.stores.keepEvery, Workers: f.workers, Version: versionString()},
		Nodes: f.nodes, Transport: f.transport, Lanes: f.lanes, Threads: threads, Backend: kind,
		Output: folder,
		Extras: func(rank int, be tensor.Backend) (train.Extras, error) {
			l := log
			if rank > 0 {
				l = nil // said once
			}
			return f.pre.load(be, l)
		},
	}
	cfg.Allreduce = allreduce.DefaultConfig()
	cfg.Allreduce.RingTimeout = f.ringTimeout
	if f.resume {
		cp, err := place.latest(ctx, log)
		if err != nil {
			return err
		}
		if cp == "" {
			log.Info("no checkpoint to resume from yet: starting from step 0", zap.String("run", out))
		} else {
			log.Info("resuming", zap.String("checkpoint", cp))
		}
		cfg.Checkpoint = cp
	}
	if f.nodes > 1 {
		log.Info("data-parallel", zap.Int("workers", f.nodes), zap.Int("global_batch", rec.Schedule.Batch),
			zap.String("transport", f.transport), zap.Int("threads_per_worker", max(1, threads/f.nodes)))
	}
	sum, err := node.RunLocal(ctx, cfg, log)
	if errors.Is(err, context.Canceled) {
		log.Info("interrupted: continue with --resume", zap.String("checkpoint", sum.Checkpoint), zap.Int("step", sum.Steps))
		return nil
	}
	if err != nil {
		return err
	}
	fields := []zap.Field{zap.Int("steps", sum.Steps), zap.Int("epochs", sum.Epochs), zap.String("checkpoint", sum.Checkpoint),
		zap.String("samples", filepath.Join(place.local, "samples", "latest.png")), zap.String("loss_plot", filepath.Join(place.local, "loss.png"))}
	if e := sum.Eval; e != nil {
		fields = append(fields, zap.Float64("teacher_psnr", e.Teacher.PSNR), zap.Float64("student_psnr", e.Student.PSNR),
			zap.Float64("student_psnr_to_teacher", e.Student.PSNRTeacher),
			zap.Float64("teacher_fid", e.Teacher.FID), zap.Float64("student_fid", e.Student.FID))
	}
	log.Info("training done", fields...)
	return nil
}
