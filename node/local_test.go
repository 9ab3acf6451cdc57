package node

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/crdgo/crdgo/allreduce"
	"github.com/crdgo/crdgo/crd/data"
	"github.com/crdgo/crdgo/crd/model"
	"github.com/crdgo/crdgo/crd/nn"
	"github.com/crdgo/crdgo/crd/tensor"
	"github.com/crdgo/crdgo/crd/train"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func testLogger(t testing.TB) *zap.Logger {
	return zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
}

// equivRecipe is a built-in demo recipe at 32×32 with narrower networks of
// the same architectures, a small synthetic dataset (46 examples: 11 full
// batches and one of 2) and a global batch of 4. CycleGAN runs get a round
// after every teacher epoch and a pool of 8, so 20 steps reach both the
// pool's random replacements and a student round.
func equivRecipe(t *testing.T, name string) train.Recipe {
	t.Helper()
	r, err := train.LoadRecipe(name)
	if err != nil {
		t.Fatal(err)
	}
	r.Data.CropSize, r.Data.LoadSize = 32, 36
	r.Data.Synth.Size, r.Data.Synth.N, r.Data.Synth.NTest = 32, 46, 4
	r.Teacher.NGF, r.Student.NGF, r.Discriminator.NDF = 8, 4, 16
	if r.Teacher.Arch == "unet_256" {
		r.Teacher.Downs, r.Student.Downs = 5, 5
	} else {
		r.Teacher.Blocks, r.Student.Blocks = 3, 3
	}
	r.Loss.Patch = 8
	r.Schedule.Batch = 4
	if r.Mode == train.CycleGAN {
		r.Schedule.Epochs, r.Schedule.DecayEpochs, r.Schedule.SaveEpochFreq, r.Schedule.NDis = 2, 2, 1, 1
		r.Loss.PoolSize = 8
	}
	if err := r.Validate(); err != nil {
		t.Fatal(err)
	}
	return r
}

// equivBackend is the engine of the equivalence tests: the pure-Go backend,
// whose convolutions give every sample the same bits whatever else is in its
// batch (OpenBLAS's kernels differ by an ulp with the batch's size, and an
// ulp at a ReLU's kink changes a gradient by far more than rounding; see
// TestDataParallelOnOpenBLAS).
const equivBackend = tensor.PureGo

// trace is what a run leaves for the comparison: per step, every rank's
// checksum, and how far rank 0's summed gradients and batch-norm statistics
// are from what one process computes from the same state on the same global
// batch; at the end, rank 0's parameters, by network.
type trace struct {
	mu        sync.Mutex
	checksums map[int][]uint64 // step → by rank
	parts     map[int][]*data.Batch
	before    *train.Snapshot // rank 0's state before the step in progress
	gradErr   map[int]map[string]float64
	bufErr    map[int]map[string]float64
	params    map[string][]float32
	steps     int
	shadowErr error
}

func networks(tr *train.Trainer) map[string]model.Network {
	n := tr.Nets
	all := map[string]model.Network{"teacher_G": n.GT, "teacher_G_B": n.GTB, "teacher_D": n.D, "teacher_D_B": n.DB, "student_G": n.S, "teacher_G_best": n.GTBest}
	for k, v := range all {
		if v == nil {
			delete(all, k)
		}
	}
	return all
}

func clone(x []float32) []float32 { return append([]float32(nil), x...) }

// concat is the global batch: the ranks' parts in rank order.
func concat(parts []*data.Batch) *data.Batch {
	g := &data.Batch{C: parts[0].C, H: parts[0].H, W: parts[0].W}
	for _, p := range parts {
		g.N += p.N
		g.A = append(g.A, p.A...)
		g.B = append(g.B, p.B...)
	}
	return g
}

func cloneBatch(b *data.Batch) *data.Batch {
	c := *b
	c.A, c.B = clone(b.A), clone(b.B)
	return &c
}

