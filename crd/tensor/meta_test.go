package tensor

import (
	"strings"
	"testing"
)

func TestMetaHasNoStorage(t *testing.T) {
	m := NewMeta()
	x := m.New(Shape{2, 3, 4, 5})
	if x.Data != nil || x.Device != nil || !x.Shape.Equal(Shape{2, 3, 4, 5}) {
		t.Fatalf("New = %+v; want shape (2,3,4,5) without storage", x)
	}
	v := m.View(x, 10, Shape{3, 4})
	if v.Data != nil || !v.Shape.Equal(Shape{3, 4}) {
		t.Fatalf("View = %+v", v)
	}
	dst := []float32{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}
	m.Download(dst, v)
	for i, d := range dst {
		if d != 0 {
			t.Fatalf("Download: dst[%d] = %v; want 0 (no values to copy)", i, d)
		}
	}
}

// TestMetaChecksShapes runs each kernel once with operands that fit (no
// panic) and once with operands that do not (a panic naming the op).
func TestMetaChecksShapes(t *testing.T) {
	m := NewMeta()
	n := func(s ...int) *Tensor { return m.New(Shape(s)) }
	s2 := ConvParams{StrideH: 2, StrideW: 2, PadH: 1, PadW: 1}
	up := ConvParams{StrideH: 2, StrideW: 2, PadH: 1, PadW: 1, OutPadH: 1, OutPadW: 1}
	pool := PoolParams{KH: 3, KW: 3, StrideH: 2, StrideW: 2}
	cases := []struct {
		op      string
		ok, bad func()
	}{
		{"Conv2D",
			func() { m.Conv2D(n(1, 8, 32, 32), n(1, 4, 64, 64), n(8, 4, 3, 3), n(8), s2) },
			func() { m.Conv2D(n(1, 8, 31, 32), n(1, 4, 64, 64), n(8, 4, 3, 3), n(8), s2) }},
		{"Conv2D",
			func() { m.Conv2D(n(1, 6, 8, 8), n(1, 6, 10, 10), n(6, 1, 3, 3), nil, ConvParams{Groups: 6}) },
			func() { m.Conv2D(n(1, 6, 8, 8), n(1, 6, 10, 10), n(6, 6, 3, 3), nil, ConvParams{Groups: 6}) }},
		{"ConvTranspose2D",
			func() { m.ConvTranspose2D(n(1, 4, 64, 64), n(1, 8, 32, 32), n(8, 4, 3, 3), n(4), up) },
			func() { m.ConvTranspose2D(n(1, 4, 63, 64), n(1, 8, 32, 32), n(8, 4, 3, 3), n(4), up) }},
		{"InstanceNorm",
			func() { m.InstanceNorm(n(2, 3, 4, 4), n(6), n(6), n(2, 3, 4, 4), nil, nil, 1e-5, Activation{}) },
			func() { m.InstanceNorm(n(2, 3, 4, 4), n(3), n(6), n(2, 3, 4, 4), nil, nil, 1e-5, Activation{}) }},
		{"BatchNormApply",
			func() { m.BatchNormApply(n(2, 3, 4, 4), n(2, 3, 4, 4), n(3), n(3), n(3), n(3), Activation{}) },
			func() { m.BatchNormApply(n(2, 3, 4, 4), n(2, 3, 4, 4), n(3), n(3), n(4), n(3), Activation{}) }},
		{"Pad2D",
			func() { m.Pad2D(n(1, 2, 10, 10), n(1, 2, 4, 4), Padding{3, 3, 3, 3, PadReflect}) },
			func() { m.Pad2D(n(1, 2, 12, 12), n(1, 2, 4, 4), Padding{4, 4, 4, 4, PadReflect}) }},
		{"MaxPool2D",
			func() { m.MaxPool2D(n(1, 2, 3, 3), n(1, 2, 7, 7), pool) },
			func() { m.MaxPool2D(n(1, 2, 4, 3), n(1, 2, 7, 7), pool) }},
		{"Binary",
			func() { m.Binary(BAdd, n(2, 3, 4), n(2, 3, 4), n(3, 1)) },
			func() { m.Binary(BAdd, n(2, 3, 4), n(2, 3, 4), n(2, 4)) }},
		{"MatMul",
			func() { m.MatMul(n(2, 5), n(3, 2), n(5, 3), true, true, 1, 0) },
			func() { m.MatMul(n(2, 5), n(3, 2), n(5, 3), false, true, 1, 0) }},
		{"CopyAxis",
			func() { m.CopyAxis(n(2, 7, 3), n(2, 4, 3), 1, 3, 0, 4, false) },
			func() { m.CopyAxis(n(2, 7, 3), n(2, 4, 3), 1, 4, 0, 4, false) }},
		{"Permute",
			func() { m.Permute(n(4, 2, 3), n(2, 3, 4), []int{2, 0, 1}, false) },
			func() { m.Permute(n(4, 3, 2), n(2, 3, 4), []int{2, 0, 1}, false) }},
		{"ResizeBilinear",
			func() { m.ResizeBilinear(n(1, 3, 299, 299), n(1, 3, 64, 80), false) },
			func() { m.ResizeBilinear(n(1, 2, 299, 299), n(1, 3, 64, 80), false) }},
	}
	for _, c := range cases {
		if msg := panicOf(c.ok); msg != "" {
			t.Errorf("%s with fitting operands panicked: %s", c.op, msg)
		}
		if msg := panicOf(c.bad); !strings.Contains(msg, c.op) {
			t.Errorf("%s with operands that do not fit: panic %q; want one naming the op", c.op, msg)
		}
	}
}

