package tensortest

import (
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"runtime/debug"
	"testing"

	"github.com/crdgo/crdgo/crd/tensor"
)

// u32 is float32's unit roundoff, 2⁻²⁴: one rounding changes a value by at
// most this fraction of itself.
const u32 = 0x1p-24

// sumTol is the tolerance, relative to the result's max-norm, for results
// that are float32 sums of k terms (a dot product of length k, a window
// average, one gradient element of a backward pass). Each addition rounds
// once; for terms of random sign the rounding errors add up like a random
// walk, u·√k times the size of the partial sums (Higham, Accuracy and
// Stability, §4.2), and those are about the size of the result. The CPU
// backends' largest error is 0.7·u·(1+√k) (conv and GEMM forward, measured
// over this suite and several seeds), so 8·u·(1+√k) leaves a margin of 11
// for other summation orders and is still far below what one wrong term in a
// thousand does.
func sumTol(k int) float64 { return 8 * u32 * (1 + math.Sqrt(float64(k))) }

// operand is one input of a kernel case.
type operand struct {
	name  string
	shape []int
	gen   func(r *rand.Rand, n int) []float64 // nil: uniform in [−1, 1)
	grad  bool                                // the backward kernel computes its gradient
}

// kcase is one kernel (or a fixed composition of kernels) at one set of shapes
// and parameters: a float64 reference, the backend call, and optionally the
// backward call. The harness owns every check; a case only says what to run.
type kcase struct {
	name string
	in   []operand
	out  []int // the output's shape

	// ref is the float64 definition of the output (the Ref* functions).
	ref func(in []Array) Array
	// run computes the output into y (prefilled with NaN: forward kernels must
	// overwrite it) and returns what back needs besides the inputs (statistics).
	run func(be tensor.Backend, y *tensor.Tensor, in []*tensor.Tensor) (aux []*tensor.Tensor)
	// auxRef, when set, gives the references for run's aux results, compared
	// with auxTol relative to each one's max-norm.
	auxRef func(in []Array) []Array
	auxTol float64

	// back adds ∂⟨dy, y⟩/∂in[k] into grads[k] for every operand with grad set;
	// grads[k] is nil for the others and, in the nil-gradient checks, for the
	// gradients not wanted. nil when the kernel has no backward.
	back func(be tensor.Backend, grads []*tensor.Tensor, dy *tensor.Tensor, in []*tensor.Tensor, y *tensor.Tensor, aux []*tensor.Tensor)
	// multiGrad: back takes several gradient arguments and each may be nil
	// (Conv2DBackward's dx, dw, db): the interface says nil skips that work.
	multiGrad bool

	tol     float64 // forward tolerance relative to the output's max-norm
	gradTol float64 // gradient tolerance relative to the largest gradient element compared
	// valid rejects inputs too close to a kink of the function (ReLU after a
	// norm at 0), where finite differences are meaningless; the harness then
	// draws again from the next seed. nil accepts everything.
	valid func(in []Array) bool
	// zeroGrad: the gradient is legitimately zero everywhere (a norm over one
	// element); otherwise an all-zero finite difference means a vacuous check.
	zeroGrad bool
}

// group is the cases of one kernel, run as one subtest.
type group struct {
	name  string
	cases []kcase
}

// caseSeed is the seed of a case's first draw: a hash of its key (kernel and
// case name), so a case keeps its inputs when others are added and gets the
// same inputs on every backend.
func caseSeed(name string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(name))
	return h.Sum64()
}

// inputs draws the case's operands (rounded to float32), retrying with the
// next seed until c.valid accepts them. It returns the seed used.
func (c *kcase) inputs(name string) ([]Array, uint64) {
	seed := caseSeed(name)
	for try := 0; try < 100; try++ {
		r := rand.New(rand.NewPCG(seed, 0))
		ins := make([]Array, len(c.in))
		for k, op := range c.in {
			gen := op.gen
			if gen == nil {
				gen = genUniform(-1, 1)
			}
			ins[k] = Array{Shape: append([]int(nil), op.shape...), Data: gen(r, numel(op.shape))}
		}
		if c.valid == nil || c.valid(ins) {
			return ins, seed
		}
		seed++
	}
	panic(fmt.Sprintf("tensortest: %s: no valid inputs in 100 seeds from %d", name, caseSeed(name)))
}

