// Package weights reads and writes files of named arrays: safetensors, PyTorch's
// torch.save format (zip since torch 1.6, and the older pickle stream), and numpy's .npz.
// It knows nothing of models or of the engine: it moves named arrays, validated.
//
// Every reader treats its input as hostile. Header fields are checked against the size of
// the file (or zip entry) and against fixed caps before anything is allocated from them, so
// a truncated or malicious file is an error that names the file and the tensor, never a
// panic or an allocation larger than a small multiple of the input. Each reader has a fuzz
// target in this package.
//
// Floating data of any stored width comes back as float32 (Tensor.F32) and integer and
// boolean data as int64 (Tensor.I64); Tensor.DType says what the file stored. Byte order
// is little-endian everywhere, as in the formats.
//
// Why safetensors is written here rather than taken from github.com/nlpodyssey/safetensors
// (the Go library served here, evaluated at v0.0.0-20250209183917): it deserialises from a
// []byte holding the whole file (a 528 MB VGG16 would be read in full before any check),
// its serialiser orders tensors by dtype then name instead of the caller's order, it lets
// json.Unmarshal silently keep the last of two tensors with the same name, and its errors
// name neither the file nor the tensor. The format is ~250 lines; owning them lets every
// check run before the buffer is read, tensor by tensor through an io.ReaderAt.
package weights

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
)

// DType of a stored tensor, spelled as safetensors spells it.
type DType string

// The dtypes the readers know. Floating ones decode to float32, the others to int64.
const (
	F64    DType = "F64"
	F32    DType = "F32"
	F16    DType = "F16"
	BF16   DType = "BF16"
	F8E4M3 DType = "F8_E4M3"
	F8E5M2 DType = "F8_E5M2"
	I64    DType = "I64"
	I32    DType = "I32"
	I16    DType = "I16"
	I8     DType = "I8"
	U64    DType = "U64"
	U32    DType = "U32"
	U16    DType = "U16"
	U8     DType = "U8"
	Bool   DType = "BOOL"
)

// Size returns the bytes one element of d takes in a file, or 0 for an unknown dtype.
func (d DType) Size() int {
	switch d {
	case F64, I64, U64:
		return 8
	case F32, I32, U32:
		return 4
	case F16, BF16, I16, U16:
		return 2
	case F8E4M3, F8E5M2, I8, U8, Bool:
		return 1
	}
	return 0
}

// IsFloat reports whether d decodes into Tensor.F32 (true) or Tensor.I64 (false).
func (d DType) IsFloat() bool {
	switch d {
	case F64, F32, F16, BF16, F8E4M3, F8E5M2:
		return true
	}
	return false
}

// Tensor is one named array, row-major (C order). Floating data is converted to float32 in
// F32 (float64 originals too, rounded to nearest); integer and boolean data (e.g. BatchNorm's
// num_batches_tracked, int64) goes to I64. Exactly one of F32 and I64 is used, as DType says;
// its length is the product of Shape (1 for a scalar, Shape empty).
type Tensor struct {
	Name  string
	DType DType // dtype as stored in the file
	Shape []int
	F32   []float32
	I64   []int64
}

