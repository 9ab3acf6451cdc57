package train

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/png"
	"math"
	"math/rand/v2"
	"sync"
	"testing"
	"testing/fstest"

	"go.uber.org/zap/zaptest"

	"github.com/crdgo/crdgo/crd/data"
	"github.com/crdgo/crdgo/crd/metric"
	"github.com/crdgo/crdgo/crd/model"
	"github.com/crdgo/crdgo/crd/nn"
	"github.com/crdgo/crdgo/crd/tensor"
)

// sumBarrier is a GradSync of world goroutines in one process: every call
// waits for all ranks and hands each the element-wise sum, added in rank
// order (the same bits on every rank).
type sumBarrier struct {
	mu    sync.Mutex
	cond  *sync.Cond
	world int
	bufs  [][]float32
	round int
	sum   []float32
}

func newSumBarrier(world int) *sumBarrier {
	b := &sumBarrier{world: world, bufs: make([][]float32, world)}
	b.cond = sync.NewCond(&b.mu)
	return b
}

type barrierRank struct {
	b    *sumBarrier
	rank int
}

func (r barrierRank) World() int { return r.b.world }
func (r barrierRank) Rank() int  { return r.rank }

func (r barrierRank) SumInPlace(_ context.Context, _ uint64, _ string, buf []float32) error {
	b := r.b
	b.mu.Lock()
	defer b.mu.Unlock()
	round := b.round
	b.bufs[r.rank] = buf
	arrived := 0
	for _, x := range b.bufs {
		if x != nil {
			arrived++
		}
	}
	if arrived == b.world {
		b.sum = make([]float32, len(buf))
		for _, x := range b.bufs {
			if len(x) != len(buf) {
				panic(fmt.Sprintf("sumBarrier: buffers of %d and %d values", len(x), len(buf)))
			}
			for i, v := range x {
				b.sum[i] += v
			}
		}
		clear(b.bufs)
		b.round++
		b.cond.Broadcast()
	}
	for b.round == round {
		b.cond.Wait()
	}
	copy(buf, b.sum)
	return nil
}

