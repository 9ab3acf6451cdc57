package weights

import (
	"archive/zip"
	"bytes"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func readTorchBytes(b []byte) ([]Tensor, error) {
	return readPyTorch(bytes.NewReader(b), int64(len(b)))
}

func arange(n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(i)
	}
	return v
}

// TestTorchStrided checks random views of a storage against index arithmetic done here:
// element (i0, i1, …) of the view is storage[offset + Σ i_d·stride_d].
func TestTorchStrided(t *testing.T) {
	const seed = 3
	rng := rand.New(rand.NewPCG(seed, 0))
	storage := arange(200)
	for trial := range 200 {
		nd := rng.IntN(4)
		size, stride := make([]int64, nd), make([]int64, nd)
		for d := range nd {
			size[d] = int64(1 + rng.IntN(4))
			stride[d] = int64(rng.IntN(12))
			if rng.IntN(2) == 0 {
				stride[d] = 1 // contiguous-looking runs too
			}
		}
		off := int64(rng.IntN(20))
		want := Tensor{Name: "v", DType: F32, Shape: intShape(size)}
		last, n := off, int64(1)
		for d := range nd {
			last += (size[d] - 1) * stride[d]
			n *= size[d]
		}
		ok := last < 200 && n <= 200
		idx := make([]int64, nd)
		for range n {
			pos := off
			for d := range nd {
				pos += idx[d] * stride[d]
			}
			if ok {
				want.F32 = append(want.F32, storage[pos])
			}
			for d := nd - 1; d >= 0; d-- {
				if idx[d]++; idx[d] < size[d] {
					break
				}
				idx[d] = 0
			}
		}
		pkl := stateDictPickle([]pkTensor{{name: "v", storageType: "FloatStorage", key: "0", storageNumel: 200, offset: off, size: size, stride: stride}}, false)
		got, err := readTorchBytes(torchZip(pkl, map[string][]byte{"0": f32Bytes(storage...)}, nil))
		if !ok {
			if err == nil {
				t.Fatalf("seed %d trial %d: size %v stride %v offset %d reads past the storage; want an error", seed, trial, size, stride, off)
			}
			continue
		}
		if err != nil {
			t.Fatalf("seed %d trial %d: size %v stride %v offset %d: %v", seed, trial, size, stride, off, err)
		}
		if err := diffTensors(got, []Tensor{want}); err != nil {
			t.Fatalf("seed %d trial %d: size %v stride %v offset %d: %v", seed, trial, size, stride, off, err)
		}
	}
}

// TestTorchLegacyOld covers what torch <= 0.3 under Python 2 wrote (the published
// torchvision weights date from then): OrderedDict([[k, v], …]), _rebuild_tensor (v1), str
// keys as SHORT_BINSTRING, and a legacy storage view.
func TestTorchLegacyOld(t *testing.T) {
	ts := []pkTensor{
		{name: "features.0.weight", storageType: "FloatStorage", key: "140", storageNumel: 6, size: []int64{2, 3}, stride: []int64{3, 1}, v1: true, py2: true},
		{name: "features.0.bias", storageType: "FloatStorage", key: "141", storageNumel: 5, offset: 1, size: []int64{2}, stride: []int64{1}, v1: true, py2: true, view: []int64{2, 3}},
		{name: "bn.num_batches_tracked", storageType: "LongStorage", key: "142", storageNumel: 1, size: []int64{}, stride: []int64{}, py2: true},
	}
	long := []byte{7, 0, 0, 0, 0, 0, 0, 0}
	file := legacyFile(stateDictPickleAs(ts, true, true), []string{"140", "141", "142"},
		map[string][]byte{"140": f32Bytes(arange(6)...), "141": f32Bytes(10, 11, 12, 13, 14), "142": long},
		map[string]int{"140": 4, "141": 4, "142": 8})
	got, err := readTorchBytes(file)
	if err != nil {
		t.Fatal(err)
	}
	want := []Tensor{
		{Name: "features.0.weight", DType: F32, Shape: []int{2, 3}, F32: arange(6)},
		{Name: "features.0.bias", DType: F32, Shape: []int{2}, F32: []float32{13, 14}}, // view at 2, then offset 1
		{Name: "bn.num_batches_tracked", DType: I64, Shape: []int{}, I64: []int64{7}},
	}
	sameTensors(t, "legacy torch 0.3 file", got, want)

	// Truncating the last storage is an error naming it.
	if _, err := readTorchBytes(file[:len(file)-1]); err == nil || !strings.Contains(err.Error(), `storage "142"`) {
		t.Errorf("truncated legacy file: %v; want an error naming storage \"142\"", err)
	}
}

