package weights

import (
	"archive/zip"
	"bytes"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/crdgo/crdgo/internal/fuzzmin"
)

// Fuzz targets for every reader. An error is fine; a panic, or an allocation beyond the
// small multiple of the input the readers promise (allocBound), is not; whatever decodes
// must round-trip through the safetensors writer (the .npy reader through a .npy writer).
// Seeds: the Python-written files in testdata/py, hand-built valid and known-bad inputs,
// and the corpus in testdata/fuzz.

func addFiles(f *testing.F, pattern string) {
	paths, _ := filepath.Glob(filepath.Join("testdata", "py", pattern))
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
}

// storedAs is what the safetensors writer turns t into.
func storedAs(t Tensor) Tensor {
	if t.DType.IsFloat() {
		t.DType = F32
	} else {
		t.DType = I64
	}
	return t
}

// roundTrip writes ts as safetensors, reads them back and checks they are unchanged but for
// the stored dtype; a second write must give the same bytes.
func roundTrip(t *testing.T, ts []Tensor, meta map[string]string) {
	var buf bytes.Buffer
	if err := WriteSafetensors(&buf, ts, meta); err != nil {
		t.Fatalf("WriteSafetensors of what was read: %v", err)
	}
	got, gotMeta, err := ReadSafetensors(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	if err != nil {
		t.Fatalf("reading what WriteSafetensors wrote: %v", err)
	}
	want := make([]Tensor, len(ts))
	for i, x := range ts {
		want[i] = storedAs(x)
	}
	if err := diffTensors(got, fileOrder(want)); err != nil {
		t.Fatalf("round trip: %v", err)
	}
	if fmt.Sprint(gotMeta) != fmt.Sprint(meta) && (len(gotMeta) != 0 || len(meta) != 0) {
		t.Fatalf("round trip: metadata %v; want %v", gotMeta, meta)
	}
	var again bytes.Buffer
	if err := WriteSafetensors(&again, got, gotMeta); err != nil || !bytes.Equal(again.Bytes(), buf.Bytes()) {
		t.Fatalf("second write differs (err %v)", err)
	}
}

func FuzzSafetensors(f *testing.F) {
	addFiles(f, "*.safetensors")
	var buf bytes.Buffer
	WriteSafetensors(&buf, []Tensor{
		{Name: "a", Shape: []int{2, 2}, F32: []float32{1, 2, 3, float32(math.NaN())}},
		{Name: "n", DType: I64, Shape: []int{}, I64: []int64{-5}},
		{Name: "e", Shape: []int{0}},
	}, map[string]string{"k": "v"})
	f.Add(buf.Bytes())
	f.Add(stFile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, f32Bytes(1, 2)))
	f.Add(stFile(`{"a":{"dtype":"F16","shape":[4294967296,4294967296],"data_offsets":[0,8]}}`, f32Bytes(1, 2)))
	f.Add(stFile(`{"a":{"dtype":"BOOL","shape":[2],"data_offsets":[0,2]},"__metadata__":{"x":"y"}}`, []byte{1, 0}))
	f.Add([]byte("\xff\xff\xff\xff\xff\xff\xff\xff{}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 1<<20 {
			t.Skip("input over 1 MiB")
		}
		var (
			ts   []Tensor
			meta map[string]string
			err  error
		)
		allocBound(t, len(data), func() { ts, meta, err = ReadSafetensors(bytes.NewReader(data), int64(len(data))) })
		if err != nil {
			return
		}
		roundTrip(t, ts, meta)
	})
}

func FuzzPyTorch(f *testing.F) {
	addFiles(f, "*.pth")
	f.Add(torchZip(stateDictPickle([]pkTensor{
		{name: "w", storageType: "FloatStorage", key: "0", storageNumel: 6, offset: 1, size: []int64{2, 2}, stride: []int64{1, 2}},
		{name: "m", storageType: "BoolStorage", key: "1", storageNumel: 2, size: []int64{2}, stride: []int64{1}},
	}, false), map[string][]byte{"0": f32Bytes(arange(6)...), "1": {1, 0}}, map[string]string{"byteorder": "little"}))
	f.Add(legacyFile(stateDictPickle([]pkTensor{
		{name: "b", storageType: "DoubleStorage", key: "7", storageNumel: 3, size: []int64{2}, stride: []int64{1}, v1: true, py2: true, view: []int64{1, 2}},
	}, true), []string{"7"}, map[string][]byte{"7": make([]byte, 24)}, map[string]int{"7": 8}))
	f.Add(torchZip([]byte("\x80\x02cos\nsystem\n."), nil, nil))
	f.Add(torchZip([]byte("\x80\x02](h\x00a."), nil, nil))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 1<<20 {
			t.Skip("input over 1 MiB")
		}
		var (
			ts  []Tensor
			err error
		)
		allocBound(t, len(data), func() { ts, err = readPyTorch(bytes.NewReader(data), int64(len(data))) })
		if err != nil {
			return
		}
		roundTrip(t, ts, nil)
	})
}