// Numel returns the number of elements that Shape describes.
func (t *Tensor) Numel() int {
	n := 1
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// ReadFile reads a file of tensors in any format this package knows, chosen by its first
// bytes, not by its name: safetensors (with its __metadata__), a PyTorch zip or legacy
// torch.save file, or a numpy .npz (float64 arrays are rounded to float32). The metadata is
// nil for formats that have none.
func ReadFile(path string) ([]Tensor, map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("weights: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, nil, fmt.Errorf("weights: %w", err)
	}
	size := st.Size()
	var head [512]byte
	n, err := f.ReadAt(head[:], 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, nil, fmt.Errorf("weights: %s: %w", path, err)
	}
	h := head[:n]
	switch {
	// First: a safetensors header length may start with any byte, 0x80 and 'P' included.
	case n >= 9 && h[8] == '{':
		ts, meta, err := readSafetensors(f, size)
		if err != nil {
			return nil, nil, fmt.Errorf("weights: %s: %w", path, err)
		}
		return ts, meta, nil
	case bytes.HasPrefix(h, []byte("PK\x03\x04")) || bytes.HasPrefix(h, []byte("PK\x05\x06")):
		zr, err := openZip(f, size)
		if err != nil {
			return nil, nil, fmt.Errorf("weights: %s: %w", path, err)
		}
		if _, ok := torchPrefix(zr); ok {
			ts, err := readTorchZip(zr, f, size)
			if err != nil {
				return nil, nil, fmt.Errorf("weights: %s: %w", path, err)
			}
			return ts, nil, nil
		}
		arrs, err := readNPZ(zr, size)
		if err != nil {
			return nil, nil, fmt.Errorf("weights: %s: %w", path, err)
		}
		ts := make([]Tensor, len(arrs))
		for i, a := range arrs {
			f32 := make([]float32, len(a.Data))
			for j, v := range a.Data {
				f32[j] = float32(v)
			}
			ts[i] = Tensor{Name: a.name, DType: a.dtype, Shape: a.Shape, F32: f32}
		}
		return ts, nil, nil
	case n > 0 && h[0] == 0x80, isTar(h):
		ts, err := readPyTorch(f, size)
		if err != nil {
			return nil, nil, fmt.Errorf("weights: %s: %w", path, err)
		}
		return ts, nil, nil
	}
	return nil, nil, fmt.Errorf("weights: %s: unknown format (first bytes % x): want safetensors, a torch.save file or .npz", path, h[:min(n, 8)])
}

// numel returns the product of dims, or an error if a dimension is negative or the product
// (or the product times itemSize bytes) does not fit in an int64. As in the safetensors
// reference, a product that overflows before a zero dimension is still an error.
func numel(dims []int64, itemSize int) (int64, error) {
	n := int64(1)
	for _, d := range dims {
		if d < 0 {
			return 0, fmt.Errorf("negative dimension in shape %v", dims)
		}
		if d != 0 && n > math.MaxInt64/d {
			return 0, fmt.Errorf("shape %v overflows int64", dims)
		}
		n *= d
	}
	if itemSize > 0 && n > math.MaxInt64/int64(itemSize) {
		return 0, fmt.Errorf("shape %v of %d-byte elements overflows int64", dims, itemSize)
	}
	return n, nil
}

func intShape(dims []int64) []int {
	s := make([]int, len(dims))
	for i, d := range dims {
		s[i] = int(d)
	}
	return s
}

// decodeInto converts the little-endian elements in b (whole elements of dt) into t's data
// starting at element i0. t.F32 or t.I64 must already have room.
func decodeInto(t *Tensor, dt DType, b []byte, i0 int) {
	n := len(b) / dt.Size()
	switch dt {
	case F32:
		out := t.F32[i0 : i0+n]
		for i := range out {
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
		}
	case F64:
		out := t.F32[i0 : i0+n]
		for i := range out {
			out[i] = float32(math.Float64frombits(binary.LittleEndian.Uint64(b[8*i:])))
		}
	case F16:
		out := t.F32[i0 : i0+n]
		for i := range out {
			out[i] = f16to32(binary.LittleEndian.Uint16(b[2*i:]))
		}
	case BF16:
		out := t.F32[i0 : i0+n]
		for i := range out {
			out[i] = math.Float32frombits(uint32(binary.LittleEndian.Uint16(b[2*i:])) << 16)
		}
	case F8E5M2:
		out := t.F32[i0 : i0+n]
		for i := range out {
			out[i] = f16to32(uint16(b[i]) << 8) // E5M2 is the top byte of an IEEE half
		}
	case F8E4M3:
		out := t.F32[i0 : i0+n]
		for i := range out {
			out[i] = f8e4m3to32(b[i])
		}
	case I64, U64: // U64 values above MaxInt64 are rejected by the caller's check
		out := t.I64[i0 : i0+n]
		for i := range out {
			out[i] = int64(binary.LittleEndian.Uint64(b[8*i:]))
		}
	case I32:
		out := t.I64[i0 : i0+n]
		for i := range out {
			out[i] = int64(int32(binary.LittleEndian.Uint32(b[4*i:])))
		}
	case U32:
		out := t.I64[i0 : i0+n]
		for i := range out {
			out[i] = int64(binary.LittleEndian.Uint32(b[4*i:]))
		}
	case I16:
		out := t.I64[i0 : i0+n]
		for i := range out {
			out[i] = int64(int16(binary.LittleEndian.Uint16(b[2*i:])))
		}
	case U16:
		out := t.I64[i0 : i0+n]
		for i := range out {
			out[i] = int64(binary.LittleEndian.Uint16(b[2*i:]))
		}
	case I8:
		out := t.I64[i0 : i0+n]
		for i := range out {
			out[i] = int64(int8(b[i]))
		}
	case U8, Bool:
		out := t.I64[i0 : i0+n]
		for i := range out {
			out[i] = int64(b[i])
		}
	default:
		panic("weights: decodeInto: unchecked dtype " + string(dt))
	}
}

// checkDecoded rejects values that do not survive the conversion to int64 or that the
// dtype cannot hold: a U64 above MaxInt64, a BOOL byte other than 0 and 1.
func checkDecoded(t *Tensor) error {
	switch t.DType {
	case U64:
		for i, v := range t.I64 {
			if v < 0 {
				return fmt.Errorf("element %d: U64 value %d does not fit in int64", i, uint64(v))
			}
		}
	case Bool:
		for i, v := range t.I64 {
			if v != 0 && v != 1 {
				return fmt.Errorf("element %d: BOOL byte %d is neither 0 nor 1", i, v)
			}
		}
	}
	return nil
}

// allocData gives t room for n elements of its dtype.
func allocData(t *Tensor, n int) {
	if t.DType.IsFloat() {
		t.F32 = make([]float32, n)
	} else {
		t.I64 = make([]int64, n)
	}
}

// f16to32 converts IEEE 754 binary16 bits to float32, exactly (subnormals, infinities and
// NaN payloads included).
func f16to32(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h) & 0x3ff
	switch {
	case exp == 0x1f: // inf or NaN
		return math.Float32frombits(sign | 0xff<<23 | mant<<13)
	case exp != 0:
		return math.Float32frombits(sign | (exp+127-15)<<23 | mant<<13)
	case mant == 0:
		return math.Float32frombits(sign)
	}
	// subnormal: mant × 2^-24
	v := float32(mant) * (1.0 / (1 << 24))
	if sign != 0 {
		v = -v
	}
	return v
}

// f8e4m3to32 converts float8 e4m3fn (bias 7, no infinities, S.1111.111 is NaN) to float32.
func f8e4m3to32(b byte) float32 {
	neg := b&0x80 != 0
	exp := int(b>>3) & 0xf
	mant := float32(b & 7)
	var v float32
	switch {
	case exp == 0xf && b&7 == 7:
		v = float32(math.NaN())
	case exp == 0:
		v = mant / 8 * (1.0 / 64) // subnormal: mant/8 × 2^-6
	default:
		v = (1 + mant/8) * float32(math.Ldexp(1, exp-7))
	}
	if neg {
		v = -v
	}
	return v
}