func TestTorchCheckpointFlatten(t *testing.T) {
	// {'epoch': 3, 'model': OrderedDict(w=tensor), 'opt': {'m': tensor}}: 'model' is picked.
	var p pk
	p.op(0x80, 2, '}', '(').str("epoch").int(3).str("model")
	inner := stateDictPickle([]pkTensor{{name: "w", storageType: "HalfStorage", key: "0", storageNumel: 2, size: []int64{2}, stride: []int64{1}}}, false)
	p.Write(inner[2 : len(inner)-1]) // drop PROTO and STOP
	p.str("opt").op('}').str("m")
	p.global("torch._utils", "_rebuild_tensor_v2").op('(', '(').str("storage").global("torch", "FloatStorage").str("1").str("cuda:0").int(1).op('t', 'Q')
	p.int(0).ints(1).ints(1).op(0x89, 'N', 't', 'R', 's')
	p.op('u', '.')
	file := torchZip(p.Bytes(), map[string][]byte{"0": {0x00, 0x3c, 0x00, 0xc0}, "1": f32Bytes(9)}, map[string]string{"byteorder": "little"})
	got, err := readTorchBytes(file)
	if err != nil {
		t.Fatal(err)
	}
	sameTensors(t, "checkpoint", got, []Tensor{{Name: "w", DType: F16, Shape: []int{2}, F32: []float32{1, -2}}})
}