func FuzzNPY(f *testing.F) {
	paths, _ := filepath.Glob(filepath.Join("testdata", "py", "*.npz"))
	for _, p := range paths {
		zr, err := zip.OpenReader(p)
		if err != nil {
			f.Fatal(err)
		}
		for _, e := range zr.File {
			rc, _ := e.Open()
			b, _ := io.ReadAll(rc) // a test's own small seed file
			rc.Close()
			f.Add(b)
		}
		zr.Close()
	}
	f.Add(npyBytes("{'descr': '>f4', 'fortran_order': True, 'shape': (2, 1), }", f32Bytes(1, 2)))
	f.Add(npyBytes("{'descr': '<f2', 'fortran_order': False, 'shape': (1L,), }", []byte{0, 0x3c}))
	f.Add(npyBytes("{'descr': '<f8', 'fortran_order': False, 'shape': (4294967296, 4294967296), }", nil))
	f.Add([]byte("\x93NUMPY\x02\x00\xff\xff\xff\xff{}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 1<<20 {
			t.Skip("input over 1 MiB")
		}
		var (
			a   Array64
			err error
		)
		allocBound(t, len(data), func() { a, _, err = readNPYBytes(data) })
		if err != nil {
			return
		}
		n := 1
		for _, d := range a.Shape {
			n *= d
		}
		if n != len(a.Data) {
			t.Fatalf("shape %v holds %d elements; Data has %d", a.Shape, n, len(a.Data))
		}
		b, _, err := readNPYBytes(npyF64(a))
		if err != nil {
			t.Fatalf("reading the rewritten .npy: %v", err)
		}
		if jsonShape(b.Shape) != jsonShape(a.Shape) {
			t.Fatalf("round trip: shape %v; want %v", b.Shape, a.Shape)
		}
		for i := range a.Data {
			if math.Float64bits(a.Data[i]) != math.Float64bits(b.Data[i]) {
				t.Fatalf("round trip: element %d = %v; want %v", i, b.Data[i], a.Data[i])
			}
		}
	})
}

// FuzzTorchPickle mutates data.pkl alone, inside a fixed zip with two storages, so the
// mutator spends its time on the pickle machine rather than on the zip structure.
func FuzzTorchPickle(f *testing.F) {
	f.Add(stateDictPickle([]pkTensor{
		{name: "w", storageType: "FloatStorage", key: "0", storageNumel: 6, offset: 1, size: []int64{2, 2}, stride: []int64{1, 2}},
		{name: "h", storageType: "HalfStorage", key: "1", storageNumel: 4, size: []int64{2, 2}, stride: []int64{2, 1}},
	}, false))
	f.Add(stateDictPickle([]pkTensor{
		{name: "b", storageType: "FloatStorage", key: "0", storageNumel: 6, size: []int64{3}, stride: []int64{2}, v1: true, py2: true},
	}, false))
	zr, err := zip.OpenReader(filepath.Join("testdata", "py", "ckpt.pth"))
	if err != nil {
		f.Fatal(err)
	}
	for _, e := range zr.File {
		if filepath.Base(e.Name) == "data.pkl" {
			rc, _ := e.Open()
			b, _ := io.ReadAll(rc) // a test's own small seed file
			rc.Close()
			f.Add(b)
		}
	}
	zr.Close()
	storages := map[string][]byte{"0": f32Bytes(arange(6)...), "1": make([]byte, 8)}
	f.Fuzz(func(t *testing.T, pkl []byte) {
		if len(pkl) > 1<<20 {
			t.Skip("input over 1 MiB")
		}
		file := torchZip(pkl, storages, nil)
		var (
			ts  []Tensor
			err error
		)
		allocBound(t, len(file), func() { ts, err = readPyTorch(bytes.NewReader(file), int64(len(file))) })
		if err != nil {
			return
		}
		roundTrip(t, ts, nil)
	})
}

// TestMain shortens the fuzzer's minimisation (internal/fuzzmin).
func TestMain(m *testing.M) {
	fuzzmin.Default()
	os.Exit(m.Run())
}