// noisePNG is an 8×8 image of seeded uniform noise: every image different in
// every channel (a constant channel would vanish in instance norm).
func noisePNG(t *testing.T, seed uint64) []byte {
	rng := rand.New(rand.NewPCG(seed, 1))
	img := image.NewRGBA(image.Rect(0, 0, 8, 8))
	for i := range img.Pix {
		img.Pix[i] = uint8(rng.IntN(256))
		if i%4 == 3 {
			img.Pix[i] = 255
		}
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// evalFixture is a paired evaluation set of n 16×16 images (8×8 files, resized) and two different
// small generators on backend be.
func evalFixture(t *testing.T, n int, be tensor.Backend) (*data.Dataset, Recipe, model.Network, model.Network) {
	t.Helper()
	files := fstest.MapFS{}
	for i := range n {
		files[fmt.Sprintf("testA/%d.png", i)] = &fstest.MapFile{Data: noisePNG(t, uint64(i))}
		files[fmt.Sprintf("testB/%d.png", i)] = &fstest.MapFile{Data: noisePNG(t, uint64(1000+i))}
	}
	ctx := context.Background()
	ds, err := data.OpenUnaligned(ctx, data.FS(files, "mem://eval"), "testA", "testB",
		data.Options{CropSize: 16, LoadSize: 16, Channels: 3, Eval: true}, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	r, err := LoadRecipe("demo-cyclegan")
	if err != nil {
		t.Fatal(err)
	}
	r.Eval.Paired = true
	nets := make([]model.Network, 2)
	for k, ngf := range []int{4, 2} {
		nets[k], err = model.New(be, model.Spec{Arch: model.ArchMobileResnet, NGF: ngf, InC: 3, OutC: 3, Blocks: 1, Norm: model.NormInstance})
		if err != nil {
			t.Fatal(err)
		}
		// Weights 25× the initial ones, so the outputs are not all ≈ 0.
		ps := nets[k].Params()
		ps.Initialize(rand.New(rand.NewPCG(uint64(k), 7)))
		v := make([]float32, ps.Values().Numel())
		be.Download(v, ps.Values())
		for i := range v {
			v[i] *= 25
		}
		be.Upload(ps.Values(), v)
	}
	return ds, r, nets[0], nets[1]
}

// TestStudentAgainstTeacher: evaluated with its teacher, the student's
// PSNRTeacher and SSIMTeacher are the per-image means of PSNR and SSIM
// between the two networks' outputs (both through uint8), computed here by
// hand; the teacher has none, and neither has them when evaluated alone.
func TestStudentAgainstTeacher(t *testing.T) {
	be := tensor.NewCPU(tensor.PureGo, 1)
	ds, r, teacher, student := evalFixture(t, 10, be)
	ctx := context.Background()
	ev, err := NewEvaluator(ctx, be, ds, r, nil, "", zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	res, err := ev.Evaluate(ctx, teacher, student)
	if err != nil {
		t.Fatal(err)
	}
	var psnr, ssim float64
	tp := nn.NewTape(be)
	for i := range 10 {
		ex, err := ds.Example(ctx, 0, 0, i)
		if err != nil {
			t.Fatal(err)
		}
		var unit [2][]float32
		for k, g := range []model.Network{teacher, student} {
			g.SetTraining(false)
			out := Translate(tp, g, []data.Example{ex})[0]
			g.SetTraining(true)
			u := make([]uint8, len(out))
			metric.ToUint8Truncate(u, out)
			unit[k] = make([]float32, len(u))
			metric.Uint8ToUnit(unit[k], u)
		}
		psnr += metric.PSNR(unit[1], unit[0], 1) / 10
		ssim += metric.SSIM(unit[1], unit[0], 3, 16, 16) / 10
	}
	if d := math.Abs(res.Student.PSNRTeacher - psnr); !(d < 1e-9) {
		t.Errorf("student PSNR to teacher %.12g dB; by hand %.12g", res.Student.PSNRTeacher, psnr)
	}
	if d := math.Abs(res.Student.SSIMTeacher - ssim); !(d < 1e-9) {
		t.Errorf("student SSIM to teacher %.12g; by hand %.12g", res.Student.SSIMTeacher, ssim)
	}
	if !math.IsNaN(res.Teacher.PSNRTeacher) || !math.IsNaN(res.Teacher.SSIMTeacher) {
		t.Errorf("the teacher has scores against itself: %v, %v; want NaN", res.Teacher.PSNRTeacher, res.Teacher.SSIMTeacher)
	}
	alone, err := ev.Evaluate(ctx, nil, student)
	if err != nil {
		t.Fatal(err)
	}
	if !math.IsNaN(alone.Student.PSNRTeacher) || alone.Student.PSNR != res.Student.PSNR {
		t.Errorf("student alone: PSNR to teacher %v (want NaN), PSNR %v (want %v as with the teacher)",
			alone.Student.PSNRTeacher, alone.Student.PSNR, res.Student.PSNR)
	}
	if _, ok := res.Student.Measured()["psnr_teacher"]; !ok {
		t.Errorf("Measured() lacks psnr_teacher: %v", res.Student.Measured())
	}
}

// TestEvaluationAcrossRanksIsOneProcess: 2 ranks, each with its own engine and
// its part of 19 images (more than one evaluation batch), end with the one-process results bit for bit,
// the comparison with the teacher included.
func TestEvaluationAcrossRanksIsOneProcess(t *testing.T) {
	const n, world = 19, 2
	ctx := context.Background()
	one := func() EvalResult {
		be := tensor.NewCPU(tensor.PureGo, 1)
		ds, r, teacher, student := evalFixture(t, n, be)
		ev, err := NewEvaluator(ctx, be, ds, r, nil, "", zaptest.NewLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		res, err := ev.Evaluate(ctx, teacher, student)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	want := one()
	b := newSumBarrier(world)
	got := make([]EvalResult, world)
	errs := make([]error, world)
	var wg sync.WaitGroup
	for rank := range world {
		be := tensor.NewCPU(tensor.PureGo, 1)
		ds, r, teacher, student := evalFixture(t, n, be)
		ev, err := NewEvaluator(ctx, be, ds, r, nil, "", zaptest.NewLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		ev.group = &evalGroup{ctx: ctx, sync: barrierRank{b, rank}, step: func() uint64 { return 0 }}
		wg.Go(func() { got[rank], errs[rank] = ev.Evaluate(ctx, teacher, student) })
	}
	wg.Wait()
	for rank := range world {
		if errs[rank] != nil {
			t.Fatalf("rank %d: %v", rank, errs[rank])
		}
		for _, c := range []struct {
			who       string
			got, want Scores
		}{{"teacher", got[rank].Teacher, want.Teacher}, {"student", got[rank].Student, want.Student}} {
			g, w := c.got.Measured(), c.want.Measured()
			if len(g) != len(w) {
				t.Errorf("rank %d %s: measured %v; one process %v", rank, c.who, g, w)
			}
			for k, v := range w {
				if g[k] != v {
					t.Errorf("rank %d %s %s = %.17g; one process %.17g", rank, c.who, k, g[k], v)
				}
			}
		}
	}
	if _, ok := want.Student.Measured()["psnr_teacher"]; !ok {
		t.Fatal("no student PSNR to teacher measured")
	}
}
