package train

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"strings"
	"testing"
	"testing/fstest"

	"go.uber.org/zap/zaptest"

	"github.com/crdgo/crdgo/crd/data"
	"github.com/crdgo/crdgo/crd/model"
	"github.com/crdgo/crdgo/crd/nn"
	"github.com/crdgo/crdgo/crd/tensor"
)

// meanFeatures is a FIDNet for tests: image i's 2048 features are its three
// channel means, repeated; enough to tell images apart and to count them.
type meanFeatures struct{ seen int }

func (m *meanFeatures) Features(tp *nn.Tape, x *nn.Var) *nn.Var {
	s := x.Value.Shape
	host := make([]float32, x.Value.Numel())
	tp.Backend().Download(host, x.Value)
	per := s[1] * s[2] * s[3]
	out := make([]float32, s[0]*model.InceptionDim)
	for i := range s[0] {
		for c := range s[1] {
			var sum float32
			for _, v := range host[i*per+c*s[2]*s[3] : i*per+(c+1)*s[2]*s[3]] {
				sum += v
			}
			for k := c; k < model.InceptionDim; k += s[1] {
				out[i*model.InceptionDim+k] = sum / float32(s[2]*s[3]) * float32(1+k%7)
			}
		}
	}
	m.seen += s[0]
	return tp.Input(out, s[0], model.InceptionDim)
}

func pngOf(t *testing.T, shade uint8) []byte {
	img := image.NewRGBA(image.Rect(0, 0, 8, 8))
	for y := range 8 {
		for x := range 8 {
			img.Set(x, y, color.RGBA{shade, uint8(x * 30), uint8(y * 30), 255})
		}
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestCycleGANEvaluatesEveryAImageOnce: with 3 testA and 5 testB images, the
// evaluation translates the 3 A images once each (not max(3, 5) with A images
// repeated) and computes the real statistics from all 5 B images; eval.paired
// with unequal splits is refused.
func TestCycleGANEvaluatesEveryAImageOnce(t *testing.T) {
	files := fstest.MapFS{}
	for i := range 3 {
		files[fmt.Sprintf("testA/%d.png", i)] = &fstest.MapFile{Data: pngOf(t, uint8(40*i))}
	}
	for i := range 5 {
		files[fmt.Sprintf("testB/%d.png", i)] = &fstest.MapFile{Data: pngOf(t, uint8(200-30*i))}
	}
	ctx := context.Background()
	log := zaptest.NewLogger(t)
	ds, err := data.OpenUnaligned(ctx, data.FS(files, "mem://eval"), "testA", "testB",
		data.Options{CropSize: 8, LoadSize: 8, Channels: 3, Eval: true}, log)
	if err != nil {
		t.Fatal(err)
	}
	be := tensor.NewCPU(tensor.PureGo, 1)
	r, err := LoadRecipe("demo-cyclegan")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewEvaluator(ctx, be, ds, r, nil, "", log); err == nil || !strings.Contains(err.Error(), "3 A and 5 B images") {
		t.Errorf("paired evaluation of 3 A and 5 B images: err = %v; want a refusal naming both counts", err)
	}
	r.Eval.Paired = false
	fid := &meanFeatures{}
	ev, err := NewEvaluator(ctx, be, ds, r, fid, "", log)
	if err != nil {
		t.Fatal(err)
	}
	g, err := model.New(be, model.Spec{Arch: model.ArchMobileResnet, NGF: 2, InC: 3, OutC: 3, Blocks: 1, Norm: model.NormInstance})
	if err != nil {
		t.Fatal(err)
	}
	res, err := ev.Evaluate(ctx, nil, g)
	if err != nil {
		t.Fatal(err)
	}
	if res.Images != 3 || ev.realN != 5 || fid.seen != 3+5 {
		t.Errorf("evaluated %d images against %d real ones (%d through Inception); want 3 against 5 (8)", res.Images, ev.realN, fid.seen)
	}
}