// runTrace trains steps steps of r on nodes workers over transport and
// records its trace. Before every step it snapshots rank 0; after it, a
// one-process shadow trainer restores that snapshot, steps on the global batch
// (the ranks' parts, concatenated) and is compared with rank 0. wrap, when
// set, replaces the workers' GradSyncs (fault injection).
func runTrace(t *testing.T, r train.Recipe, root string, backend tensor.CPUKind, nodes int, transport string, steps int, wrap func(int, train.GradSync) train.GradSync) (*trace, error) {
	t.Helper()
	tc := &trace{checksums: map[int][]uint64{}, parts: map[int][]*data.Batch{}, gradErr: map[int]map[string]float64{}, bufErr: map[int]map[string]float64{}}
	tcfg := train.Config{Recipe: r, DataRoot: root, OutDir: t.TempDir(), MaxSteps: steps, LogEvery: 1000, SampleEvery: 1000, CheckpointEvery: 1000, Workers: 1}
	shadow, err := train.New(tcfg, tensor.NewCPU(backend, 1), train.Extras{}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	cfg := LocalConfig{
		Train:     tcfg,
		Nodes:     nodes,
		Transport: transport,
		Lanes:     2,
		Threads:   nodes, // one thread per worker: results do not depend on it, and 4 workers fit 2 cores
		Backend:   backend,
		WrapSync:  wrap,
		// A step under the race detector, 4 workers on 2 cores, can take
		// longer than the default 5 s ring timeout; no test here waits on it.
		Allreduce: allreduce.Config{RingTimeout: time.Minute, ChunkBytes: allreduce.DefaultConfig().ChunkBytes},
		BeforeStep: func(rank int, w *Worker, b *data.Batch) error {
			step := w.Trainer.State().Step + 1
			var snap *train.Snapshot
			if rank == 0 {
				snap = w.Trainer.Snapshot()
			}
			tc.mu.Lock()
			defer tc.mu.Unlock()
			if tc.parts[step] == nil {
				tc.parts[step] = make([]*data.Batch, nodes)
			}
			tc.parts[step][rank] = cloneBatch(b)
			if rank == 0 {
				tc.before = snap
			}
			return nil
		},
		OnStep: func(rank int, w *Worker, info train.StepInfo) error {
			sum := w.Trainer.Checksum()
			step := info.State.Step
			tc.mu.Lock()
			defer tc.mu.Unlock()
			if tc.checksums[step] == nil {
				tc.checksums[step] = make([]uint64, nodes)
			}
			tc.checksums[step][rank] = sum
			if rank != 0 {
				return nil
			}
			// Every rank has passed BeforeStep(step): they all took part in
			// this step's collective operations.
			if err := shadow.Restore(tc.before); err != nil {
				return err
			}
			if _, err := shadow.Step(context.Background(), concat(tc.parts[step]), nil); err != nil {
				tc.shadowErr = fmt.Errorf("step %d: the one-process shadow: %w", step, err)
				return tc.shadowErr
			}
			delete(tc.parts, step)
			mine, theirs := networks(w.Trainer), networks(shadow)
			tc.gradErr[step], tc.bufErr[step] = map[string]float64{}, map[string]float64{}
			for name, net := range mine {
				tc.gradErr[step][name] = relL2(net.Params().Grads().Data, theirs[name].Params().Grads().Data)
				if b := net.Params().Buffers(); b != nil {
					tc.bufErr[step][name] = relL2(b.Data, theirs[name].Params().Buffers().Data)
				}
			}
			tc.steps = step
			if step == steps {
				tc.params = map[string][]float32{}
				for name, net := range mine {
					for _, p := range net.Params().Params() {
						if !p.Buffer {
							tc.params[name+"/"+p.Name] = clone(p.Var.Value.Data)
						}
					}
				}
			}
			return nil
		},
	}
	_, err = RunLocal(context.Background(), cfg, testLogger(t))
	return tc, err
}

// Tolerances, derived from float32 rounding in a different reduction order:
//
//   - Gradients, from the same state on the same global batch: a rank's share
//     and the ring's sum add the same terms as one process in another order
//     (per-sample GEMMs, b_r/B weights, then w partial sums): relative errors
//     of a few 2⁻²⁴ ≈ 6e-8 per addition, amplified by a handful of
//     normalisations. Measured: below 5e-6 (every recipe, every step, N = 2
//     and 4); the bound is 5e-5.
//   - Batch-norm running statistics, from the same state: every rank
//     combines the same exact float64 partial sums and rounds where one
//     process rounds, so they are equal unless a float64 sum taken in
//     another order straddles a float32 rounding boundary: 1e-6 relative
//     (measured: 0, exactly).
//   - Parameters after 20 steps of free-running training are not within any
//     rounding tolerance of each other, and cannot be: a GAN's gradient is a
//     discontinuous function of its parameters (ReLUs, the hinge), and Adam
//     divides by √v, so an element whose gradient is rounding noise (a bias
//     in front of instance norm) moves by ±lr in a direction the rounding
//     decides. Measured after 20 steps: 1–3 % relative L2, |Δθ| ≤ 17·lr.
//     What can be derived is Adam's own bound (nn.AdamBound).
const (
	gradTol   = 5e-5
	bufferTol = 1e-6
)

func adamBound(lr, beta1, beta2 float64, steps int) float64 {
	return nn.AdamBound(lr, beta1, beta2, steps)
}

// compare checks a run against the tolerances and the one-process run one,
// and returns the first disagreement.
func compare(r train.Recipe, steps int, one, got *trace) error {
	if got.shadowErr != nil {
		return got.shadowErr
	}
	if got.steps != steps {
		return fmt.Errorf("rank 0 ended at step %d; want %d", got.steps, steps)
	}
	for step := 1; step <= steps; step++ {
		sums := got.checksums[step]
		for rank, s := range sums {
			if s != sums[0] {
				return fmt.Errorf("step %d: rank %d's state checksum %016x differs from rank 0's %016x: replicas must stay bit-identical", step, rank, s, sums[0])
			}
		}
		for _, name := range sortedKeys(got.gradErr[step]) {
			if d := got.gradErr[step][name]; d > gradTol {
				return fmt.Errorf("step %d: %s: the summed gradient differs from one process's on the same state and global batch by %.2g (relative L2); tolerance %.0e", step, name, d, gradTol)
			}
		}
		for _, name := range sortedKeys(got.bufErr[step]) {
			if d := got.bufErr[step][name]; d > bufferTol {
				return fmt.Errorf("step %d: %s: batch-norm running statistics differ from one process's by %.2g (relative L2); tolerance %.0e", step, name, d, bufferTol)
			}
		}
	}
	s := r.Schedule
	bound := adamBound(s.LR, s.Beta1, s.Beta2, steps)
	for _, name := range sortedKeys(one.params) {
		p, q := one.params[name], got.params[name]
		for i := range p {
			if d := math.Abs(float64(q[i]) - float64(p[i])); d > bound {
				return fmt.Errorf("after %d steps: %s: parameter %d = %g; one process %g: |Δ| %.2g > Adam's bound %.2g", steps, name, i, q[i], p[i], d, bound)
			}
		}
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// relL2 is |a − b| / |b| in float64 (|a − b| when b is 0).
func relL2(a, b []float32) float64 {
	if len(a) != len(b) {
		return math.Inf(1)
	}
	var d, n float64
	for i := range b {
		e := float64(a[i]) - float64(b[i])
		d += e * e
		n += float64(b[i]) * float64(b[i])
	}
	if n == 0 {
		return math.Sqrt(d)
	}
	return math.Sqrt(d / n)
}

// worst is the largest error of a kind over a run, for the log.
func worst(m map[int]map[string]float64) float64 {
	var w float64
	for _, byNet := range m {
		for _, v := range byNet {
			w = math.Max(w, v)
		}
	}
	return w
}

// maxDiff is the largest |a_i − b_i| over the tensors whose name does not
// end in skip ("": all).
func maxDiff(a, b map[string][]float32, skip string) float64 {
	var w float64
	for name, p := range a {
		if skip != "" && strings.HasSuffix(name, skip) {
			continue
		}
		for i, v := range p {
			w = math.Max(w, math.Abs(float64(b[name][i])-float64(v)))
		}
	}
	return w
}

// TestDataParallelEqualsOneProcess is the data-parallel contract: for the
// pix2pix demo, the CycleGAN demo (image pool, a student round with the
// frozen online discriminator) and the U-Net demo (synchronised batch norm),
// with the same seed and a global batch of 4, N ∈ {1, 2, 4} workers over
// shared memory and over NATS: all ranks hold bit-identical state after every
// step; at every step the summed gradients and the running statistics are
// what one process computes from the same state on the same global batch; and
// after 20 steps the parameters are within Adam's bound of the one-process
// run. The dataset of 46 examples ends its first epoch with a batch of 2, so
// with 4 workers two ranks run placeholders at step 12.
func TestDataParallelEqualsOneProcess(t *testing.T) {
	steps, recipes, transports, sizes := 20, []string{"demo", "demo-cyclegan", "demo-unet"}, []string{"mem", "nats"}, []int{2, 4}
	if testing.Short() { // the race detector's run: every path once, briefly
		steps, recipes, transports, sizes = 3, []string{"demo-cyclegan", "demo-unet"}, []string{"nats"}, []int{3}
	}
	for _, name := range recipes {
		t.Run(name, func(t *testing.T) {
			r := equivRecipe(t, name)
			root := t.TempDir()
			if _, err := train.PrepareData(context.Background(), root, r, nil, testLogger(t)); err != nil {
				t.Fatal(err)
			}
			one, err := runTrace(t, r, root, equivBackend, 1, "", steps, nil)
			if err != nil {
				t.Fatal(err)
			}
			// The harness itself: one process against its own shadow is exact.
			if g, b := worst(one.gradErr), worst(one.bufErr); g != 0 || b != 0 {
				t.Fatalf("one process against its shadow: gradients differ by %g, running statistics by %g; want 0 (the harness is broken)", g, b)
			}
			for _, transport := range transports {
				for _, nodes := range sizes {
					t.Run(fmt.Sprintf("%s/%d", transport, nodes), func(t *testing.T) {
						got, err := runTrace(t, r, root, equivBackend, nodes, transport, steps, nil)
						if err != nil {
							t.Fatal(err)
						}
						if err := compare(r, steps, one, got); err != nil {
							t.Errorf("%s, %d workers over %s: %v", name, nodes, transport, err)
						}
						t.Logf("%s, %d workers over %s: worst gradient error %.2g, running statistics %.2g (same state); after %d steps max |Δθ| %.2g (Adam's bound %.2g), of weights %.2g",
							name, nodes, transport, worst(got.gradErr), worst(got.bufErr), steps, maxDiff(one.params, got.params, ""), adamBound(r.Schedule.LR, r.Schedule.Beta1, r.Schedule.Beta2, steps), maxDiff(one.params, got.params, ".bias"))
					})
				}
			}
		})
	}
}

// perturbed wraps a GradSync and changes one rank's buffer of one phase at
// one step, before the sum (a wrong share) or after it (a replica that
// diverges).
type perturbed struct {
	train.GradSync
	step  uint64
	phase string
	after bool
}

func (p *perturbed) SumInPlace(ctx context.Context, step uint64, phase string, buf []float32) error {
	hit := step == p.step && phase == p.phase
	if hit && !p.after {
		for i := range buf {
			buf[i] *= 1.001
		}
	}
	err := p.GradSync.SumInPlace(ctx, step, phase, buf)
	if hit && p.after {
		// Larger than an ulp: Adam can round a one-ulp change of one gradient
		// away (it did, with the demo's output_l1 at 50).
		x := &buf[len(buf)/2]
		*x += 1e-3 * (1 + float32(math.Abs(float64(*x))))
	}
	return err
}

// TestEquivalenceCatchesAPerturbedRank: the comparison above is not vacuous.
// One rank's gradient share off by 0.1 % at step 5 fails the same-state
// gradient check at step 5; one value of one rank's summed gradient, moved by
// 1e-3·(1+|x|), fails the replicas' checksums at step 5 (step 2 with -short).
func TestEquivalenceCatchesAPerturbedRank(t *testing.T) {
	steps, at := 6, 5
	if testing.Short() {
		steps, at = 3, 2
	}
	r := equivRecipe(t, "demo")
	root := t.TempDir()
	if _, err := train.PrepareData(context.Background(), root, r, nil, testLogger(t)); err != nil {
		t.Fatal(err)
	}
	one, err := runTrace(t, r, root, equivBackend, 1, "", steps, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		after bool
		want  string
	}{
		{false, fmt.Sprintf("step %d: student_G: the summed gradient differs", at)},
		{true, fmt.Sprintf("step %d: rank 1's state checksum", at)},
	} {
		got, err := runTrace(t, r, root, equivBackend, 2, "mem", steps, func(rank int, s train.GradSync) train.GradSync {
			if rank == 1 {
				return &perturbed{GradSync: s, step: uint64(at), phase: "G_S", after: tc.after}
			}
			return s
		})
		if err != nil {
			t.Fatal(err)
		}
		err = compare(r, steps, one, got)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("perturbed rank 1 (after the sum: %v): compare = %v; want an error containing %q", tc.after, err, tc.want)
		}
	}
}

// TestDataParallelOnOpenBLAS runs the pix2pix demo on 2 workers with the
// default (OpenBLAS) engine. Its convolutions give a sample results that
// differ by an ulp with the size of its batch, which can flip a ReLU: the
// same-state gradients then differ by up to ~1e-2 (measured 4e-4 to 6e-3 at
// 64×64), so only the replicas' bit identity and Adam's bound are checked.
func TestDataParallelOnOpenBLAS(t *testing.T) {
	steps := 10
	if testing.Short() {
		steps = 3
	}
	r := equivRecipe(t, "demo")
	root := t.TempDir()
	if _, err := train.PrepareData(context.Background(), root, r, nil, testLogger(t)); err != nil {
		t.Fatal(err)
	}
	kind := tensor.DefaultCPUKind()
	one, err := runTrace(t, r, root, kind, 1, "", steps, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := runTrace(t, r, root, kind, 2, "nats", steps, nil)
	if err != nil {
		t.Fatal(err)
	}
	for step := 1; step <= steps; step++ {
		if s := got.checksums[step]; s[0] != s[1] {
			t.Fatalf("%s: step %d: replica checksums %016x and %016x differ", kind, step, s[0], s[1])
		}
	}
	s := r.Schedule
	bound := adamBound(s.LR, s.Beta1, s.Beta2, steps)
	if d := maxDiff(one.params, got.params, ""); d > bound {
		t.Errorf("%s: after %d steps max |Δθ| %.2g > Adam's bound %.2g", kind, steps, d, bound)
	}
	t.Logf("%s: worst same-state gradient error %.2g; after %d steps max |Δθ| %.2g (bound %.2g)", kind, worst(got.gradErr), steps, maxDiff(one.params, got.params, ""), bound)
}
