package model

import (
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/crdgo/crdgo/crd/nn"
	"github.com/crdgo/crdgo/crd/tensor"
	"github.com/crdgo/crdgo/crd/weights"
)

func TestValidateReportsEveryField(t *testing.T) {
	cases := []struct {
		spec Spec
		want []string // substrings, all in the one error
	}{
		{Spec{Arch: ArchResnet, NGF: 0, InC: 0, OutC: 3, Blocks: -1, Norm: "group"},
			[]string{"ngf 0", "in_channels 0", "blocks -1", `norm: norm "group"`}},
		{Spec{Arch: ArchUnet, NGF: 16, InC: 3, OutC: 99, Downs: 4, Norm: NormBatch},
			[]string{"out_channels 99", "downs 4"}},
		{Spec{Arch: ArchPatchGAN, NDF: 1 << 20, InC: 6, Layers: 0, Norm: NormInstance},
			[]string{"ndf 1048576", "layers 0"}},
		{Spec{Arch: ArchVGG16, InC: 1}, []string{"in_channels 1"}},
		{Spec{Arch: "unet"}, []string{`arch "unet"`, "unet_256"}},
	}
	for _, c := range cases {
		err := c.spec.Validate()
		if err == nil {
			t.Errorf("%+v: Validate = nil; want an error", c.spec)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%+v: Validate = %q; want it to mention %q", c.spec, err, w)
			}
		}
		if _, err := New(tensor.NewMeta(), c.spec); err == nil {
			t.Errorf("%+v: New accepted a spec Validate rejects", c.spec)
		}
	}
	for _, a := range Archs() {
		if err := DefaultSpec(a).Validate(); err != nil {
			t.Errorf("DefaultSpec(%s).Validate() = %v", a, err)
		}
	}
}

func TestCheckSize(t *testing.T) {
	cases := []struct {
		spec Spec
		h, w int
		ok   bool
	}{
		{DefaultSpec(ArchMobileResnet), 256, 256, true},
		{DefaultSpec(ArchMobileResnet), 64, 66, false},
		{DefaultSpec(ArchUnet), 256, 256, true},
		{DefaultSpec(ArchUnet), 64, 64, false},
		{Spec{Arch: ArchUnet, Downs: 6}, 64, 128, true},
		{DefaultSpec(ArchPatchGAN), 64, 64, true},
		{DefaultSpec(ArchPatchGAN), 16, 16, false},
		{DefaultSpec(ArchVGG16), 8, 8, true},
		{DefaultSpec(ArchVGG16), 4, 8, false},
		{DefaultSpec(ArchInception), 31, 77, true},
		{DefaultSpec(ArchInception), 0, 77, false},
	}
	for _, c := range cases {
		err := c.spec.CheckSize(c.h, c.w)
		if (err == nil) != c.ok {
			t.Errorf("%s.CheckSize(%d, %d) = %v; want ok %v", c.spec.Arch, c.h, c.w, err, c.ok)
		}
		if err == nil && c.spec.Validate() == nil {
			// Every size CheckSize accepts must run (on the shape-only backend).
			if _, err := Count(c.spec, c.h, c.w); err != nil {
				t.Errorf("Count(%s, %d×%d): %v", c.spec.Arch, c.h, c.w, err)
			}
		}
	}
}