// guard is the number of elements kept before and after every tensor the
// suite allocates (a multiple of 64 floats keeps device alignment), filled with
// guardValue: a kernel that writes outside its tensor changes them, one that
// reads outside gets enormous values.
const guard = 64

var guardBits = math.Float32bits(1e30)

// arena allocates guarded tensors on one backend and checks their guards.
type arena struct {
	be   tensor.Backend
	bufs []guarded
}

type guarded struct {
	name string
	buf  *tensor.Tensor
	n    int
}

// alloc returns a zeroed tensor that is a view into a larger guarded buffer.
func (a *arena) alloc(name string, shape []int) *tensor.Tensor {
	n := numel(shape)
	buf := a.be.New(tensor.Shape{n + 2*guard})
	a.be.Fill(buf, math.Float32frombits(guardBits))
	t := a.be.View(buf, guard, tensor.Shape(shape))
	a.be.Fill(t, 0)
	a.bufs = append(a.bufs, guarded{name, buf, n})
	return t
}

// upload allocates a guarded tensor holding data.
func (a *arena) upload(name string, x Array) *tensor.Tensor {
	t := a.alloc(name, x.Shape)
	a.be.Upload(t, x.Float32())
	return t
}

// checkGuards reports every buffer whose guard region changed.
func (a *arena) checkGuards(t *testing.T, when string) {
	t.Helper()
	for _, g := range a.bufs {
		host := make([]float32, g.n+2*guard)
		a.be.Download(host, g.buf)
		for i, v := range host {
			if (i < guard || i >= guard+g.n) && math.Float32bits(v) != guardBits {
				t.Errorf("%s: element %d outside %s (%d elements) was written: %g", when, i-guard, g.name, g.n, v)
				break
			}
		}
	}
}

func download(be tensor.Backend, t *tensor.Tensor) []float32 {
	h := make([]float32, t.Numel())
	be.Download(h, t)
	return h
}

func widen(v []float32) []float64 {
	out := make([]float64, len(v))
	for i, e := range v {
		out[i] = float64(e)
	}
	return out
}

func maxAbs(v []float64) float64 {
	var m float64
	for _, e := range v {
		m = math.Max(m, math.Abs(e))
	}
	return m
}

// compare reports the first element of got that differs from want by more than
// tol·max(‖want‖∞, tiny), and the largest relative error seen.
func compare(got []float32, want []float64, tol float64) (bad int, worst float64) {
	scale := math.Max(maxAbs(want), 1e-30)
	bad = -1
	for i, w := range want {
		g := float64(got[i])
		e := math.Abs(g-w) / scale
		if math.IsNaN(g) || math.IsNaN(e) {
			e = math.Inf(1)
		}
		if e > worst {
			worst = e
		}
		if e > tol && bad < 0 {
			bad = i
		}
	}
	return bad, worst
}

func sameBits(a, b []float32) int {
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return i
		}
	}
	return -1
}

// fdSamples picks the elements whose gradient is checked: all of a small
// tensor, else the first, the last, the four largest of the backend's
// gradient g (so that a sparse gradient, max pooling's, is checked where it
// is not zero) and a seeded sample of the rest (where it may wrongly be zero).
func fdSamples(r *rand.Rand, g []float32, short bool) []int {
	n := len(g)
	all, sample := 160, 40
	if short {
		all, sample = 64, 16
	}
	if n <= all {
		idx := make([]int, n)
		for i := range idx {
			idx[i] = i
		}
		return idx
	}
	idx := []int{0, n - 1}
	seen := map[int]bool{0: true, n - 1: true}
	for range 4 {
		best := -1
		for i, v := range g {
			if !seen[i] && (best < 0 || math.Abs(float64(v)) > math.Abs(float64(g[best]))) {
				best = i
			}
		}
		seen[best] = true
		idx = append(idx, best)
	}
	for len(idx) < sample {
		i := r.IntN(n)
		if !seen[i] {
			seen[i] = true
			idx = append(idx, i)
		}
	}
	return idx
}

