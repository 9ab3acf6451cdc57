package allreduce

import (
	"encoding/binary"
	"math"
	"unsafe"
)

// littleEndian reports whether float32 values sit in memory in wire order, so a
// []float32 can be sent and received through a byte view without conversion.
var littleEndian = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

// wireBytes returns the wire image of f (little-endian float32). On little-endian
// machines it shares f's memory; otherwise it encodes into scratch, which must hold
// 4*len(f) bytes.
func wireBytes(f []float32, scratch []byte) []byte {
	if len(f) == 0 {
		return nil
	}
	if littleEndian {
		return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(f))), 4*len(f))
	}
	b := scratch[:4*len(f)]
	for i, v := range f {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
	}
	return b
}

// float32View returns src viewed as float32 values when that is possible without a
// copy (little-endian machine, 4-byte aligned), and ok=false otherwise.
func float32View(src []byte) (f []float32, ok bool) {
	if !littleEndian || len(src) == 0 || uintptr(unsafe.Pointer(unsafe.SliceData(src)))%4 != 0 {
		return nil, false
	}
	return unsafe.Slice((*float32)(unsafe.Pointer(unsafe.SliceData(src))), len(src)/4), true
}

// addWire adds the little-endian float32 values of src (4*len(dst) bytes) into dst:
// dst[i] = src[i] + dst[i]. IEEE addition is commutative, so the order of the two
// operands does not change the bits; the order of the chain across ranks does, and
// that is fixed by the Plan.
func addWire(dst []float32, src []byte) {
	src = src[:4*len(dst)]
	if f, ok := float32View(src); ok {
		f = f[:len(dst)]
		for i := range dst {
			dst[i] += f[i]
		}
		return
	}
	for i := range dst {
		dst[i] += math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
	}
}

// copyWire sets dst to the little-endian float32 values of src (4*len(dst) bytes).
func copyWire(dst []float32, src []byte) {
	src = src[:4*len(dst)]
	if littleEndian {
		copy(wireBytes(dst, nil), src)
		return
	}
	for i := range dst {
		dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
	}
}
