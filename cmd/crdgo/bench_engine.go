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
	cfgs, err := parseBenchConfigs(f.configs)
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("bench engine: find own executable: %w", err)
	}
	var script string
	if !f.noTorch {
		if err := bench.CheckPython(ctx, f.python); err != nil {
			return fmt.Errorf("%w (or pass --no-torch)", err)
		}
		dir, err := os.MkdirTemp("", "crdgo-bench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		if script, err = bench.WriteTorchScript(dir); err != nil {
			return err
		}
	}
	f.header(w, fmt.Sprintf("mobile ResNet G (ngf %d, %d blocks) + PatchGAN D (ndf %d, 3 layers), LSGAN + 10·L1, Adam", f.ngf, f.blocks, f.ndf))
	fmt.Fprintf(w, "| config | crdgo ms/step | PyTorch ms/step | ratio crdgo/PyTorch | crdgo peak RSS | PyTorch peak RSS |\n")
	fmt.Fprintf(w, "|---|---|---|---|---|---|\n")
	env := f.env()
	for _, c := range cfgs {
		common := f.common(c, "--ngf", strconv.Itoa(f.ngf), "--ndf", strconv.Itoa(f.ndf), "--blocks", strconv.Itoa(f.blocks))
		sides := []bench.Side{{Name: "crdgo", Env: env,
			Cmd: append([]string{self, "bench", "engine", "--worker", "--backend", f.backend}, common...)}}
		if !f.noTorch {
			sides = append(sides, bench.Side{Name: "pytorch", Env: env, Cmd: append([]string{f.python, script}, common...)})
		}
		res, err := bench.Alternate(ctx, sides, f.repeats, benchTimeout)
		if err != nil {
			return err
		}
		gr := res[0]
		name := bench.GANConfig{Size: c[0], Batch: c[1], NGF: f.ngf}.String()
		if f.noTorch {
			fmt.Fprintf(w, "| %s | %.1f | – | – | %s | – |\n", name, gr.Median(), mib(gr.PeakRSSBytes))
			continue
		}
		tr := res[1]
		fmt.Fprintf(w, "| %s | %.1f | %.1f | %.2f | %s | %s |\n", name, gr.Median(), tr.Median(), gr.Median()/tr.Median(),
			mib(gr.PeakRSSBytes), mib(tr.PeakRSSBytes))
	}
	return nil
}