// TestCounterOnCPU checks that counting a real forward pass (Counter over the
// CPU backend) records the same calls as the shape-only count, and that the
// calls' parameters add up to the network's: every parameter is used by one
// counted kernel, so the per-layer table is complete.
func TestCounterOnCPU(t *testing.T) {
	specs := []Spec{
		{Arch: ArchMobileResnet, NGF: 8, InC: 3, OutC: 3, Blocks: 2, Norm: NormInstance},
		{Arch: ArchResnet, NGF: 8, InC: 3, OutC: 3, Blocks: 2, Norm: NormBatch},
		{Arch: ArchUnet, NGF: 4, InC: 3, OutC: 3, Downs: 5, Norm: NormBatch},
		{Arch: ArchPatchGAN, NDF: 8, InC: 6, Layers: 3, Norm: NormInstance},
	}
	for _, s := range specs {
		meta, err := Count(s, 32, 32)
		if err != nil {
			t.Fatal(err)
		}
		cnt := NewCounter(tensor.NewCPU(tensor.PureGo, 1))
		net, err := New(cnt, s)
		if err != nil {
			t.Fatal(err)
		}
		net.Params().Initialize(rand.New(rand.NewPCG(1, 0)))
		net.SetTraining(false)
		tp := nn.NewTape(cnt)
		x := make([]float32, s.InputChannels()*32*32)
		net.Forward(tp, tp.Input(x, 1, s.InputChannels(), 32, 32))
		got := cnt.Ops()
		if len(got) != len(meta.Ops) {
			t.Fatalf("%s: %d calls on the CPU, %d on meta", s, len(got), len(meta.Ops))
		}
		for i := range got {
			a, b := got[i], meta.Ops[i]
			if a.Kind != b.Kind || !a.Out.Equal(b.Out) || a.Mult != b.Mult || a.Elems != b.Elems || a.Params != b.Params {
				t.Errorf("%s: call %d: CPU %+v, meta %+v", s, i, a, b)
			}
		}
	}
	for _, a := range Archs() {
		s := DefaultSpec(a)
		s.Downs = 6 // 64² for the U-Net; the others ignore it
		p, err := Count(s, 64, 64)
		if err != nil {
			t.Fatal(err)
		}
		var sum int64
		for _, o := range p.Ops {
			sum += o.Params
			if o.Layer == "" {
				t.Errorf("%s: unnamed op %+v", a, o)
			}
		}
		if sum != p.Params {
			t.Errorf("%s: counted calls use %d parameters; the network has %d", a, sum, p.Params)
		}
	}
}

func TestProfileNames(t *testing.T) {
	p, err := Count(DefaultSpec(ArchMobileResnet), 256, 256)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		layer  string
		kind   OpKind
		detail string
		macs   int64
	}{
		{"model.1", OpConv, "7×7", 256 * 256 * 64 * 3 * 49},
		{"model.1+", OpInstanceNorm, "", 0},
		{"model.4", OpConv, "3×3/2", 128 * 128 * 128 * 64 * 9},
	}
	for i, w := range want {
		o := p.Ops[i]
		if o.Layer != w.layer || o.Kind != w.kind || o.Detail != w.detail || o.MACs(MACsV003) != w.macs {
			t.Errorf("op %d = %s %s %s %d MACs; want %s %s %s %d", i, o.Layer, o.Kind, o.Detail, o.MACs(MACsV003), w.layer, w.kind, w.detail, w.macs)
		}
	}
	var dw *OpCost
	for i := range p.Ops {
		if p.Ops[i].Layer == "model.10.conv_block.1.conv.0" {
			dw = &p.Ops[i]
		}
	}
	// Depthwise 3×3 on 256 channels at 64²: C_in/groups = 1.
	if dw == nil || dw.Detail != "3×3 g256" || dw.MACs(MACsConv) != 64*64*256*9 || dw.Params != 256*9+256 {
		t.Errorf("depthwise conv of block 10: %+v", dw)
	}
}

// TestInceptionMACs pins the Inception count: torchprofile's rules applied to
// pytorch-fid's forward (resize ×4 in v003 only, 2x−1 one multiply per
// element, average pools one per output element, BN per output element in
// v003 only).
func TestInceptionMACs(t *testing.T) {
	p, err := Count(DefaultSpec(ArchInception), 299, 299)
	if err != nil {
		t.Fatal(err)
	}
	conv := p.MACs(MACsConv)
	var bn, pool, resize, mul int64
	for _, o := range p.Ops {
		switch o.Kind {
		case OpBatchNorm:
			bn += o.Elems
		case OpAvgPool, OpAdaptiveAvg:
			pool += o.Elems
		case OpResize:
			resize += o.Elems
		case OpMul:
			mul += o.Elems
		}
	}
	if resize != 3*299*299 || mul != 3*299*299 {
		t.Errorf("resize %d, mul %d elements; want %d each", resize, mul, 3*299*299)
	}
	if got, want := p.MACs(MACsV003), conv+bn+pool+4*resize+mul; got != want {
		t.Errorf("v003 = %d; want %d", got, want)
	}
	if got, want := p.MACs(MACsV002), conv+pool+mul; got != want {
		t.Errorf("v002 = %d; want %d", got, want)
	}
	if conv < 5.6e9 || conv > 5.8e9 {
		t.Errorf("convolutions: %d MACs; Inception-v3 at 299² has about 5.7 G", conv)
	}
}

