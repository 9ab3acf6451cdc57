package tensortest

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/crdgo/crdgo/crd/tensor"
)

// benchConv is one convolution of the engine benchmark's training step: the
// 64×64, batch 1, ngf 16 mobile ResNet generator and its PatchGAN
// discriminator (ARCHITECTURE.md, "Where the time goes").
type benchConv struct {
	name       string
	x, w       []int
	p          tensor.ConvParams
	transposed bool
	// needDX: the step needs the input gradient (not for the image input).
	needDX bool
}

var ganConvs = []benchConv{
	{name: "gen_in_7x7", x: []int{1, 3, 70, 70}, w: []int{16, 3, 7, 7}},
	{name: "gen_down1", x: []int{1, 16, 64, 64}, w: []int{32, 16, 3, 3}, p: tensor.ConvParams{StrideH: 2, StrideW: 2, PadH: 1, PadW: 1}, needDX: true},
	{name: "gen_down2", x: []int{1, 32, 32, 32}, w: []int{64, 32, 3, 3}, p: tensor.ConvParams{StrideH: 2, StrideW: 2, PadH: 1, PadW: 1}, needDX: true},
	{name: "res_dw3x3", x: []int{1, 64, 18, 18}, w: []int{64, 1, 3, 3}, p: tensor.ConvParams{Groups: 64}, needDX: true},
	{name: "res_pw1x1", x: []int{1, 64, 16, 16}, w: []int{64, 64, 1, 1}, needDX: true},
	{name: "gen_up1", x: []int{1, 64, 16, 16}, w: []int{64, 32, 3, 3}, p: tensor.ConvParams{StrideH: 2, StrideW: 2, PadH: 1, PadW: 1, OutPadH: 1, OutPadW: 1}, transposed: true, needDX: true},
	{name: "gen_up2", x: []int{1, 32, 32, 32}, w: []int{32, 16, 3, 3}, p: tensor.ConvParams{StrideH: 2, StrideW: 2, PadH: 1, PadW: 1, OutPadH: 1, OutPadW: 1}, transposed: true, needDX: true},
	{name: "gen_out_7x7", x: []int{1, 16, 70, 70}, w: []int{3, 16, 7, 7}, needDX: true},
	{name: "patchgan_k4s2", x: []int{1, 128, 16, 16}, w: []int{256, 128, 4, 4}, p: tensor.ConvParams{StrideH: 2, StrideW: 2, PadH: 1, PadW: 1}, needDX: true},
	{name: "patchgan_k4s1", x: []int{1, 256, 8, 8}, w: []int{512, 256, 4, 4}, p: tensor.ConvParams{PadH: 1, PadW: 1}, needDX: true},
}

// BenchmarkBackend is the shared benchmark set: the forward and backward
// convolutions of one 64×64 GAN training step, each reporting GFLOP/s
// (2 flops per multiply-add; the backward pass counts the data and the filter
// gradients it computes). Run it side by side for several backends with
// b.Run, one per backend.
func BenchmarkBackend(b *testing.B, be tensor.Backend) {
	for _, c := range ganConvs {
		b.Run(c.name, func(b *testing.B) { benchConvolution(b, be, c) })
	}
}

func benchConvolution(b *testing.B, be tensor.Backend, c benchConv) {
	q := c.p.Norm()
	var y []int
	var macs int // multiply-adds of the forward pass
	if c.transposed {
		cout := c.w[1] * q.Groups
		y = []int{c.x[0], cout,
			tensor.ConvTransposeOut(c.x[2], c.w[2], q.StrideH, q.PadH, q.DilationH, q.OutPadH),
			tensor.ConvTransposeOut(c.x[3], c.w[3], q.StrideW, q.PadW, q.DilationW, q.OutPadW)}
		macs = numel(c.x) * c.w[1] * c.w[2] * c.w[3]
	} else {
		y = []int{c.x[0], c.w[0],
			tensor.ConvOut(c.x[2], c.w[2], q.StrideH, q.PadH, q.DilationH),
			tensor.ConvOut(c.x[3], c.w[3], q.StrideW, q.PadW, q.DilationW)}
		macs = numel(y) * c.w[1] * c.w[2] * c.w[3]
	}
	r := rand.New(rand.NewPCG(1, 0))
	upload := func(shape []int) *tensor.Tensor {
		t := be.New(tensor.Shape(shape))
		be.Upload(t, Array{Data: genUniform(-1, 1)(r, numel(shape))}.Float32())
		return t
	}
	x, w, bias := upload(c.x), upload(c.w), upload([]int{y[1]})
	yt, dy := be.New(tensor.Shape(y)), upload(y)
	dw, db := be.New(tensor.Shape(c.w)), be.New(tensor.Shape{y[1]})
	var dx *tensor.Tensor
	grads := 1
	if c.needDX {
		dx = be.New(tensor.Shape(c.x))
		grads = 2
	}
	host := make([]float32, max(numel(y), numel(c.w)))
	name := fmt.Sprintf("x%s_w%s", shp(c.x), shp(c.w))

	b.Run("forward_"+name, func(b *testing.B) {
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if c.transposed {
				be.ConvTranspose2D(yt, x, w, bias, c.p)
			} else {
				be.Conv2D(yt, x, w, bias, c.p)
			}
		}
		// A device backend may run asynchronously: the download waits for the
		// last kernel inside the timed region (b.Loop would stop the clock first).
		be.Download(host[:numel(y)], yt)
		b.ReportMetric(2*float64(macs)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
	})
	b.Run("backward_"+name, func(b *testing.B) {
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if c.transposed {
				be.ConvTranspose2DBackward(dx, dw, db, dy, x, w, c.p)
			} else {
				be.Conv2DBackward(dx, dw, db, dy, x, w, c.p)
			}
		}
		be.Download(host[:numel(c.w)], dw)
		b.ReportMetric(2*float64(grads*macs)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
	})
}
