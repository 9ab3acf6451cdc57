package nn_test

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/crdgo/crdgo/crd/nn"
	"github.com/crdgo/crdgo/crd/tensor"
)

// tinyNet is conv3x3 → instance norm + ReLU → conv3x3 (stride 2) → tanh.
type tinyNet struct {
	ps     *nn.ParamSet
	c1, c2 *nn.Conv2d
}

func newTinyNet(be tensor.Backend, seed uint64) *tinyNet {
	ps := nn.NewParamSet(be)
	n := &tinyNet{ps: ps,
		c1: nn.NewConv2d(ps, "c1", 3, 8, 3, 3, tensor.ConvParams{}, true, 0.2),
		c2: nn.NewConv2d(ps, "c2", 8, 3, 3, 3, tensor.ConvParams{StrideH: 2, StrideW: 2, PadH: 1, PadW: 1}, true, 0.2),
	}
	ps.Pack()
	ps.Initialize(rand.New(rand.NewPCG(seed, 0)))
	return n
}

func (n *tinyNet) forward(tp *nn.Tape, x *nn.Var) *nn.Var {
	h := n.c1.Forward(tp, nn.ReflectPad2D(tp, x, 1))
	h = nn.InstanceNorm(tp, h, nil, nil, 1e-5, tensor.Activation{Kind: tensor.ActReLU})
	return nn.Tanh(tp, n.c2.Forward(tp, h))
}

// TestTinyNetFits proves the whole loop learns: forward, L1 + MSE loss,
// backward, Adam, on a fixed input and target, must cut the loss by 10×.
func TestTinyNetFits(t *testing.T) {
	for _, kind := range tensor.CPUKinds() {
		t.Run(string(kind), func(t *testing.T) {
			be := tensor.NewCPU(kind, 2)
			net := newTinyNet(be, 7)
			rng := rand.New(rand.NewPCG(11, 0))
			x := make([]float32, 2*3*12*12)
			y := make([]float32, 2*3*6*6)
			for i := range x {
				x[i] = 2*rng.Float32() - 1
			}
			for i := range y {
				y[i] = 0.8 * (2*rng.Float32() - 1)
			}
			opt := nn.NewAdam(net.ps, 1e-2, 0.9, 0.999)
			tp := nn.NewTape(be)
			loss := func() float32 {
				tp.Reset()
				out := net.forward(tp, tp.Input(x, 2, 3, 12, 12))
				target := tp.Input(y, 2, 3, 6, 6)
				l := nn.Add(tp, nn.L1Loss(tp, out, target), nn.MSELoss(tp, out, target))
				net.ps.ZeroGrad()
				tp.Backward(l)
				opt.Step()
				v := make([]float32, 1)
				be.Download(v, l.Value)
				return v[0]
			}
			first := loss()
			var last float32
			allocs := 0
			for i := 0; i < 300; i++ {
				last = loss()
				if i == 1 {
					allocs = tp.Arena().Allocations()
				}
			}
			if !(last < first/10) {
				t.Fatalf("loss %g → %g after 300 Adam steps; want a 10× drop", first, last)
			}
			if got := tp.Arena().Allocations(); got != allocs {
				t.Errorf("arena allocated %d tensors after step 2 (had %d): steady-state steps must reuse memory", got-allocs, allocs)
			}
			t.Logf("loss %g → %g", first, last)
		})
	}
}

// TestAdamBound: the bound holds for gradients chosen to move an element as
// far as possible (its sign flips the moment the bound allows), and is not
// loose by more than a few times for a steady gradient.
func TestAdamBound(t *testing.T) {
	const lr, b1, b2, steps = 2e-4, 0.5, 0.999, 20
	bound := nn.AdamBound(lr, b1, b2, steps)
	worst := 0.0
	r := rand.New(rand.NewPCG(2, 3))
	for trial := range 2000 {
		var m, v, x float64
		for s := 1; s <= steps; s++ {
			g := r.NormFloat64()
			if trial%2 == 0 {
				g = math.Pow(10, float64(s)/2) // growing gradients: the newest dominates m̂ most
			}
			m = b1*m + (1-b1)*g
			v = b2*v + (1-b2)*g*g
			x -= lr * (m / (1 - math.Pow(b1, float64(s)))) / math.Sqrt(v/(1-math.Pow(b2, float64(s))))
		}
		worst = max(worst, 2*math.Abs(x))
	}
	if worst > bound {
		t.Fatalf("two runs %d steps apart by %g > AdamBound %g", steps, worst, bound)
	}
	if worst < bound/4 {
		t.Errorf("AdamBound %g is more than 4× the worst found (%g): too loose to test anything", bound, worst)
	}
	t.Logf("AdamBound(%g, %g, %g, %d) = %.3g; worst found %.3g", lr, b1, b2, steps, bound, worst)
}