func TestTorchRejects(t *testing.T) {
	okT := pkTensor{name: "w", storageType: "FloatStorage", key: "0", storageNumel: 4, size: []int64{2, 2}, stride: []int64{2, 1}}
	good := stateDictPickle([]pkTensor{okT}, false)
	storage := map[string][]byte{"0": f32Bytes(1, 2, 3, 4)}
	with := func(mod func(*pkTensor)) []byte {
		x := okT
		mod(&x)
		return torchZip(stateDictPickle([]pkTensor{x}, false), storage, nil)
	}
	var many pk // 10 tensors viewing one 40000-element storage: more than 4× its elements
	many.op(0x80, 2, '}', '(')
	for i := range 10 {
		many.str("t" + string(rune('a'+i)))
		many.global("torch._utils", "_rebuild_tensor_v2").op('(', '(').str("storage").global("torch", "FloatStorage").str("0").str("cpu").int(40000).op('t', 'Q')
		many.int(0).ints(40000).ints(1).op(0x89, 'N', 't', 'R')
	}
	many.op('u', '.')
	for _, tc := range []struct {
		name string
		file []byte
		want string
	}{
		{"unknown opcode", torchZip([]byte("\x80\x02i"), nil, nil), "opcode 0x69 at byte 2: unsupported opcode"},
		{"os.system", torchZip([]byte("\x80\x02cos\nsystem\n."), nil, nil), "global os.system is not allowed"},
		{"complex storage", with(func(x *pkTensor) { x.storageType = "ComplexFloatStorage" }), "storage type torch.ComplexFloatStorage is not supported"},
		{"past storage", with(func(x *pkTensor) { x.offset = 1 }), `tensor "w": size [2 2] stride [2 1] offset 1 read element 4 of a 4-element storage`},
		{"expanded", with(func(x *pkTensor) { x.size, x.stride = []int64{3, 2}, []int64{0, 1} }), "expanded views are not supported"},
		{"overflow", with(func(x *pkTensor) { x.size, x.stride = []int64{3, 2}, []int64{1 << 62, 1} }), "overflow"},
		{"negative size", with(func(x *pkTensor) { x.size = []int64{-1, 2} }), "negative dimension"},
		{"storage too short", torchZip(good, map[string][]byte{"0": f32Bytes(1, 2, 3)}, nil), `storage "0": entry archive/data/0 holds 12 bytes; 4×F32 needs 16`},
		{"storage missing", torchZip(good, nil, nil), `storage "0": no entry archive/data/0`},
		{"big endian", torchZip(good, storage, map[string]string{"byteorder": "big"}), `byteorder "big"`},
		{"not a dict", torchZip([]byte("\x80\x02]."), nil, nil), "holds a list, not a state dict"},
		{"non-tensor", torchZip([]byte("\x80\x02}(X\x01\x00\x00\x00aK\x01u."), nil, nil), `tensor "a": the state dict holds a int there`},
		{"no stop", torchZip([]byte("\x80\x02}"), nil, nil), "no STOP"},
		{"underflow", torchZip([]byte("\x80\x02s."), nil, nil), "stack underflow"},
		{"mark underflow", torchZip([]byte("\x80\x02](a."), nil, nil), "stack underflow"},
		{"empty memo", torchZip([]byte("\x80\x02h\x05."), nil, nil), "memo 5 is empty"},
		{"huge string", torchZip([]byte("\x80\x02X\xff\xff\xff\x7f"), nil, nil), "runs past"},
		{"leftover", torchZip([]byte("\x80\x02}}."), nil, nil), "leaves 1 values"},
		{"pickled module", torchZip([]byte("\x80\x02ctorch.nn.modules.linear\nLinear\n."), nil, nil), "global torch.nn.modules.linear.Linear is not allowed"},
		{"tensor reuse budget", torchZip(many.Bytes(), map[string][]byte{"0": f32Bytes(arange(40000)...)}, nil), "more than 4× their storages"},
		{"tar", append(make([]byte, 257), "ustar\x0000"+strings.Repeat("\x00", 300)...), "re-save with torch>=1.6"},
		{"garbage", []byte("hello world"), "not a torch.save file"},
		{"zip without pkl", func() []byte {
			var b bytes.Buffer
			zw := zip.NewWriter(&b)
			zw.Create("x.txt")
			zw.Close()
			return b.Bytes()
		}(), "not a torch.save file"},
		{"legacy without magic", []byte("\x80\x02K\x01."), "without torch's magic number"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := readTorchBytes(tc.file)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("readPyTorch = %v; want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestReadPyTorchNamesFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bad.pth")
	os.WriteFile(path, torchZip([]byte("\x80\x02cos\nsystem\n."), nil, nil), 0o644)
	_, err := ReadPyTorch(path)
	if err == nil || !strings.HasPrefix(err.Error(), "weights: "+path+": archive/data.pkl: pickle: ") {
		t.Fatalf("ReadPyTorch = %v; want it to name %s and data.pkl", err, path)
	}
	if _, _, err := ReadFile(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("ReadFile = %v; want it to name %s", err, path)
	}
}

// TestTorchDeflated reads a torch zip whose entries were recompressed (torch stores them;
// other tools may not), so storages go through the inflating path.
func TestTorchDeflated(t *testing.T) {
	src := filepath.Join("testdata", "py", "sd.pth")
	want, err := ReadPyTorch(src)
	if err != nil {
		t.Fatal(err)
	}
	zr, err := zip.OpenReader(src)
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, f := range zr.File {
		w, _ := zw.CreateHeader(&zip.FileHeader{Name: f.Name, Method: zip.Deflate})
		rc, _ := f.Open()
		io.Copy(w, rc)
		rc.Close()
	}
	zw.Close()
	got, err := readTorchBytes(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	sameTensors(t, "deflated sd.pth", got, want)
}

// BenchmarkRead reads a 64 MiB state dict (16 tensors of 1M float32) in each format.
func BenchmarkRead(b *testing.B) {
	const nt, n = 16, 1 << 20
	var pts []pkTensor
	storages := map[string][]byte{}
	var ts []Tensor
	for i := range nt {
		key := string(rune('a' + i))
		pts = append(pts, pkTensor{name: "t" + key, storageType: "FloatStorage", key: key, storageNumel: n, size: []int64{1024, 1024}, stride: []int64{1024, 1}})
		v := arange(n)
		storages[key] = f32Bytes(v...)
		ts = append(ts, Tensor{Name: "t" + key, DType: F32, Shape: []int{1024, 1024}, F32: v})
	}
	dir := b.TempDir()
	files := map[string]string{"torch-zip": filepath.Join(dir, "z.pth"), "safetensors": filepath.Join(dir, "s.safetensors")}
	os.WriteFile(files["torch-zip"], torchZip(stateDictPickle(pts, false), storages, nil), 0o644)
	if err := WriteSafetensorsFile(files["safetensors"], ts, nil); err != nil {
		b.Fatal(err)
	}
	for _, name := range []string{"torch-zip", "safetensors"} {
		b.Run(name, func(b *testing.B) {
			b.SetBytes(nt * n * 4)
			for b.Loop() {
				if _, _, err := ReadFile(files[name]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("write-safetensors", func(b *testing.B) {
		b.SetBytes(nt * n * 4)
		for b.Loop() {
			if err := WriteSafetensors(io.Discard, ts, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
}
