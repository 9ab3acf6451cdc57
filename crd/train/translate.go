package train

import (
	"context"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/crdgo/crdgo/crd/data"
	"github.com/crdgo/crdgo/crd/model"
	"github.com/crdgo/crdgo/crd/nn"
	"github.com/crdgo/crdgo/crd/tensor"
)

// MemoryEstimate is what translating one image takes, in bytes.
type MemoryEstimate struct {
	// Activations of one forward pass in evaluation mode: what the tape's arena
	// holds after the pass (it keeps every tensor of the pass until Reset).
	Activations int64
	// Params are the generator's values and buffers.
	Params int64
	// Images are the host copies of the image at size×size: the decoded source
	// and its resized copy, the input and output planes, the output image.
	Images int64
	// Runtime is an allowance for the Go runtime, the convolution scratch and
	// the garbage the collector lets pile up: 64 MiB and 4% of the rest.
	Runtime int64
}

// Total is the estimated peak.
func (m MemoryEstimate) Total() int64 { return m.Activations + m.Params + m.Images + m.Runtime }

// runtimeAllowance covers the process itself (~20 MiB) and the CPU backend's
// im2col blocks (1 Mi floats per worker); the garbage between images grows with
// them, hence the 4% on top. Measured against peak RSS (VmHWM) for the demo's
// student and teacher at 256² to 2048²: the estimate was 2–20% above, never
// below (student 2048²: 2593 MiB estimated, 2536 MiB peak).
const runtimeAllowance = 64 << 20

// TranslateMemory estimates the memory of translating one size×size image with
// a generator built from spec, whose source image has srcPixels pixels. It runs
// the forward pass on the shape-only backend (microseconds at any size,
// nothing allocated) and counts what the tape's arena would hold.
func TranslateMemory(spec NetSpec, size, srcPixels int) (MemoryEstimate, error) {
	ms, err := spec.modelSpec(3, 3)
	if err != nil {
		return MemoryEstimate{}, err
	}
	if err := ms.CheckSize(size, size); err != nil {
		return MemoryEstimate{}, fmt.Errorf("translate: --size %d: %w", size, err)
	}
	meta := tensor.NewMeta()
	g, err := model.New(meta, ms)
	if err != nil {
		return MemoryEstimate{}, err
	}
	g.SetTraining(false)
	tp := nn.NewTape(meta)
	g.Forward(tp, nn.Const(tp.New(1, 3, size, size)))
	var params int64
	for _, p := range g.Params().Params() {
		params += 4 * int64(p.Var.Value.Numel())
	}
	s2 := int64(size) * int64(size)
	src := int64(srcPixels)
	est := MemoryEstimate{
		Activations: tp.Arena().Bytes(),
		Params:      params,
		// Source: RGBA (up to 8 bytes a pixel for 16-bit PNGs) and RGB; resized
		// RGB; three float32 planes each for the example, the batch and the
		// downloaded output; the RGBA output image.
		Images: src*(8+3) + 3*s2 + 3*3*4*s2 + 4*s2,
	}
	est.Runtime = runtimeAllowance + (est.Activations+est.Images)/25
	return est, nil
}

// modelSpec is n as a model.Spec with inC input and outC output channels.
func (n NetSpec) modelSpec(inC, outC int) (model.Spec, error) {
	norm, err := model.ParseNorm(n.Norm)
	if err != nil {
		return model.Spec{}, err
	}
	return model.Spec{Arch: n.Arch, NGF: n.NGF, NDF: n.NDF, InC: inC, OutC: outC,
		Blocks: n.Blocks, Downs: n.Downs, Layers: n.Layers, Norm: norm}, nil
}

// Net is the teacher's or the student's spec in r.
func (r Recipe) Net(which Generator) NetSpec {
	if which == TeacherGenerator {
		return r.Teacher
	}
	return r.Student
}

// TranslateOptions configure TranslateFiles.
type TranslateOptions struct {
	Net  Generator // teacher or student
	Size int       // image side; 0: the recipe's crop size
	// MaxMemory is the memory the translation may use, bytes (0: no check);
	// MemoryFrom says where that number comes from, for the error.
	MaxMemory  int64
	MemoryFrom string
}

// Translated is one translated file and the time of its forward pass.
type Translated struct {
	In, Out string
	Took    time.Duration
}

