package main

import (
	"encoding/json"
	"fmt"
	"io"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/crdgo/crdgo/bench"
	"github.com/crdgo/crdgo/crd/tensor"
)

// sideBySide holds the flags of the benchmarks that time crdgo beside PyTorch:
// which configurations, how many steps and processes, which threads and
// kernels, and the hidden flags of the worker process that times one side.
type sideBySide struct {
	configs                string
	steps, warmup, repeats int
	threads                int
	coretype, backend      string
	python                 string
	worker                 bool
	size, batch            int
}

func (s *sideBySide) register(fl *pflag.FlagSet, steps, warmup, repeats int) {
	fl.StringVar(&s.configs, "configs", "64x1,64x4,128x1", "comma-separated SIZExBATCH configurations")
	fl.IntVar(&s.steps, "steps", steps, "timed steps per process (medians are over all timed steps)")
	fl.IntVar(&s.warmup, "warmup", warmup, "untimed steps per process before timing")
	fl.IntVar(&s.repeats, "repeats", repeats, "fresh processes per side and configuration, run alternately; their timed steps are pooled")
	fl.IntVar(&s.threads, "threads", 2, "threads for each side (GOMAXPROCS and backend workers; torch.set_num_threads)")
	fl.StringVar(&s.coretype, "openblas-coretype", "auto", "OPENBLAS_CORETYPE for both sides: auto (SkylakeX on AVX-512 CPUs: Debian's OpenBLAS 0.3.21 picks AVX2 kernels on AMD Zen 4), keep (the environment's), or a name")
	fl.StringVar(&s.backend, "backend", string(tensor.DefaultCPUKind()), fmt.Sprintf("crdgo CPU backend: one of %v", tensor.CPUKinds()))
	fl.StringVar(&s.python, "python", "/usr/bin/python3", "Python with PyTorch (Debian python3-torch)")
	fl.BoolVar(&s.worker, "worker", false, "internal: time one configuration in this process and print JSON")
	fl.IntVar(&s.size, "size", 64, "internal (--worker): image size")
	fl.IntVar(&s.batch, "batch", 1, "internal (--worker): batch size")
	for _, h := range []string{"worker", "size", "batch"} {
		_ = fl.MarkHidden(h)
	}
}

// validate reports every bad shared flag.
func (s *sideBySide) validate() []string {
	var errs []string
	if s.steps < 1 || s.warmup < 0 || s.repeats < 1 {
		errs = append(errs, fmt.Sprintf("--steps %d --warmup %d --repeats %d: want steps ≥ 1, warmup ≥ 0, repeats ≥ 1", s.steps, s.warmup, s.repeats))
	}
	if s.threads < 1 {
		errs = append(errs, fmt.Sprintf("--threads %d: want ≥ 1", s.threads))
	}
	if _, ok := s.kind(); !ok {
		errs = append(errs, fmt.Sprintf("--backend %q: want one of %v", s.backend, tensor.CPUKinds()))
	}
	return errs
}

func (s *sideBySide) kind() (tensor.CPUKind, bool) {
	for _, k := range tensor.CPUKinds() {
		if string(k) == s.backend {
			return k, true
		}
	}
	return "", false
}

// common is the arguments both sides' processes take for one configuration.
func (s *sideBySide) common(c bench.Config, extra ...string) []string {
	return append([]string{"--steps", strconv.Itoa(s.steps), "--warmup", strconv.Itoa(s.warmup),
		"--threads", strconv.Itoa(s.threads), "--size", strconv.Itoa(c.Size), "--batch", strconv.Itoa(c.Batch)}, extra...)
}

// env pins both sides to the same threads and OpenBLAS kernels.
func (s *sideBySide) env() []string {
	env := bench.ThreadEnv(s.threads)
	if coretype, _ := bench.OpenBLASCoretype(s.coretype); coretype != "" {
		env = append(env, "OPENBLAS_CORETYPE="+coretype)
	}
	return env
}

// header prints the machine, the kernels and the method above a table.
func (s *sideBySide) header(w io.Writer, what string) {
	_, says := bench.OpenBLASCoretype(s.coretype)
	fmt.Fprintf(w, "machine: %s\n%s\n", bench.Machine(), says)
	fmt.Fprintf(w, "step: %s; %d threads each; %d timed steps after %d warm-up per process, %d processes per side run alternately; medians over all their timed steps\n\n",
		what, s.threads, s.steps, s.warmup, s.repeats)
}

// workerBackend is the backend of a worker process, GOMAXPROCS set.
func (s *sideBySide) workerBackend() (tensor.Backend, error) {
	if errs := s.validate(); len(errs) > 0 {
		return nil, fmt.Errorf("bench worker: %s", strings.Join(errs, "; "))
	}
	runtime.GOMAXPROCS(s.threads)
	k, _ := s.kind()
	return tensor.NewCPU(k, s.threads), nil
}

// timeWorker times step in a worker and prints its Result as JSON.
func (s *sideBySide) timeWorker(w io.Writer, be tensor.Backend, step func() error, fill func(*bench.Result)) error {
	var stepErr error
	ds := bench.TimeSteps(func() {
		if err := step(); err != nil && stepErr == nil {
			stepErr = err
		}
	}, s.warmup, s.steps)
	if stepErr != nil {
		return stepErr
	}
	r := bench.Result{Impl: "crdgo " + be.Name(), Threads: s.threads}
	for _, d := range ds {
		r.MS = append(r.MS, float64(d.Microseconds())/1e3)
	}
	if fill != nil {
		fill(&r)
	}
	var err error
	if r.PeakRSSBytes, err = bench.PeakRSS(); err != nil {
		return err
	}
	return json.NewEncoder(w).Encode(r)
}

// benchTimeout bounds one side's process.
const benchTimeout = 60 * time.Minute
