package nn_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/crdgo/crdgo/crd/nn"
	"github.com/crdgo/crdgo/crd/nn/nntest"
	"github.com/crdgo/crdgo/crd/tensor"
)

// bnNet is conv → batch norm (leaky ReLU) → conv → batch norm: enough for a
// batch norm whose input gradient passes through another synchronised one.
type bnNet struct {
	ps       *nn.ParamSet
	c1, c2   *nn.Conv2d
	bn1, bn2 *nn.BatchNorm2d
}

func newBNNet(be tensor.Backend) *bnNet {
	ps := nn.NewParamSet(be)
	n := &bnNet{ps: ps,
		c1:  nn.NewConv2d(ps, "c1", 3, 4, 3, 3, tensor.ConvParams{PadH: 1, PadW: 1}, false, 0.3),
		bn1: nn.NewBatchNorm2d(ps, "bn1", 4, true),
		c2:  nn.NewConv2d(ps, "c2", 4, 2, 3, 3, tensor.ConvParams{PadH: 1, PadW: 1}, true, 0.3),
		bn2: nn.NewBatchNorm2d(ps, "bn2", 2, true),
	}
	ps.Pack()
	ps.Initialize(rand.New(rand.NewPCG(11, 0)))
	return n
}

func (n *bnNet) forward(tp *nn.Tape, x *nn.Var) *nn.Var {
	h := n.bn1.Forward(tp, n.c1.Forward(tp, x), tensor.Activation{Kind: tensor.ActLeakyReLU, Slope: 0.2})
	return n.bn2.Forward(tp, n.c2.Forward(tp, h), tensor.Activation{})
}

// run does one forward and backward of Σ y⊙c on x (N,3,5,5) and returns y,
// the parameter gradients and the buffers (running statistics) afterwards.
func (n *bnNet) run(tp *nn.Tape, x, c []float32, batch int) (y, grads, bufs []float32) {
	be := tp.Backend()
	tp.Reset()
	n.ps.ZeroGrad()
	out := n.forward(tp, tp.Input(x, batch, 3, 5, 5))
	loss := nn.Sum(tp, nn.Mul(tp, out, tp.Input(c, batch, 2, 5, 5)), false)
	tp.Backward(loss)
	y = make([]float32, out.Value.Numel())
	be.Download(y, out.Value)
	grads = make([]float32, n.ps.Grads().Numel())
	be.Download(grads, n.ps.Grads())
	bufs = make([]float32, n.ps.Buffers().Numel())
	be.Download(bufs, n.ps.Buffers())
	return y, grads, bufs
}

// TestSyncBatchNormEqualsOneProcess: w ranks, each with its part of a global
// batch of 4 and a Collective, compute what one process computes on the whole
// batch — outputs, the sum of their parameter gradients, and identical running
// statistics — including w = 5, where one rank runs a placeholder example that
// must count as nothing.
func TestSyncBatchNormEqualsOneProcess(t *testing.T) {
	const batch, per = 4, 3 * 5 * 5
	r := rand.New(rand.NewPCG(4, 2))
	x := make([]float32, batch*per)
	c := make([]float32, batch*2*5*5)
	for i := range x {
		x[i] = float32(r.NormFloat64()*0.7 + 0.3)
	}
	for i := range c {
		c[i] = float32(r.NormFloat64())
	}
	be := tensor.NewCPU(tensor.DefaultCPUKind(), 1)
	one := newBNNet(be)
	wantY, wantG, wantB := one.run(nn.NewTape(be), x, c, batch)

	for _, world := range []int{1, 2, 3, 5} {
		t.Run(fmt.Sprintf("world%d", world), func(t *testing.T) {
			g := nntest.NewGroup(world)
			ys, grads, bufs := make([][]float32, world), make([][]float32, world), make([][]float32, world)
			var wg sync.WaitGroup
			for rank := range world {
				wg.Add(1)
				go func() {
					defer wg.Done()
					lo, hi := rank*batch/world, (rank+1)*batch/world
					rk := g.Rank(rank)
					xs, cs, n := x[lo*per:hi*per], c[lo*50:hi*50], hi-lo
					if n == 0 { // a placeholder example, weighted 0
						xs, cs, n = make([]float32, per), make([]float32, 50), 1
						for i := range xs {
							xs[i] = 5 // far from the data: it would move the statistics if it counted
						}
						rk.SetContributes(false)
					}
					bk := tensor.NewCPU(tensor.DefaultCPUKind(), 1)
					net := newBNNet(bk)
					tp := nn.NewTape(bk)
					tp.SetCollective(rk)
					ys[rank], grads[rank], bufs[rank] = net.run(tp, xs, cs, n)
					if !rk.Contributes() {
						ys[rank], grads[rank] = nil, make([]float32, len(grads[rank])) // the trainer zeroes a placeholder's gradients
					}
				}()
			}
			wg.Wait()
			var y []float32
			sum := make([]float64, len(wantG))
			for rank := range world {
				y = append(y, ys[rank]...)
				for i, v := range grads[rank] {
					sum[i] += float64(v)
				}
				for i := range bufs[rank] {
					if math.Float32bits(bufs[rank][i]) != math.Float32bits(bufs[0][i]) {
						t.Fatalf("rank %d buffer %d = %g; rank 0 has %g: running statistics must be identical on every rank", rank, i, bufs[rank][i], bufs[0][i])
					}
				}
			}
			// Tolerances: float32 rounding of the gathered moments and of sums
			// taken in another order, through two normalisations.
			check := func(what string, got []float64, want []float32, tol float64) {
				t.Helper()
				if len(got) != len(want) {
					t.Fatalf("%s: %d values; want %d", what, len(got), len(want))
				}
				for i := range want {
					if d := math.Abs(got[i] - float64(want[i])); d > tol*(1+math.Abs(float64(want[i]))) {
						t.Fatalf("world %d: %s[%d] = %.7g; one process %.7g (|Δ| %.2g > %.0e)", world, what, i, got[i], want[i], d, tol)
					}
				}
			}
			check("output", f64(y), wantY, 2e-5)
			check("parameter gradient (sum over ranks)", sum, wantG, 5e-5)
			check("running statistics", f64(bufs[0]), wantB, 1e-6)
		})
	}
}

func f64(v []float32) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}

// TestFloat64TravelsExactly: PutFloat64 and Float64 round-trip every float64
// bit for bit, including extremes, subnormals, infinities and NaN.
func TestFloat64TravelsExactly(t *testing.T) {
	r := rand.New(rand.NewPCG(8, 8))
	vals := []float64{0, 1, -1, math.Pi, 1e300, -1e-300, 5e-324, math.MaxFloat64, math.SmallestNonzeroFloat64, 1 << 60, 3.4028234663852886e38, math.Inf(1), math.Inf(-1)}
	for range 100000 {
		vals = append(vals, math.Float64frombits(r.Uint64()))
	}
	vals = append(vals, math.Copysign(0, -1), math.NaN())
	var enc [nn.Float64Words]float32
	zeros := make([]float32, nn.Float64Words)
	for _, x := range vals {
		nn.PutFloat64(enc[:], x)
		for i := range enc { // through a sum with another rank's zeros
			enc[i] += zeros[i]
		}
		got := nn.Float64(enc[:])
		if math.Float64bits(got) != math.Float64bits(x) {
			t.Fatalf("Float64(PutFloat64(%v)) = %v (%x); want %x", x, got, math.Float64bits(got), math.Float64bits(x))
		}
	}
}