func panicOf(f func()) (msg string) {
	defer func() {
		if r := recover(); r != nil {
			msg, _ = r.(string)
			if msg == "" {
				msg = "non-string panic"
			}
		}
	}()
	f()
	return ""
}

// TestMetaShapesAgreeWithCPU runs the CPU kernels with outputs of the shapes
// the exported Meta helpers compute: the CPU kernels panic on any other.
func TestMetaShapesAgreeWithCPU(t *testing.T) {
	cpu := NewCPU(PureGo, 1)
	n := func(s Shape) *Tensor { return cpu.New(s) }
	x, w, wt := n(Shape{1, 6, 17, 16}), n(Shape{4, 3, 3, 3}), n(Shape{6, 2, 3, 3})
	convs := []ConvParams{
		{StrideH: 2, StrideW: 2, PadH: 1, PadW: 1, Groups: 2},
		{PadH: 1, PadW: 2, DilationH: 2, Groups: 2},
	}
	for _, p := range convs {
		ys := MetaConvShape(x, w, nil, p)
		if msg := panicOf(func() { cpu.Conv2D(n(ys), x, w, nil, p) }); msg != "" {
			t.Errorf("Conv2D %+v: MetaConvShape %v: CPU says %s", p, ys, msg)
		}
		p.OutPadH, p.OutPadW = 1, 0
		ys = MetaConvTransposeShape(x, wt, nil, p)
		if msg := panicOf(func() { cpu.ConvTranspose2D(n(ys), x, wt, nil, p) }); msg != "" {
			t.Errorf("ConvTranspose2D %+v: MetaConvTransposeShape %v: CPU says %s", p, ys, msg)
		}
	}
	for _, p := range []PoolParams{{KH: 3, KW: 3, StrideH: 2, StrideW: 2}, {KH: 3, KW: 3, StrideH: 1, StrideW: 1, PadH: 1, PadW: 1}, {KH: 2, KW: 2}} {
		ys := MetaPoolShape(x, p)
		if msg := panicOf(func() { cpu.AvgPool2D(n(ys), x, p) }); msg != "" {
			t.Errorf("AvgPool2D %+v: MetaPoolShape %v: CPU says %s", p, ys, msg)
		}
	}
	pad := Padding{Top: 3, Bottom: 2, Left: 1, Right: 0, Mode: PadReflect}
	if ys := MetaPadShape(x, pad); panicOf(func() { cpu.Pad2D(n(ys), x, pad) }) != "" {
		t.Errorf("Pad2D %+v: MetaPadShape %v disagrees with the CPU kernel", pad, ys)
	}
}
