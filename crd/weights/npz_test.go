package weights

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// npyBytes writes a .npy (format 1.0) of float64 data, or of raw data under any header.
func npyBytes(header string, data []byte) []byte {
	pad := 64 - (10+len(header)+1)%64
	header += strings.Repeat(" ", pad%64) + "\n"
	b := []byte("\x93NUMPY\x01\x00")
	b = binary.LittleEndian.AppendUint16(b, uint16(len(header)))
	b = append(b, header...)
	return append(b, data...)
}

func npyF64(a Array64) []byte {
	var data []byte
	for _, v := range a.Data {
		data = binary.LittleEndian.AppendUint64(data, math.Float64bits(v))
	}
	shape := "("
	for _, d := range a.Shape {
		shape += fmt.Sprintf("%d, ", d)
	}
	shape = strings.TrimSuffix(shape, " ") + ")"
	return npyBytes(fmt.Sprintf("{'descr': '<f8', 'fortran_order': False, 'shape': %s, }", shape), data)
}

func readNPYBytes(b []byte) (Array64, DType, error) {
	return readNPY(bytes.NewReader(b), int64(len(b)))
}

func TestNPY(t *testing.T) {
	f32 := []byte{0, 0, 0x80, 0x3f, 0, 0, 0, 0xc0}   // 1, -2 little-endian
	f32be := []byte{0x3f, 0x80, 0, 0, 0xc0, 0, 0, 0} // 1, -2 big-endian
	f64 := []byte{0, 0, 0, 0, 0, 0, 0xf0, 0x3f}      // 1
	six := f32Bytes(1, 2, 3, 4, 5, 6)                // (2,3) in Fortran order is [[1,3,5],[2,4,6]]
	for _, tc := range []struct {
		name  string
		file  []byte
		shape string
		data  []float64
		want  string // error
	}{
		{"f4", npyBytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", f32), "[2]", []float64{1, -2}, ""},
		{"f4 big-endian", npyBytes("{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }", f32be), "[2]", []float64{1, -2}, ""},
		{"scalar", npyBytes("{'descr': '<f8', 'fortran_order': False, 'shape': (), }", f64), "[]", []float64{1}, ""},
		{"py2 long", npyBytes(`{"descr": "<f8", "shape": (1L,), "fortran_order": False}`, f64), "[1]", []float64{1}, ""},
		{"fortran", npyBytes("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", six), "[2,3]", []float64{1, 3, 5, 2, 4, 6}, ""},
		{"empty", npyBytes("{'descr': '<f8', 'fortran_order': False, 'shape': (0, 5), }", nil), "[0,5]", []float64{}, ""},
		{"int", npyBytes("{'descr': '<i8', 'fortran_order': False, 'shape': (1,), }", f64), "", nil, `dtype "<i8": only float arrays`},
		{"object", npyBytes("{'descr': '|O', 'fortran_order': False, 'shape': (1,), }", f64), "", nil, `dtype "|O"`},
		{"structured", npyBytes("{'descr': [('a', '<f8')], 'fortran_order': False, 'shape': (1,), }", f64), "", nil, "structured dtypes are not supported"},
		{"short data", npyBytes("{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }", f64), "", nil, "needs 16 bytes; the .npy holds 8"},
		{"long data", npyBytes("{'descr': '<f8', 'fortran_order': False, 'shape': (), }", append(f64, 0)), "", nil, "needs 8 bytes; the .npy holds 9"},
		{"huge shape", npyBytes("{'descr': '<f8', 'fortran_order': False, 'shape': (4294967296, 4294967296), }", nil), "", nil, "overflows"},
		{"negative", npyBytes("{'descr': '<f8', 'fortran_order': False, 'shape': (-1,), }", nil), "", nil, "non-negative integer"},
		{"missing key", npyBytes("{'descr': '<f8', 'shape': (1,), }", f64), "", nil, "needs descr, fortran_order and shape"},
		{"extra key", npyBytes("{'descr': '<f8', 'fortran_order': False, 'shape': (1,), 'x': 1}", f64), "", nil, `unknown key "x"`},
		{"repeated key", npyBytes("{'descr': '<f8', 'descr': '<f8', 'fortran_order': False, 'shape': (1,)}", f64), "", nil, `key "descr" twice`},
		{"bad magic", append([]byte("\x93NUMPX\x01\x00\x00\x00"), f64...), "", nil, "no .npy magic"},
		{"version 4", []byte("\x93NUMPY\x04\x00\x00\x00\x00\x00"), "", nil, "format version 4.0"},
		{"header past end", []byte("\x93NUMPY\x01\x00\xff\x00{}"), "", nil, "header of 255 bytes in a 12-byte .npy"},
		{"v2 header huge", []byte("\x93NUMPY\x02\x00\xff\xff\xff\xff{}"), "", nil, "header of 4294967295 bytes"},
		{"short", []byte("\x93NUMPY"), "", nil, "shorter than its preamble"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, _, err := readNPYBytes(tc.file)
			if tc.want != "" {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("readNPY = %v; want an error containing %q", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if jsonShape(a.Shape) != tc.shape || fmt.Sprint(a.Data) != fmt.Sprint(tc.data) {
				t.Fatalf("readNPY = shape %v data %v; want %s %v", a.Shape, a.Data, tc.shape, tc.data)
			}
		})
	}
}

func TestReadNPZRejects(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, entries map[string][]byte, method uint16) string {
		var b bytes.Buffer
		zw := zip.NewWriter(&b)
		for n, data := range entries {
			w, _ := zw.CreateHeader(&zip.FileHeader{Name: n, Method: method})
			w.Write(data)
		}
		zw.Close()
		p := filepath.Join(dir, name)
		os.WriteFile(p, b.Bytes(), 0o644)
		return p
	}
	good := npyF64(Array64{Shape: []int{2}, Data: []float64{1, 2}})
	if m, err := ReadNPZ(write("ok.npz", map[string][]byte{"a.npy": good}, zip.Deflate)); err != nil || fmt.Sprint(m["a"].Data) != "[1 2]" {
		t.Fatalf("ReadNPZ(deflated) = %v, %v", m, err)
	}
	for _, tc := range []struct {
		path, want string
	}{
		{write("txt.npz", map[string][]byte{"a.txt": good}, zip.Store), "entry a.txt is not a .npy"},
		{write("bad.npz", map[string][]byte{"m.npy": good[:len(good)-1]}, zip.Store), `array "m": shape [2] of <f8 needs 16 bytes; the .npy holds 15`},
		{write("none.npz", nil, zip.Store), "no .npy entries"},
		{filepath.Join(dir, "missing.npz"), "no such file"},
	} {
		_, err := ReadNPZ(tc.path)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.path) {
			t.Errorf("ReadNPZ(%s) = %v; want an error naming the file and containing %q", tc.path, err, tc.want)
		}
	}
}

func TestFortranToC(t *testing.T) {
	// A (2,3,4) array with element value 100i+10j+k, laid out column-major.
	shape := []int{2, 3, 4}
	var src []float64
	for k := range 4 {
		for j := range 3 {
			for i := range 2 {
				src = append(src, float64(100*i+10*j+k))
			}
		}
	}
	got := fortranToC(src, shape)
	for i := range 2 {
		for j := range 3 {
			for k := range 4 {
				if v := got[(i*3+j)*4+k]; v != float64(100*i+10*j+k) {
					t.Fatalf("fortranToC: [%d,%d,%d] = %v; want %d", i, j, k, v, 100*i+10*j+k)
				}
			}
		}
	}
}