// fdStep is the central-difference step in float64: truncation error
// O(h²)≈1e-12 and cancellation error O(ε₆₄/h)≈1e-10, both far below float32.
const fdStep = 1e-6

// finiteDiff is ∂⟨r, ref(in)⟩/∂in[k][i] by central differences. The outputs
// are subtracted element by element before the contraction, so outputs the
// element does not touch contribute exactly zero.
func (c *kcase) finiteDiff(ins []Array, r Array, k, i int) float64 {
	orig := ins[k].Data[i]
	h := fdStep * math.Max(1, math.Abs(orig))
	xp, xm := orig+h, orig-h
	ins[k].Data[i] = xp
	yp := c.ref(ins)
	ins[k].Data[i] = xm
	ym := c.ref(ins)
	ins[k].Data[i] = orig
	var s float64
	for j, rv := range r.Data {
		s += rv * (yp.Data[j] - ym.Data[j])
	}
	return s / (xp - xm)
}

// runCase checks one case on be: forward against the reference, determinism,
// untouched inputs and guards, then the backward kernel against finite
// differences, its += contract and its nil gradients.
func runCase(t *testing.T, be tensor.Backend, c *kcase, key string, short bool) {
	defer reportPanic(t)
	ins, seed := c.inputs(key)
	t.Logf("seed %d", seed) // printed only when the case fails (or with -v)
	want := c.ref(ins)
	if !sameShape(want.Shape, c.out) {
		t.Fatalf("reference output %v, case declares %v", want.Shape, c.out)
	}
	ar := &arena{be: be}
	inT := make([]*tensor.Tensor, len(ins))
	for k, x := range ins {
		inT[k] = ar.upload(c.in[k].name, x)
	}
	checkInputs := func(when string) {
		t.Helper()
		for k, x := range ins {
			if i := sameBits(download(be, inT[k]), x.Float32()); i >= 0 {
				t.Errorf("%s wrote input %s at element %d", when, c.in[k].name, i)
			}
		}
		ar.checkGuards(t, when)
	}

	// Forward: overwrite a NaN-filled output, match the reference.
	y := ar.alloc("y", c.out)
	be.Fill(y, float32(math.NaN()))
	aux := c.run(be, y, inT)
	checkInputs("forward")
	got := download(be, y)
	bad, worst := compare(got, want.Data, c.tol)
	t.Logf("forward: max error %.3g of max-norm (tolerance %.3g)", worst, c.tol)
	if bad >= 0 {
		t.Errorf("forward: y%v = %g; want %g (seed %d; max error %.3g of max-norm, tolerance %.3g)",
			index(c.out, bad), got[bad], want.Data[bad], seed, worst, c.tol)
	}
	var auxGot [][]float32
	for _, a := range aux {
		auxGot = append(auxGot, download(be, a))
	}
	if c.auxRef != nil {
		for j, w := range c.auxRef(ins) {
			if bad, worst := compare(auxGot[j], w.Data, c.auxTol); bad >= 0 {
				t.Errorf("forward: statistic %d%v = %g; want %g (seed %d; max error %.3g, tolerance %.3g)",
					j, index(w.Shape, bad), auxGot[j][bad], w.Data[bad], seed, worst, c.auxTol)
			}
		}
	}
	// Determinism: the same call again gives the same bits.
	y2 := ar.alloc("y (second run)", c.out)
	be.Fill(y2, float32(math.NaN()))
	aux2 := c.run(be, y2, inT)
	if i := sameBits(download(be, y2), got); i >= 0 {
		t.Errorf("forward is not deterministic: y%v = %g, then %g", index(c.out, i), got[i], download(be, y2)[i])
	}
	for j := range aux2 {
		if i := sameBits(download(be, aux2[j]), auxGot[j]); i >= 0 {
			t.Errorf("forward is not deterministic: statistic %d element %d", j, i)
		}
	}
	if c.back == nil || t.Failed() {
		return
	}

	// Backward: contract with a fixed random r (not Sum: ⟨1, y⟩ of a normalised
	// plane is constant, and a zero gradient would pass).
	rr := rand.New(rand.NewPCG(seed, 1))
	r := Array{Shape: c.out, Data: genUniform(-1, 1)(rr, numel(c.out))}
	dy := ar.upload("dy", r)
	newGrads := func(only int) []*tensor.Tensor {
		g := make([]*tensor.Tensor, len(ins))
		for k, op := range c.in {
			if op.grad && (only < 0 || only == k) {
				g[k] = ar.alloc("d"+op.name, op.shape)
			}
		}
		return g
	}
	rDy := r.Float32()
	checkAll := func(when string) {
		t.Helper()
		checkInputs(when)
		if i := sameBits(download(be, dy), rDy); i >= 0 {
			t.Errorf("%s wrote dy at element %d", when, i)
		}
		if i := sameBits(download(be, y), got); i >= 0 {
			t.Errorf("%s wrote the forward output y at element %d", when, i)
		}
	}
	grads := newGrads(-1)
	c.back(be, grads, dy, inT, y, aux)
	checkAll("backward")
	g1 := make([][]float32, len(ins))
	for k, g := range grads {
		if g != nil {
			g1[k] = download(be, g)
		}
	}

	// Against finite differences of the reference.
	for k, op := range c.in {
		if !op.grad {
			continue
		}
		idx := fdSamples(rr, g1[k], short)
		fd := make([]float64, len(idx))
		var scale, fdMax float64
		for j, i := range idx {
			fd[j] = c.finiteDiff(ins, r, k, i)
			fdMax = math.Max(fdMax, math.Abs(fd[j]))
			scale = math.Max(scale, math.Max(math.Abs(fd[j]), math.Abs(float64(g1[k][i]))))
		}
		if fdMax == 0 && !c.zeroGrad {
			t.Errorf("backward: d%s: every finite difference is 0: the check is vacuous (seed %d)", op.name, seed)
		}
		var worst float64
		bad := -1
		for j, i := range idx {
			e := math.Abs(float64(g1[k][i])-fd[j]) / math.Max(scale, 1e-30)
			if math.IsNaN(e) {
				e = math.Inf(1)
			}
			if e > worst {
				worst = e
			}
			if e > c.gradTol && bad < 0 {
				bad = j
			}
		}
		t.Logf("backward: d%s: max error %.3g of the largest element (tolerance %.3g), %d of %d elements checked",
			op.name, worst, c.gradTol, len(idx), numel(op.shape))
		if bad >= 0 {
			i := idx[bad]
			t.Errorf("backward: d%s%v = %g; finite difference %g (seed %d; max error %.3g of the largest, tolerance %.3g, %d of %d elements checked)",
				op.name, index(op.shape, i), g1[k][i], fd[bad], seed, worst, c.gradTol, len(idx), numel(op.shape))
		}
	}

	// Determinism of the backward pass.
	again := newGrads(-1)
	c.back(be, again, dy, inT, y, aux)
	for k, g := range again {
		if g == nil {
			continue
		}
		if i := sameBits(download(be, g), g1[k]); i >= 0 {
			t.Errorf("backward is not deterministic: d%s element %d", c.in[k].name, i)
		}
	}

	// Backward adds: pre-fill the gradients with random values g0 of the
	// gradient's own size; the result must be g0 + g1.
	acc := newGrads(-1)
	g0 := make([][]float32, len(ins))
	for k, g := range acc {
		if g == nil {
			continue
		}
		s := maxAbs(widen(g1[k]))
		if s == 0 {
			s = 1
		}
		g0[k] = Array{Data: genUniform(-s, s)(rr, numel(c.in[k].shape))}.Float32()
		be.Upload(g, g0[k])
	}
	c.back(be, acc, dy, inT, y, aux)
	checkAll("backward into pre-filled gradients")
	for k, g := range acc {
		if g == nil {
			continue
		}
		sum := make([]float64, len(g0[k]))
		for i := range sum {
			sum[i] = float64(g0[k][i]) + float64(g1[k][i])
		}
		got := download(be, g)
		if bad, worst := compare(got, sum, c.gradTol); bad >= 0 {
			t.Errorf("backward does not add into d%s: element %d = %g; want %g + %g (max error %.3g)",
				c.in[k].name, bad, got[bad], g0[k][bad], g1[k][bad], worst)
		}
	}

	if !c.multiGrad {
		return
	}
	// Nil gradients: each gradient alone equals its value from the full call,
	// and a call with none wanted writes nothing.
	for k, op := range c.in {
		if !op.grad {
			continue
		}
		one := newGrads(k)
		c.back(be, one, dy, inT, y, aux)
		got := download(be, one[k])
		if bad, worst := compare(got, widen(g1[k]), c.gradTol); bad >= 0 {
			t.Errorf("backward with only d%s wanted: element %d = %g; with all wanted %g (max error %.3g)",
				op.name, bad, got[bad], g1[k][bad], worst)
		}
	}
	c.back(be, make([]*tensor.Tensor, len(ins)), dy, inT, y, aux)
	checkAll("backward with no gradient wanted")
}

