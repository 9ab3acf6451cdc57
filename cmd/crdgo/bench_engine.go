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

type benchEngineFlags struct {
	configs       string
	ngf, ndf      int
	blocks        int
	steps, warmup int
	repeats       int
	threads       int
	coretype      string
	backend       string
	python        string
	noTorch       bool
	worker        bool
	size, batch   int
}

func newBenchEngineCmd(g *globalFlags) *cobra.Command {
	f := &benchEngineFlags{}
	cmd := &cobra.Command{
		Use:   "engine",
		Short: "Time one GAN training step in crdgo and in PyTorch, side by side",
		Long: `Times one training step of a small GAN — mobile ResNet generator (ngf 16, 3
depthwise-separable residual blocks), 3-layer PatchGAN discriminator, LSGAN +
10·L1 loss, backward, Adam — in crdgo's engine and the same step in PyTorch
(bench/torch_step.py, run with --python), each configuration in a fresh process
with the same thread count, --repeats times alternately (crdgo, PyTorch, crdgo, …)
so that a busy spell of the machine falls on both. Prints the median ms/step
over all timed steps (--steps per process, after --warmup), the ratio
crdgo/PyTorch, and the largest peak RSS of each side's processes.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if f.worker {
				return runEngineWorker(cmd.OutOrStdout(), f)
			}
			return runBenchEngine(cmd.Context(), cmd.OutOrStdout(), f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.configs, "configs", "64x1,64x4,128x1", "comma-separated SIZExBATCH configurations")
	fl.IntVar(&f.ngf, "ngf", 16, "generator width")
	fl.IntVar(&f.ndf, "ndf", 64, "discriminator width")
	fl.IntVar(&f.blocks, "blocks", 3, "residual blocks in the generator")
	fl.IntVar(&f.steps, "steps", 20, "timed steps per configuration (the median is reported)")
	fl.IntVar(&f.warmup, "warmup", 5, "untimed steps before timing")
	fl.IntVar(&f.repeats, "repeats", 3, "fresh processes per side and configuration, run alternately; their timed steps are pooled")
	fl.StringVar(&f.coretype, "openblas-coretype", "auto", "OPENBLAS_CORETYPE for both sides: auto (SkylakeX on AVX-512 CPUs: Debian's OpenBLAS 0.3.21 picks AVX2 kernels on AMD Zen 4), keep (the environment's), or a name")
	fl.IntVar(&f.threads, "threads", 2, "threads for each side (GOMAXPROCS and backend workers; torch.set_num_threads)")
	fl.StringVar(&f.backend, "backend", string(tensor.DefaultCPUKind()), fmt.Sprintf("crdgo CPU backend: one of %v", tensor.CPUKinds()))
	fl.StringVar(&f.python, "python", "/usr/bin/python3", "Python with PyTorch (Debian python3-torch)")
	fl.BoolVar(&f.noTorch, "no-torch", false, "time crdgo only")
	fl.BoolVar(&f.worker, "worker", false, "internal: time one configuration in this process and print JSON")
	fl.IntVar(&f.size, "size", 64, "internal (--worker): image size")
	fl.IntVar(&f.batch, "batch", 1, "internal (--worker): batch size")
	_ = fl.MarkHidden("worker")
	_ = fl.MarkHidden("size")
	_ = fl.MarkHidden("batch")
	return cmd
}

func parseBenchConfigs(s string) ([][2]int, error) {
	var out [][2]int
	for _, c := range strings.Split(s, ",") {
		a, b, ok := strings.Cut(strings.TrimSpace(c), "x")
		size, err1 := strconv.Atoi(a)
		batch, err2 := strconv.Atoi(b)
		if !ok || err1 != nil || err2 != nil || size < 16 || size%4 != 0 || batch < 1 || size > 1024 || batch > 64 {
			return nil, fmt.Errorf("--configs: %q: want SIZExBATCH with SIZE a multiple of 4 in [16,1024] and BATCH in [1,64]", c)
		}
		out = append(out, [2]int{size, batch})
	}
	return out, nil
}

func (f *benchEngineFlags) validate() error {
	var errs []string
	if f.steps < 1 || f.warmup < 0 {
		errs = append(errs, fmt.Sprintf("--steps %d --warmup %d: want steps ≥ 1, warmup ≥ 0", f.steps, f.warmup))
	}
	if f.threads < 1 {
		errs = append(errs, fmt.Sprintf("--threads %d: want ≥ 1", f.threads))
	}
	if f.ngf < 1 || f.ndf < 1 || f.blocks < 0 {
		errs = append(errs, fmt.Sprintf("--ngf %d --ndf %d --blocks %d: want ngf, ndf ≥ 1, blocks ≥ 0", f.ngf, f.ndf, f.blocks))
	}
	ok := false
	for _, k := range tensor.CPUKinds() {
		ok = ok || string(k) == f.backend
	}
	if !ok {
		errs = append(errs, fmt.Sprintf("--backend %q: want one of %v", f.backend, tensor.CPUKinds()))
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
	runtime.GOMAXPROCS(f.threads)
	be := tensor.NewCPU(tensor.CPUKind(f.backend), f.threads)
	s, err := bench.NewGANStep(be, bench.GANConfig{Size: f.size, Batch: f.batch, NGF: f.ngf, NDF: f.ndf, Blocks: f.blocks})
	if err != nil {
		return err
	}
	ds := bench.TimeSteps(s.Step, f.warmup, f.steps)
	r := bench.Result{Impl: "crdgo " + be.Name(), Threads: f.threads, LossD: float64(s.LossD), LossG: float64(s.LossG)}
	for _, d := range ds {
		r.MS = append(r.MS, float64(d.Microseconds())/1e3)
	}
	if r.PeakRSSBytes, err = bench.PeakRSS(); err != nil {
		return err
	}
	return json.NewEncoder(w).Encode(r)
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
	fmt.Fprintf(w, "machine: %s\n", bench.Machine())
	_, says := bench.OpenBLASCoretype(f.coretype)
	fmt.Fprintf(w, "%s\n", says)
	fmt.Fprintf(w, "step: mobile ResNet G (ngf %d, %d blocks) + PatchGAN D (ndf %d, 3 layers), LSGAN + 10·L1, Adam; %d threads each; %d timed steps after %d warm-up per process, %d processes per side run alternately; medians over all their timed steps\n\n",
		f.ngf, f.blocks, f.ndf, f.threads, f.steps, f.warmup, max(1, f.repeats))
	fmt.Fprintf(w, "| config | crdgo ms/step | PyTorch ms/step | ratio crdgo/PyTorch | crdgo peak RSS | PyTorch peak RSS |\n")
	fmt.Fprintf(w, "|---|---|---|---|---|---|\n")
	env := bench.ThreadEnv(f.threads)
	coretype, _ := bench.OpenBLASCoretype(f.coretype)
	if coretype != "" {
		env = append(env, "OPENBLAS_CORETYPE="+coretype)
	}
	for _, c := range cfgs {
		common := []string{"--ngf", strconv.Itoa(f.ngf), "--ndf", strconv.Itoa(f.ndf), "--blocks", strconv.Itoa(f.blocks),
			"--steps", strconv.Itoa(f.steps), "--warmup", strconv.Itoa(f.warmup), "--threads", strconv.Itoa(f.threads),
			"--size", strconv.Itoa(c[0]), "--batch", strconv.Itoa(c[1])}
		sides := []bench.Side{{Name: "crdgo", Env: env,
			Cmd: append([]string{self, "bench", "engine", "--worker", "--backend", f.backend}, common...)}}
		if !f.noTorch {
			sides = append(sides, bench.Side{Name: "pytorch", Env: env, Cmd: append([]string{f.python, script}, common...)})
		}
		res, err := bench.Alternate(ctx, sides, f.repeats, 30*time.Minute)
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

func mib(b int64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }
