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

type benchStepFlags struct {
	sideBySide
	recipe           string
	ngf, ndf, blocks int
	patch            int
	angles           string
}

func newBenchStepCmd(g *globalFlags) *cobra.Command {
	f := &benchStepFlags{}
	cmd := &cobra.Command{
		Use:   "step",
		Short: "Time one pix2pix CRD distillation step in crdgo and in PyTorch (naive and Gram-form angles)",
		Long: `Times one full pix2pix CRD step (docs/crd.md §4.1: discriminator, teacher through the
pre-update D, student against the pre-update teacher output; mobile_resnet
teacher ngf N, student ngf N/4, 9 blocks, conditional PatchGAN, no VGG) in
crdgo's trainer and in PyTorch (bench/torch_crd_step.py) in two forms: the
released code's naive O(n³·d) angle term, which users of the released code
run, and the same Gram-form angle as crdgo's (engine against engine). Each
configuration runs in a fresh process with the same thread count; prints the
median ms/step, ratios and peak RSS.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if f.worker {
				return runStepWorker(cmd.OutOrStdout(), f)
			}
			return runBenchStep(cmd.Context(), cmd.OutOrStdout(), f)
		},
	}
	fl := cmd.Flags()
	f.register(fl, 10, 3, 2)
	fl.StringVar(&f.recipe, "recipe", "edges2shoes-resnet", "pix2pix recipe whose step is timed (sizes are overridden by the flags)")
	fl.IntVar(&f.ngf, "ngf", 16, "teacher width N (the student has N/4)")
	fl.IntVar(&f.ndf, "ndf", 64, "discriminator width")
	fl.IntVar(&f.blocks, "blocks", 9, "residual blocks of both generators")
	fl.IntVar(&f.patch, "patch", 32, "CRD patch size")
	fl.StringVar(&f.angles, "torch", "naive,gram", "PyTorch forms to time: naive, gram, or none")
	return cmd
}

func runStepWorker(w io.Writer, f *benchStepFlags) error {
	be, err := f.workerBackend()
	if err != nil {
		return err
	}
	s, err := bench.NewCRDStep(be, bench.CRDStepConfig{Recipe: f.recipe, Size: f.size, Batch: f.batch, NGF: f.ngf, NDF: f.ndf, Blocks: f.blocks, Patch: f.patch})
	if err != nil {
		return err
	}
	return f.timeWorker(w, be, s.Step, nil)
}

func runBenchStep(ctx context.Context, w io.Writer, f *benchStepFlags) error {
	if errs := f.validate(); len(errs) > 0 {
		return fmt.Errorf("bench step: %s", strings.Join(errs, "; "))
	}
	cfgs, err := bench.ParseConfigs(f.configs)
	if err != nil {
		return err
	}
	var angles []string
	for _, a := range strings.Split(f.angles, ",") {
		switch a = strings.TrimSpace(a); a {
		case "naive", "gram":
			angles = append(angles, a)
		case "none", "":
		default:
			return fmt.Errorf("--torch %q: want naive, gram, or none", a)
		}
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	var script string
	if len(angles) > 0 {
		path, cleanup, err := bench.TorchScript(ctx, f.python, bench.WriteTorchCRDScript)
		if err != nil {
			return fmt.Errorf("%w (or pass --torch none)", err)
		}
		defer cleanup()
		script = path
	}
	f.header(w, fmt.Sprintf("pix2pix CRD (recipe %s): teacher mobile_resnet ngf %d, student ngf %d, %d blocks, PatchGAN ndf %d (6 ch), CRD patch %d, no VGG",
		f.recipe, f.ngf, max(1, f.ngf/4), f.blocks, f.ndf, f.patch))
	env := f.env()
	cmp := bench.Comparison{Configs: cfgs, Repeats: f.repeats, Timeout: benchTimeout,
		Sides: func(c bench.Config) []bench.Side {
			common := f.common(c, "--ngf", strconv.Itoa(f.ngf), "--ndf", strconv.Itoa(f.ndf), "--blocks", strconv.Itoa(f.blocks),
				"--patch", strconv.Itoa(f.patch))
			sides := []bench.Side{{Name: "crdgo", Env: env,
				Cmd: append([]string{self, "bench", "step", "--worker", "--recipe", f.recipe, "--backend", f.backend}, common...)}}
			for _, a := range angles {
				sides = append(sides, bench.Side{Name: "pytorch " + a, Env: env, Cmd: append([]string{f.python, script, "--angle", a}, common...)})
			}
			return sides
		}}
	for _, a := range angles {
		cmp.Baselines = append(cmp.Baselines, bench.Baseline{Name: "PyTorch " + a, Short: a})
	}
	return cmp.Run(ctx, w)
}
