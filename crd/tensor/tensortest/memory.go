package tensortest

import (
	"math"
	"testing"

	"github.com/crdgo/crdgo/crd/tensor"
)

// testMemory checks New, View, Upload, Download, Copy and Fill: the moves every
// other check relies on. Values travel bit for bit, NaN payloads, −0 and
// subnormals included.
func testMemory(t *testing.T, be tensor.Backend) {
	special := []float32{
		0, float32(math.Copysign(0, -1)), 1, -1.5, math.MaxFloat32, -math.SmallestNonzeroFloat32,
		float32(math.Inf(1)), float32(math.Inf(-1)), math.Float32frombits(0x7fc00001), math.Float32frombits(0x00000401),
		3.1415927, 1e-30,
	}

	x := be.New(tensor.Shape{3, 4})
	if !x.Shape.Equal(tensor.Shape{3, 4}) || x.Numel() != 12 {
		t.Fatalf("New((3,4)) has shape %v", x.Shape)
	}
	if i := sameBits(download(be, x), make([]float32, 12)); i >= 0 {
		t.Errorf("New((3,4)): element %d = %g; want 0", i, download(be, x)[i])
	}
	be.Upload(x, special)
	if i := sameBits(download(be, x), special); i >= 0 {
		t.Errorf("Upload then Download: element %d = %#x; want %#x", i, math.Float32bits(download(be, x)[i]), math.Float32bits(special[i]))
	}

	y := be.New(tensor.Shape{12})
	be.Copy(y, x)
	if i := sameBits(download(be, y), special); i >= 0 {
		t.Errorf("Copy: element %d = %g; want %g", i, download(be, y)[i], special[i])
	}

	be.Fill(y, -2.5)
	for i, v := range download(be, y) {
		if v != -2.5 {
			t.Errorf("Fill(-2.5): element %d = %g", i, v)
			break
		}
	}
	be.Fill(y, 0)
	if i := sameBits(download(be, y), make([]float32, 12)); i >= 0 {
		t.Errorf("Fill(0): element %d = %g", i, download(be, y)[i])
	}

	// A view shares storage: writes through it show in the parent, and only
	// in its own range; reads through it see the parent's elements.
	v := be.View(x, 5, tensor.Shape{2, 2})
	if i := sameBits(download(be, v), special[5:9]); i >= 0 {
		t.Errorf("View(x, 5, (2,2)): element %d = %g; want %g", i, download(be, v)[i], special[5+i])
	}
	be.Fill(v, 7)
	want := append([]float32(nil), special...)
	for i := 5; i < 9; i++ {
		want[i] = 7
	}
	if i := sameBits(download(be, x), want); i >= 0 {
		t.Errorf("Fill on View(x, 5, (2,2)): parent element %d = %g; want %g", i, download(be, x)[i], want[i])
	}
	be.Upload(v, []float32{1, 2, 3, 4})
	copy(want[5:9], []float32{1, 2, 3, 4})
	if i := sameBits(download(be, x), want); i >= 0 {
		t.Errorf("Upload to View(x, 5, (2,2)): parent element %d = %g; want %g", i, download(be, x)[i], want[i])
	}
	// A view of a view, and Copy between views of one buffer's disjoint ranges.
	vv := be.View(v, 1, tensor.Shape{2})
	if got := download(be, vv); got[0] != 2 || got[1] != 3 {
		t.Errorf("View of a view: %v; want [2 3]", got)
	}
	be.Copy(be.View(x, 0, tensor.Shape{2}), vv)
	want[0], want[1] = 2, 3
	if i := sameBits(download(be, x), want); i >= 0 {
		t.Errorf("Copy between views: parent element %d = %g; want %g", i, download(be, x)[i], want[i])
	}
}
