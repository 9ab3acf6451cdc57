package weights

import (
	"bytes"
	"encoding/binary"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// stFile builds a safetensors file from a raw header and buffer.
func stFile(header string, buf []byte) []byte {
	b := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	b = append(b, header...)
	return append(b, buf...)
}

func TestSafetensorsRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 0))
	for trial := range 20 {
		var ts []Tensor
		for i := range 1 + rng.IntN(6) {
			shape := make([]int, rng.IntN(4))
			n := 1
			for d := range shape {
				shape[d] = rng.IntN(4) // zeros included
				n *= shape[d]
			}
			x := Tensor{Name: string(rune('a'+rng.IntN(26))) + "é/" + string(rune('0'+i)), Shape: shape}
			if rng.IntN(3) == 0 {
				x.DType, x.I64 = I64, make([]int64, n)
				for j := range x.I64 {
					x.I64[j] = int64(rng.Uint64())
				}
			} else {
				x.DType, x.F32 = F32, make([]float32, n)
				for j := range x.F32 {
					x.F32[j] = math.Float32frombits(rng.Uint32()) // NaN payloads too
				}
			}
			ts = append(ts, x)
		}
		meta := map[string]string{"seed": "7", "trial": string(rune('A' + trial)), "<html>&": "\"q\"\n"}
		var buf bytes.Buffer
		if err := WriteSafetensors(&buf, ts, meta); err != nil {
			t.Fatalf("seed 7 trial %d: %v", trial, err)
		}
		if binary.LittleEndian.Uint64(buf.Bytes())%8 != 0 {
			t.Fatalf("seed 7 trial %d: header length %d is not a multiple of 8", trial, binary.LittleEndian.Uint64(buf.Bytes()))
		}
		got, gotMeta, err := ReadSafetensors(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
		if err != nil {
			t.Fatalf("seed 7 trial %d: %v", trial, err)
		}
		// Tensors of no bytes at one offset come back sorted by name; compare as a set then.
		if err := diffTensors(got, fileOrder(ts)); err != nil {
			t.Fatalf("seed 7 trial %d: %v", trial, err)
		}
		if len(gotMeta) != len(meta) {
			t.Fatalf("seed 7 trial %d: metadata %v; want %v", trial, gotMeta, meta)
		}
		for k, v := range meta {
			if gotMeta[k] != v {
				t.Fatalf("seed 7 trial %d: metadata[%q] = %q; want %q", trial, k, gotMeta[k], v)
			}
		}
		var again bytes.Buffer
		if err := WriteSafetensors(&again, got, gotMeta); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(again.Bytes(), buf.Bytes()) {
			t.Fatalf("seed 7 trial %d: rewriting what was read changed the bytes", trial)
		}
	}
}

// fileOrder is the order ReadSafetensors returns tensors written in the order of ts.
func fileOrder(ts []Tensor) []Tensor {
	out := make([]Tensor, 0, len(ts))
	var pending []Tensor // empty tensors waiting for the next non-empty one
	flush := func() {
		for i := 1; i < len(pending); i++ {
			for j := i; j > 0 && pending[j].Name < pending[j-1].Name; j-- {
				pending[j], pending[j-1] = pending[j-1], pending[j]
			}
		}
		out = append(out, pending...)
		pending = pending[:0]
	}
	for _, x := range ts {
		if x.Numel() == 0 {
			pending = append(pending, x)
			continue
		}
		flush()
		out = append(out, x)
	}
	flush()
	return out
}