// TranslateSummary describes a TranslateFiles run.
type TranslateSummary struct {
	Recipe   Recipe
	Net      NetSpec
	Size     int
	Backend  string
	Median   time.Duration
	Images   int
	Estimate MemoryEstimate
}

// TranslateFiles translates each of ins into the PNG file of the same index in
// outs with the checkpoint's generator, calling each after every file. Before
// anything is allocated it estimates the memory of the largest input at the
// chosen size and refuses, with both numbers, what does not fit in
// opt.MaxMemory. The first image is run once untimed (warm-up).
func TranslateFiles(ctx context.Context, be tensor.Backend, checkpoint string, ins, outs []string, opt TranslateOptions, each func(Translated)) (TranslateSummary, error) {
	if len(ins) == 0 || len(ins) != len(outs) {
		return TranslateSummary{}, fmt.Errorf("translate: %d inputs, %d outputs", len(ins), len(outs))
	}
	if opt.Net != TeacherGenerator && opt.Net != StudentGenerator {
		return TranslateSummary{}, fmt.Errorf("translate: generator %q: want teacher or student", opt.Net)
	}
	if opt.Size < 0 {
		return TranslateSummary{}, fmt.Errorf("translate: --size %d: want ≥ 0 (0: the recipe's crop size)", opt.Size)
	}
	rec, err := ReadCheckpointRecipe(checkpoint)
	if err != nil {
		return TranslateSummary{}, err
	}
	size := opt.Size
	if size == 0 {
		size = rec.Data.CropSize
	}
	spec := rec.Net(opt.Net)
	src := 0
	for _, in := range ins {
		w, h, err := data.ImageDims(in)
		if err != nil {
			return TranslateSummary{}, fmt.Errorf("translate: %s: %w", in, err)
		}
		src = max(src, w*h)
	}
	est, err := TranslateMemory(spec, size, src)
	if err != nil {
		return TranslateSummary{}, err
	}
	if opt.MaxMemory > 0 && est.Total() > opt.MaxMemory {
		return TranslateSummary{}, fmt.Errorf("translate: %d×%d with the %s (%s ngf %d) needs about %s (activations %s, images %s, weights and runtime %s); %s is available (%s): use a smaller --size, or set --max-memory if more is free",
			size, size, opt.Net, spec.Arch, spec.NGF, mib(est.Total()), mib(est.Activations), mib(est.Images), mib(est.Params+est.Runtime), mib(opt.MaxMemory), opt.MemoryFrom)
	}
	g, _, err := LoadGenerator(be, checkpoint, opt.Net)
	if err != nil {
		return TranslateSummary{}, err
	}
	g.SetTraining(false)
	tp := nn.NewTape(be)
	var lat []time.Duration
	for i, in := range ins {
		if err := ctx.Err(); err != nil {
			return TranslateSummary{}, err
		}
		fh, err := os.Open(in)
		if err != nil {
			return TranslateSummary{}, fmt.Errorf("translate: %w", err)
		}
		img, err := data.ReadImage(fh, size, 3)
		fh.Close()
		if err != nil {
			return TranslateSummary{}, fmt.Errorf("translate: %s: %w", in, err)
		}
		ex := []data.Example{{A: img}}
		if i == 0 {
			Translate(tp, g, ex) // warm-up: first-use costs stay out of the times
		}
		t0 := time.Now()
		out := Translate(tp, g, ex)[0]
		d := time.Since(t0)
		lat = append(lat, d)
		if err := WriteImage(outs[i], out, size, size); err != nil {
			return TranslateSummary{}, fmt.Errorf("translate: %s: %w", outs[i], err)
		}
		if each != nil {
			each(Translated{In: in, Out: outs[i], Took: d})
		}
	}
	slices.Sort(lat)
	return TranslateSummary{Recipe: rec, Net: spec, Size: size, Backend: be.Name(), Median: lat[len(lat)/2], Images: len(lat), Estimate: est}, nil
}

// mib formats bytes as MiB or GiB.
func mib(b int64) string {
	if b >= 10<<30 {
		return fmt.Sprintf("%.1f GiB", float64(b)/(1<<30))
	}
	return fmt.Sprintf("%d MiB", (b+(1<<20)-1)>>20)
}
