package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/crdgo/crdgo/bench"
	"github.com/crdgo/crdgo/crd/tensor"
)

type benchStepFlags struct {
	recipe           string
	configs          string
	ngf, ndf, blocks int
	patch            int
	steps, warmup    int
	repeats          int
	threads          int
	coretype         string
	backend, python  string
	angles           string
	worker           bool
	size, batch      int
}

func newBenchStepCmd(g *globalFlags) *cobra.Command {
	f := &benchStepFlags{}
	cmd := &cobra.Command{
		Use:   "step",
		Short: "Time one pix2pix CRD distillation step in crdgo and in PyTorch (naive and Gram-form angles)",
		Long: `Times one full pix2pix CRD step (CRD.md §4.1: discriminator, teacher through the
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
	fl.StringVar(&f.recipe, "recipe", "edges2shoes-resnet", "pix2pix recipe whose step is timed (sizes are overridden by the flags)")
	fl.StringVar(&f.configs, "configs", "64x1,64x4,128x1", "comma-separated SIZExBATCH configurations")
	fl.IntVar(&f.ngf, "ngf", 16, "teacher width N (the student has N/4)")
	fl.IntVar(&f.ndf, "ndf", 64, "discriminator width")
	fl.IntVar(&f.blocks, "blocks", 9, "residual blocks of both generators")
	fl.IntVar(&f.patch, "patch", 32, "CRD patch size")
	fl.IntVar(&f.steps, "steps", 10, "timed steps per configuration (the median is reported)")
	fl.IntVar(&f.warmup, "warmup", 3, "untimed steps before timing")
	fl.IntVar(&f.repeats, "repeats", 2, "fresh processes per side and configuration, run alternately; their timed steps are pooled")
	fl.StringVar(&f.coretype, "openblas-coretype", "auto", "OPENBLAS_CORETYPE for both sides: auto (SkylakeX on AVX-512 CPUs: Debian's OpenBLAS 0.3.21 picks AVX2 kernels on AMD Zen 4), keep (the environment's), or a name")
	fl.IntVar(&f.threads, "threads", 2, "threads for each side")
	fl.StringVar(&f.backend, "backend", string(tensor.DefaultCPUKind()), fmt.Sprintf("crdgo CPU backend: one of %v", tensor.CPUKinds()))
	fl.StringVar(&f.python, "python", "/usr/bin/python3", "Python with PyTorch (Debian python3-torch)")
	fl.StringVar(&f.angles, "torch", "naive,gram", "PyTorch forms to time: naive, gram, or none")
	fl.BoolVar(&f.worker, "worker", false, "internal: time one configuration in this process")
	fl.IntVar(&f.size, "size", 64, "internal (--worker)")
	fl.IntVar(&f.batch, "batch", 1, "internal (--worker)")
	for _, h := range []string{"worker", "size", "batch"} {
		_ = fl.MarkHidden(h)
	}
	return cmd
}

func runStepWorker(w io.Writer, f *benchStepFlags) error {
	if f.threads < 1 || f.steps < 1 {
		return fmt.Errorf("bench step: --threads %d --steps %d: want ≥ 1", f.threads, f.steps)
	}
	runtime.GOMAXPROCS(f.threads)
	var kind tensor.CPUKind
	for _, k := range tensor.CPUKinds() {
		if string(k) == f.backend {
			kind = k
		}
	}
	if kind == "" {
		return fmt.Errorf("--backend %q: want one of %v", f.backend, tensor.CPUKinds())
	}
	be := tensor.NewCPU(kind, f.threads)
	s, err := bench.NewCRDStep(be, bench.CRDStepConfig{Recipe: f.recipe, Size: f.size, Batch: f.batch, NGF: f.ngf, NDF: f.ndf, Blocks: f.blocks, Patch: f.patch})
	if err != nil {
		return err
	}
	var stepErr error
	ds := bench.TimeSteps(func() {
		if err := s.Step(); err != nil && stepErr == nil {
			stepErr = err
		}
	}, f.warmup, f.steps)
	if stepErr != nil {
		return stepErr
	}
	r := bench.Result{Impl: "crdgo " + be.Name(), Threads: f.threads}
	for _, d := range ds {
		r.MS = append(r.MS, float64(d.Microseconds())/1e3)
	}
	if r.PeakRSSBytes, err = bench.PeakRSS(); err != nil {
		return err
	}
	return json.NewEncoder(w).Encode(r)
}

func runBenchStep(ctx context.Context, w io.Writer, f *benchStepFlags) error {
	cfgs, err := parseBenchConfigs(f.configs)
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
		if err := bench.CheckPython(ctx, f.python); err != nil {
			return fmt.Errorf("%w (or pass --torch none)", err)
		}
		dir, err := os.MkdirTemp("", "crdgo-bench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		if script, err = bench.WriteTorchCRDScript(dir); err != nil {
			return err
		}
	}
	fmt.Fprintf(w, "machine: %s\n", bench.Machine())
	_, says := bench.OpenBLASCoretype(f.coretype)
	fmt.Fprintf(w, "%s\n", says)
	fmt.Fprintf(w, "step: pix2pix CRD (recipe %s): teacher mobile_resnet ngf %d, student ngf %d, %d blocks, PatchGAN ndf %d (6 ch), CRD patch %d, no VGG; %d threads each; %d timed steps after %d warm-up per process, %d processes per side run alternately; medians over all their timed steps\n\n",
		f.recipe, f.ngf, max(1, f.ngf/4), f.blocks, f.ndf, f.patch, f.threads, f.steps, f.warmup, max(1, f.repeats))
	head := "| config | crdgo ms/step |"
	sep := "|---|---|"
	for _, a := range angles {
		head += fmt.Sprintf(" PyTorch %s ms/step | ratio crdgo/%s |", a, a)
		sep += "---|---|"
	}
	head += " crdgo peak RSS |"
	sep += "---|"
	for _, a := range angles {
		head += fmt.Sprintf(" PyTorch %s peak RSS |", a)
		sep += "---|"
	}
	fmt.Fprintln(w, head)
	fmt.Fprintln(w, sep)
	env := bench.ThreadEnv(f.threads)
	coretype, _ := bench.OpenBLASCoretype(f.coretype)
	if coretype != "" {
		env = append(env, "OPENBLAS_CORETYPE="+coretype)
	}
	for _, c := range cfgs {
		common := []string{"--ngf", strconv.Itoa(f.ngf), "--ndf", strconv.Itoa(f.ndf), "--blocks", strconv.Itoa(f.blocks),
			"--patch", strconv.Itoa(f.patch), "--steps", strconv.Itoa(f.steps), "--warmup", strconv.Itoa(f.warmup),
			"--threads", strconv.Itoa(f.threads), "--size", strconv.Itoa(c[0]), "--batch", strconv.Itoa(c[1])}
		sides := []bench.Side{{Name: "crdgo", Env: env,
			Cmd: append([]string{self, "bench", "step", "--worker", "--recipe", f.recipe, "--backend", f.backend}, common...)}}
		for _, a := range angles {
			sides = append(sides, bench.Side{Name: "pytorch " + a, Env: env, Cmd: append([]string{f.python, script, "--angle", a}, common...)})
		}
		res, err := bench.Alternate(ctx, sides, f.repeats, 60*time.Minute)
		if err != nil {
			return err
		}
		gr := res[0]
		row := fmt.Sprintf("| %d×%d b%d | %.1f |", c[0], c[0], c[1], gr.Median())
		var rss []string
		for _, tr := range res[1:] {
			row += fmt.Sprintf(" %.1f | %.2f |", tr.Median(), gr.Median()/tr.Median())
			rss = append(rss, mib(tr.PeakRSSBytes))
		}
		row += " " + mib(gr.PeakRSSBytes) + " |"
		for _, r := range rss {
			row += " " + r + " |"
		}
		fmt.Fprintln(w, row)
	}
	return nil
}
