package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/crdgo/crdgo/bench"
)

type benchEngineFlags struct {
	sideBySide
	ngf, ndf, blocks int
	noTorch          bool
}

func newBenchEngineCmd(g *globalFlags) *cobra.Command {
	f := &benchEngineFlags{}
	cmd := &cobra.Command{
		Use:   "engine",
		Short: "Time one GAN training step in crdgo and in PyTorch, side by side",
		Long: `Times one training step of a small GAN — mobile ResNet generator (ngf 16, 3
depthwise-separable residual blocks), 3-layer PatchGAN discriminator, LSGAN +
10·L1 loss, backward, Adam — in crdgo's engine and the same step in PyTorch
(bench/torch_step.py, run with --python), each configuration in fresh processes
with the same threads and OpenBLAS kernels, --repeats times alternately (crdgo,
PyTorch, crdgo, …) so that a busy spell of the machine falls on both. Prints the
median ms/step over all timed steps, the ratio crdgo/PyTorch, and the largest
peak RSS of each side's processes.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if f.worker {
				return runEngineWorker(cmd.OutOrStdout(), f)
			}
			return runBenchEngine(cmd.Context(), cmd.OutOrStdout(), f)
		},
	}
	fl := cmd.Flags()
	f.register(fl, 20, 5, 3)
	fl.IntVar(&f.ngf, "ngf", 16, "generator width")
	fl.IntVar(&f.ndf, "ndf", 64, "discriminator width")
	fl.IntVar(&f.blocks, "blocks", 3, "residual blocks in the generator")
	fl.BoolVar(&f.noTorch, "no-torch", false, "time crdgo only")
	return cmd
}

func (f *benchEngineFlags) validate() error {
	errs := f.sideBySide.validate()
	if f.ngf < 1 || f.ndf < 1 || f.blocks < 0 {
		errs = append(errs, fmt.Sprintf("--ngf %d --ndf %d --blocks %d: want ngf, ndf ≥ 1, blocks ≥ 0", f.ngf, f.ndf, f.blocks))
	}
	if len(errs) > 0 {
		return fmt.Errorf("bench engine: %s", strings.Join(errs, "; "))
	}
	return nil
}

func runEngineWorker(w io.Writer, f *benchEngineFlags) error {
	if err := f.validate(); err != nil {
		return err
	}
	be, err := f.workerBackend()
	if err != nil {
		return err
	}
	s, err := bench.NewGANStep(be, bench.GANConfig{Size: f.size, Batch: f.batch, NGF: f.ngf, NDF: f.ndf, Blocks: f.blocks})
	if err != nil {
		return err
	}
	return f.timeWorker(w, be, func() error { s.Step(); return nil }, func(r *bench.Result) {
		r.LossD, r.LossG = float64(s.LossD), float64(s.LossG)
	})
}

func runBenchEngine(ctx context.Context, w io.Writer, f *benchEngineFlags) error {
	if err := f.validate(); err != nil {
		return err
	}
	cfgs, err := bench.ParseConfigs(f.configs)
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("bench engine: find own executable: %w", err)
	}
	var script string
	if !f.noTorch {
		path, cleanup, err := bench.TorchScript(ctx, f.python, bench.WriteTorchScript)
		if err != nil {
			return fmt.Errorf("%w (or pass --no-torch)", err)
		}
		defer cleanup()
		script = path
	}
	f.header(w, fmt.Sprintf("mobile ResNet G (ngf %d, %d blocks) + PatchGAN D (ndf %d, 3 layers), LSGAN + 10·L1, Adam", f.ngf, f.blocks, f.ndf))
	env := f.env()
	cmp := bench.Comparison{Repeats: f.repeats, Timeout: benchTimeout, Baselines: []bench.Baseline{{Name: "PyTorch", Short: "PyTorch"}},
		Sides: func(c bench.Config) []bench.Side {
			common := f.common(c, "--ngf", strconv.Itoa(f.ngf), "--ndf", strconv.Itoa(f.ndf), "--blocks", strconv.Itoa(f.blocks))
			sides := []bench.Side{{Name: "crdgo", Env: env, Cmd: append([]string{self, "bench", "engine", "--worker", "--backend", f.backend}, common...)}}
			if script != "" {
				sides = append(sides, bench.Side{Name: "pytorch", Env: env, Cmd: append([]string{f.python, script}, common...)})
			}
			return sides
		}}
	for _, c := range cfgs {
		c.Label = bench.GANConfig{Size: c.Size, Batch: c.Batch, NGF: f.ngf}.String()
		cmp.Configs = append(cmp.Configs, c)
	}
	return cmp.Run(ctx, w)
}