// runSame runs one case on a and b with the same inputs and requires
// bit-identical outputs, statistics and gradients.
func runSame(t *testing.T, a, b tensor.Backend, c *kcase, key string) {
	defer reportPanic(t)
	ins, seed := c.inputs(key)
	type result struct {
		y     []float32
		aux   [][]float32
		grads [][]float32
	}
	rr := rand.New(rand.NewPCG(seed, 1))
	r := genUniform(-1, 1)(rr, numel(c.out))
	do := func(be tensor.Backend) result {
		ar := &arena{be: be}
		inT := make([]*tensor.Tensor, len(ins))
		for k, x := range ins {
			inT[k] = ar.upload(c.in[k].name, x)
		}
		y := ar.alloc("y", c.out)
		aux := c.run(be, y, inT)
		res := result{y: download(be, y)}
		for _, x := range aux {
			res.aux = append(res.aux, download(be, x))
		}
		if c.back == nil {
			return res
		}
		dy := ar.alloc("dy", c.out)
		be.Upload(dy, Array{Data: r}.Float32())
		grads := make([]*tensor.Tensor, len(ins))
		for k, op := range c.in {
			if op.grad {
				grads[k] = ar.alloc("d"+op.name, op.shape)
			}
		}
		c.back(be, grads, dy, inT, y, aux)
		res.grads = make([][]float32, len(ins))
		for k, g := range grads {
			if g != nil {
				res.grads[k] = download(be, g)
			}
		}
		return res
	}
	ra, rb := do(a), do(b)
	if i := sameBits(ra.y, rb.y); i >= 0 {
		t.Errorf("y%v: %s gives %g, %s gives %g (seed %d)", index(c.out, i), a.Name(), ra.y[i], b.Name(), rb.y[i], seed)
	}
	for j := range ra.aux {
		if i := sameBits(ra.aux[j], rb.aux[j]); i >= 0 {
			t.Errorf("statistic %d element %d: %s gives %g, %s gives %g (seed %d)", j, i, a.Name(), ra.aux[j][i], b.Name(), rb.aux[j][i], seed)
		}
	}
	for k := range ra.grads {
		if ra.grads[k] == nil {
			continue
		}
		if i := sameBits(ra.grads[k], rb.grads[k]); i >= 0 {
			t.Errorf("d%s%v: %s gives %g, %s gives %g (seed %d)", c.in[k].name, index(c.in[k].shape, i),
				a.Name(), ra.grads[k][i], b.Name(), rb.grads[k][i], seed)
		}
	}
}

// reportPanic turns a kernel's panic on valid arguments into a failure of
// its case, so that the other cases still run.
func reportPanic(t *testing.T) {
	if r := recover(); r != nil {
		t.Errorf("panic: %v\n%s", r, debug.Stack())
	}
}

// index is the coordinates of flat element i of shape, for messages.
func index(shape []int, i int) []int {
	idx := make([]int, len(shape))
	if len(shape) > 0 {
		unravel(i, shape, idx)
	}
	return idx
}