func TestLoadVGG16Layouts(t *testing.T) {
	be := tensor.NewCPU(tensor.PureGo, 1)
	src := NewVGG16(be)
	src.Params().Initialize(rand.New(rand.NewPCG(7, 0)))
	want := src.Params().StateDict()
	dir := t.TempDir()
	write := func(name string, ts []weights.Tensor) string {
		p := filepath.Join(dir, name)
		if err := weights.WriteSafetensorsFile(p, ts, nil); err != nil {
			t.Fatal(err)
		}
		return p
	}
	stage := map[int]string{0: "1_2", 2: "1_2", 5: "2_2", 7: "2_2", 10: "3_3", 12: "3_3", 14: "3_3", 17: "4_3", 19: "4_3", 21: "4_3"}
	var wrapper, module []weights.Tensor
	for _, tn := range want {
		parts := strings.Split(tn.Name, ".") // features.N.weight
		idx, err := strconv.Atoi(parts[1])
		if err != nil {
			t.Fatal(err)
		}
		w := tn
		w.Name = "vgg.to_relu_" + stage[idx] + "." + tn.Name[len("features."):]
		wrapper = append(wrapper, w)
		m := tn
		m.Name = "module." + tn.Name
		module = append(module, m)
	}
	extra := weights.Tensor{Name: "classifier.0.weight", DType: weights.F32, Shape: []int{2}, F32: []float32{1, 2}}
	for _, path := range []string{
		write("torchvision.safetensors", append(append([]weights.Tensor(nil), want...), extra)),
		write("wrapper.safetensors", wrapper),
		write("module.safetensors", module),
	} {
		v, err := LoadVGG16(be, path)
		if err != nil {
			t.Fatalf("LoadVGG16(%s): %v", filepath.Base(path), err)
		}
		got := v.Params().StateDict()
		for i := range want {
			if got[i].Name != want[i].Name || !slices.Equal(got[i].F32, want[i].F32) {
				t.Errorf("LoadVGG16(%s): tensor %s differs", filepath.Base(path), want[i].Name)
			}
		}
	}

	// A wrong shape and a missing tensor are reported by name, together.
	bad := append([]weights.Tensor(nil), want[2:]...) // features.0.* missing
	bad[0].Shape = []int{64, 64, 1, 9}
	_, err := LoadVGG16(be, write("bad.safetensors", bad))
	for _, w := range []string{`"features.0.weight"`, `"features.0.bias"`, `"features.2.weight": shape [64 64 1 9] in file, model wants (64,64,3,3)`} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("LoadVGG16(bad) = %v; want it to mention %s", err, w)
		}
	}
	// Two tensors that map to one name are ambiguous.
	_, err = LoadVGG16(be, write("dup.safetensors", append(append([]weights.Tensor(nil), want...), wrapper[0])))
	if err == nil || !strings.Contains(err.Error(), "both stand for") {
		t.Errorf("LoadVGG16(both layouts) = %v; want an ambiguity error", err)
	}
}

func TestLoadInceptionNeedsRunningStats(t *testing.T) {
	be := tensor.NewMeta()
	src := NewInception(tensor.NewCPU(tensor.PureGo, 1))
	var ts []weights.Tensor
	for _, tn := range src.Params().StateDict() {
		switch {
		case strings.HasSuffix(tn.Name, "num_batches_tracked"): // old files lack it: fine
		case tn.Name == "Mixed_6b.branch7x7_2.bn.running_var": // needed
		default:
			tn.Name = "blocks." + wrapperIndex(tn.Name) // pytorch-fid's wrapper layout
			ts = append(ts, tn)
		}
	}
	ts = append(ts, weights.Tensor{Name: "fc.weight", DType: weights.F32, Shape: []int{1}, F32: []float32{0}})
	path := filepath.Join(t.TempDir(), "inception.safetensors")
	if err := weights.WriteSafetensorsFile(path, ts, nil); err != nil {
		t.Fatal(err)
	}
	_, err := LoadInception(be, path)
	if err == nil || !strings.Contains(err.Error(), `"Mixed_6b.branch7x7_2.bn.running_var"`) {
		t.Fatalf("LoadInception without a running_var = %v; want an error naming it", err)
	}
	if strings.Contains(err.Error(), "num_batches_tracked") {
		t.Errorf("LoadInception complains about num_batches_tracked: %v", err)
	}
}

// wrapperIndex maps a torchvision name to pytorch-fid's blocks.i.j layout.
func wrapperIndex(name string) string {
	for i, blk := range inceptionBlocks {
		for j, m := range blk {
			if rest, ok := strings.CutPrefix(name, m+"."); ok {
				return strconv.Itoa(i) + "." + strconv.Itoa(j) + "." + rest
			}
		}
	}
	return name
}
