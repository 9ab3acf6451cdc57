package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/crdgo/crdgo/bench"
	"github.com/crdgo/crdgo/crd/tensor"
	"github.com/crdgo/crdgo/crd/train"
	"github.com/crdgo/crdgo/node"
)

type benchDPFlags struct {
	recipe, dataRoot       string
	transports             string
	steps, warmup, repeats int
	backend, coretype      string
	// worker mode
	worker    bool
	nodes     int
	transport string
}

func newBenchDataParallelCmd(g *globalFlags) *cobra.Command {
	f := &benchDPFlags{}
	cmd := &cobra.Command{
		Use:   "dataparallel",
		Short: "Samples/s of a demo step on 1 and 2 workers (one thread each), split into compute, allreduce and waiting",
		Long: `Times the training step of a recipe (default: demo-ngf4, the demo with its
narrow ngf 16 → 4 pair, which README's table measured) in one process with one
compute thread, and on 2 data-parallel workers in one process with one
thread each, over each --transports; every configuration runs in fresh
processes, alternately, --repeats times. Prints samples/s, the median step
split into compute, allreduce (moving data once every rank has arrived),
waiting (for the last rank to arrive) and data loading, and the scaling
efficiency: samples/s on 2 workers over twice that on 1.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.newLogger()
			if err != nil {
				return err
			}
			defer log.Sync()
			if f.worker {
				return runDPWorker(cmd.Context(), cmd.OutOrStdout(), f, log)
			}
			return runBenchDP(cmd.Context(), cmd.OutOrStdout(), f, log)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.recipe, "recipe", "demo-ngf4", "recipe whose step is timed (its dataset is generated if it is synthetic and missing)")
	fl.StringVar(&f.dataRoot, "data-root", "data", "folder holding the datasets")
	fl.StringVar(&f.transports, "transports", "nats,mem,tcp", "comma-separated transports for the 2-worker runs: "+strings.Join(node.Transports(), ", "))
	fl.IntVar(&f.steps, "steps", 30, "timed steps per process")
	fl.IntVar(&f.warmup, "warmup", 5, "untimed steps per process before timing")
	fl.IntVar(&f.repeats, "repeats", 3, "fresh processes per configuration, run alternately; their timed steps are pooled")
	fl.StringVar(&f.backend, "backend", string(tensor.DefaultCPUKind()), fmt.Sprintf("CPU backend: one of %v", tensor.CPUKinds()))
	fl.StringVar(&f.coretype, "openblas-coretype", "auto", "OPENBLAS_CORETYPE: auto (SkylakeX on AVX-512 CPUs), keep, or a name")
	fl.BoolVar(&f.worker, "worker", false, "internal: time one configuration in this process and print JSON")
	fl.IntVar(&f.nodes, "nodes", 1, "internal (--worker): workers")
	fl.StringVar(&f.transport, "transport", "nats", "internal (--worker): transport")
	for _, h := range []string{"worker", "nodes", "transport"} {
		_ = fl.MarkHidden(h)
	}
	return cmd
}

func (f *benchDPFlags) kind() (tensor.CPUKind, error) {
	for _, k := range tensor.CPUKinds() {
		if string(k) == f.backend {
			return k, nil
		}
	}
	return "", fmt.Errorf("--backend %q: want one of %v", f.backend, tensor.CPUKinds())
}

func runDPWorker(ctx context.Context, w io.Writer, f *benchDPFlags, log *zap.Logger) error {
	kind, err := f.kind()
	if err != nil {
		return err
	}
	rec, err := train.LoadRecipe(f.recipe)
	if err != nil {
		return err
	}
	runtime.GOMAXPROCS(f.nodes)
	res, err := bench.RunDataParallel(ctx, bench.DataParallelConfig{Recipe: rec, DataRoot: f.dataRoot, Nodes: f.nodes, Transport: f.transport,
		Backend: kind, Steps: f.steps, Warmup: f.warmup, ThreadsPerNode: 1}, log)
	if err != nil {
		return err
	}
	return json.NewEncoder(w).Encode(res)
}

func runBenchDP(ctx context.Context, w io.Writer, f *benchDPFlags, log *zap.Logger) error {
	if _, err := f.kind(); err != nil {
		return err
	}
	if f.steps < 1 || f.warmup < 0 || f.repeats < 1 {
		return fmt.Errorf("--steps %d --warmup %d --repeats %d: want steps ≥ 1, warmup ≥ 0, repeats ≥ 1", f.steps, f.warmup, f.repeats)
	}
	var transports []string
	for _, t := range strings.Split(f.transports, ",") {
		t = strings.TrimSpace(t)
		if !slices.Contains(node.Transports(), t) {
			return fmt.Errorf("--transports: %q: want a comma-separated list of %s", t, strings.Join(node.Transports(), ", "))
		}
		transports = append(transports, t)
	}
	rec, err := train.LoadRecipe(f.recipe)
	if err != nil {
		return err
	}
	if _, err := train.PrepareData(ctx, f.dataRoot, rec, os.Stderr, log); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	return bench.DataParallelTable{
		Recipe: rec, DataRoot: f.dataRoot, Transports: transports, Backend: f.backend, Coretype: f.coretype,
		Steps: f.steps, Warmup: f.warmup, Repeats: f.repeats,
		Worker: func(ctx context.Context, nodes int, transport string) *exec.Cmd {
			return exec.CommandContext(ctx, self, "bench", "dataparallel", "--worker", "--log-level", "error", "--recipe", f.recipe, "--data-root", f.dataRoot,
				"--nodes", strconv.Itoa(nodes), "--transport", transport, "--steps", strconv.Itoa(f.steps), "--warmup", strconv.Itoa(f.warmup),
				"--backend", f.backend)
		},
	}.Run(ctx, w)
}