func TestSafetensorsRejects(t *testing.T) {
	f32x2 := f32Bytes(1, 2)
	for _, tc := range []struct {
		name string
		file []byte
		want string
	}{
		{"short", []byte{1, 2, 3}, "shorter than the 8-byte header length"},
		{"header past end", stFile("{}", nil)[:9], "exceeds the 1 bytes after it"},
		{"header over cap", binary.LittleEndian.AppendUint64(nil, MaxSafetensorsHeader+1), "exceeds the 104857600-byte limit"},
		{"header huge", binary.LittleEndian.AppendUint64(nil, math.MaxUint64), "exceeds the 104857600-byte limit"},
		{"not object", stFile(`[]      `, nil), "not a JSON object"},
		{"bad json", stFile(`{"a":{`, nil), "header"},
		{"trailing", stFile(`{} x`, nil), "not white space"},
		{"unknown dtype", stFile(`{"a":{"dtype":"C64","shape":[1],"data_offsets":[0,8]}}`, make([]byte, 8)), `tensor "a": unknown dtype "C64"`},
		{"missing field", stFile(`{"a":{"dtype":"F32","shape":[2]}}`, f32x2), `tensor "a": needs dtype, shape and data_offsets`},
		{"negative dim", stFile(`{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}`, f32x2), `tensor "a": negative dimension`},
		{"fractional dim", stFile(`{"a":{"dtype":"F32","shape":[1.5],"data_offsets":[0,8]}}`, f32x2), `tensor "a"`},
		{"overflow", stFile(`{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}}`, f32x2), `tensor "a": shape [4294967296 4294967296] overflows int64`},
		{"overflow bytes", stFile(`{"a":{"dtype":"F64","shape":[2305843009213693952],"data_offsets":[0,8]}}`, f32x2), `tensor "a": shape [2305843009213693952] of 8-byte elements overflows`},
		{"overflow before zero", stFile(`{"a":{"dtype":"F32","shape":[4294967296,4294967296,0],"data_offsets":[0,0]}}`, nil), "overflows"},
		{"size mismatch", stFile(`{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}`, f32x2), `tensor "a": data_offsets [0,8] hold 8 bytes; shape [3] of F32 needs 12`},
		{"past buffer", stFile(`{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}`, f32x2), `tensor "a": data_offsets [0,16] run past the 8-byte buffer`},
		{"begin after end", stFile(`{"a":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}}`, f32x2), "want 0 <= begin <= end"},
		{"negative offset", stFile(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}}`, f32x2), "want 0 <= begin <= end"},
		{"three offsets", stFile(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}}`, f32x2), "want [begin, end]"},
		{"offset overflow", stFile(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,18446744073709551615]}}`, f32x2), `tensor "a"`},
		{"overlap", stFile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, f32x2), `tensor "b": bytes [4,8) overlap tensor "a"`},
		{"duplicate", stFile(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, f32x2), `tensor "a" appears twice`},
		{"empty name", stFile(`{"":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, f32x2), "empty name"},
		{"metadata not strings", stFile(`{"__metadata__":{"a":1}}`, nil), "__metadata__ must map strings to strings"},
		{"metadata twice", stFile(`{"__metadata__":{},"__metadata__":{}}`, nil), "__metadata__ appears twice"},
		{"bool byte", stFile(`{"a":{"dtype":"BOOL","shape":[2],"data_offsets":[0,2]}}`, []byte{1, 2}), `tensor "a": element 1: BOOL byte 2`},
		{"u64 too big", stFile(`{"a":{"dtype":"U64","shape":[1],"data_offsets":[0,8]}}`, bytes.Repeat([]byte{0xff}, 8)), "does not fit in int64"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := ReadSafetensors(bytes.NewReader(tc.file), int64(len(tc.file)))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ReadSafetensors(%q) = %v; want an error containing %q", tc.file, err, tc.want)
			}
		})
	}
}

func TestSafetensorsAccepts(t *testing.T) {
	// Gaps between tensors, trailing bytes, unknown fields and empty tensors inside another's
	// range are all allowed; __metadata__ may be null.
	buf := append(f32Bytes(1, 2, 3), 0xee, 0xee)
	hdr := `{"__metadata__":null,"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12],"x":1},` +
		`"z":{"dtype":"F32","shape":[0],"data_offsets":[4,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`
	f := stFile(hdr, buf)
	ts, meta, err := ReadSafetensors(bytes.NewReader(f), int64(len(f)))
	if err != nil {
		t.Fatal(err)
	}
	want := []Tensor{
		{Name: "a", DType: F32, Shape: []int{1}, F32: []float32{1}},
		{Name: "z", DType: F32, Shape: []int{0}, F32: []float32{}},
		{Name: "b", DType: F32, Shape: []int{1}, F32: []float32{3}},
	}
	sameTensors(t, "ReadSafetensors", ts, want)
	if meta != nil {
		t.Errorf("metadata %v; want nil", meta)
	}
}

func TestSafetensorsConversions(t *testing.T) {
	for _, tc := range []struct {
		dt   DType
		raw  []byte
		want []float32
	}{
		{F16, []byte{0x00, 0x3c, 0x01, 0x00, 0x00, 0x80, 0x00, 0x7c, 0xff, 0x7b, 0x00, 0xfc}, []float32{1, 0x1p-24, float32(math.Copysign(0, -1)), float32(math.Inf(1)), 65504, float32(math.Inf(-1))}},
		{BF16, []byte{0x80, 0x3f, 0x49, 0x40}, []float32{1, 3.140625}},
		{F8E5M2, []byte{0x3c, 0x01, 0x7c}, []float32{1, 0x1p-16, float32(math.Inf(1))}},
		{F8E4M3, []byte{0x38, 0x01, 0x7e, 0xb8}, []float32{1, 0x1p-9, 448, -1}},
	} {
		hdr := `{"x":{"dtype":"` + string(tc.dt) + `","shape":[` + strconv.Itoa(len(tc.raw)/tc.dt.Size()) + `],"data_offsets":[0,` + strconv.Itoa(len(tc.raw)) + `]}}`
		f := stFile(hdr, tc.raw)
		ts, _, err := ReadSafetensors(bytes.NewReader(f), int64(len(f)))
		if err != nil {
			t.Fatalf("%s: %v", tc.dt, err)
		}
		for i, w := range tc.want {
			if got := ts[0].F32[i]; math.Float32bits(got) != math.Float32bits(w) {
				t.Errorf("%s element %d (% x) = %v; want %v", tc.dt, i, tc.raw, got, w)
			}
		}
	}
	// NaNs keep being NaN.
	if v := f16to32(0x7e01); !math.IsNaN(float64(v)) {
		t.Errorf("f16to32(0x7e01) = %v; want NaN", v)
	}
	if v := f8e4m3to32(0x7f); !math.IsNaN(float64(v)) {
		t.Errorf("f8e4m3to32(0x7f) = %v; want NaN", v)
	}
	// Every half converts like the float64 formula says.
	for h := range 1 << 16 {
		exp, mant := (h>>10)&0x1f, float64(h&0x3ff)
		var want float64
		switch exp {
		case 0x1f:
			continue
		case 0:
			want = mant * math.Ldexp(1, -24)
		default:
			want = (1 + mant/1024) * math.Ldexp(1, exp-15)
		}
		if h&0x8000 != 0 {
			want = -want
		}
		if got := f16to32(uint16(h)); float64(got) != want {
			t.Fatalf("f16to32(%#04x) = %v; want %v", h, got, want)
		}
	}
}

func TestWriteSafetensorsRejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		ts   []Tensor
		meta map[string]string
		want string
	}{
		{"short data", []Tensor{{Name: "a", Shape: []int{2}, F32: []float32{1}}}, nil, `tensor "a": 1 elements, shape [2] needs 2`},
		{"duplicate", []Tensor{{Name: "a", Shape: []int{}, F32: []float32{1}}, {Name: "a", Shape: []int{}, F32: []float32{1}}}, nil, `tensor "a" appears twice`},
		{"metadata name", []Tensor{{Name: metadataKey, Shape: []int{}, F32: []float32{1}}}, nil, "invalid name"},
		{"empty name", []Tensor{{Name: "", Shape: []int{}, F32: []float32{1}}}, nil, "invalid name"},
		{"negative", []Tensor{{Name: "a", Shape: []int{-1}}}, nil, "negative dimension"},
		{"int with floats", []Tensor{{Name: "a", DType: I32, Shape: []int{1}, F32: []float32{1}}}, nil, "I32 tensor holds F32 data"},
		{"float with ints", []Tensor{{Name: "a", DType: F16, Shape: []int{1}, I64: []int64{1}}}, nil, "floating tensor holds I64 data"},
	} {
		if err := WriteSafetensors(&bytes.Buffer{}, tc.ts, tc.meta); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: WriteSafetensors = %v; want an error containing %q", tc.name, err, tc.want)
		}
	}
}

func TestWriteSafetensorsFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "m.safetensors")
	ts := []Tensor{{Name: "w", DType: BF16, Shape: []int{2}, F32: []float32{1, 2}}, {Name: "n", DType: Bool, Shape: []int{1}, I64: []int64{1}}}
	if err := WriteSafetensorsFile(path, ts, map[string]string{"step": "3"}); err != nil {
		t.Fatal(err)
	}
	// A failed write leaves the old file and no temporary behind.
	bad := []Tensor{{Name: "w", Shape: []int{3}, F32: []float32{1}}}
	if err := WriteSafetensorsFile(path, bad, nil); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("WriteSafetensorsFile(bad) = %v; want an error naming %s", err, path)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("directory holds %d entries after a failed write; want 1", len(entries))
	}
	got, meta, err := ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := []Tensor{{Name: "w", DType: F32, Shape: []int{2}, F32: []float32{1, 2}}, {Name: "n", DType: I64, Shape: []int{1}, I64: []int64{1}}}
	sameTensors(t, "ReadFile after WriteSafetensorsFile", got, want)
	if meta["step"] != "3" {
		t.Errorf("metadata %v", meta)
	}
	// A header of 128 bytes starts the file with 0x80, the first byte of a pickle.
	p128 := filepath.Join(dir, "p128.safetensors")
	hdr := `{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`
	os.WriteFile(p128, stFile(hdr+strings.Repeat(" ", 128-len(hdr)), f32Bytes(5)), 0o644)
	if ts, _, err := ReadFile(p128); err != nil || len(ts) != 1 || ts[0].F32[0] != 5 {
		t.Errorf("ReadFile(safetensors with a 128-byte header) = %v, %v; want a = [5]", ts, err)
	}
	if _, _, err := ReadSafetensorsFile(filepath.Join(dir, "missing")); err == nil {
		t.Error("ReadSafetensorsFile(missing) = nil error")
	}
	trunc := filepath.Join(dir, "trunc.safetensors")
	b, _ := os.ReadFile(path)
	os.WriteFile(trunc, b[:len(b)-1], 0o644)
	if _, _, err := ReadFile(trunc); err == nil || !strings.Contains(err.Error(), trunc) || !strings.Contains(err.Error(), "truncated") {
		t.Errorf("ReadFile(truncated) = %v; want an error naming the file and saying truncated", err)
	}
}
