package weights

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/metrics"
	"testing"
)

// sameTensors fails t unless got and want hold the same names, dtypes, shapes and data,
// bit for bit, in the same order.
func sameTensors(t *testing.T, label string, got, want []Tensor) {
	t.Helper()
	if err := diffTensors(got, want); err != nil {
		t.Fatalf("%s: %v", label, err)
	}
}

func diffTensors(got, want []Tensor) error {
	if len(got) != len(want) {
		return fmt.Errorf("%d tensors %v; want %d %v", len(got), names(got), len(want), names(want))
	}
	for i := range got {
		g, w := &got[i], &want[i]
		if g.Name != w.Name {
			return fmt.Errorf("tensor %d is %q; want %q", i, g.Name, w.Name)
		}
		if g.DType != w.DType {
			return fmt.Errorf("tensor %q: dtype %s; want %s", g.Name, g.DType, w.DType)
		}
		if fmt.Sprint(g.Shape) != fmt.Sprint(w.Shape) {
			return fmt.Errorf("tensor %q: shape %v; want %v", g.Name, g.Shape, w.Shape)
		}
		if err := sameData(g, w); err != nil {
			return fmt.Errorf("tensor %q: %w", g.Name, err)
		}
	}
	return nil
}

// sameData compares the data only (not the dtype), bit for bit.
func sameData(g, w *Tensor) error {
	if len(g.F32) != len(w.F32) || len(g.I64) != len(w.I64) {
		return fmt.Errorf("%d F32 + %d I64 elements; want %d + %d", len(g.F32), len(g.I64), len(w.F32), len(w.I64))
	}
	for j := range g.F32 {
		if math.Float32bits(g.F32[j]) != math.Float32bits(w.F32[j]) {
			return fmt.Errorf("F32[%d] = %v; want %v", j, g.F32[j], w.F32[j])
		}
	}
	for j := range g.I64 {
		if g.I64[j] != w.I64[j] {
			return fmt.Errorf("I64[%d] = %d; want %d", j, g.I64[j], w.I64[j])
		}
	}
	return nil
}

func names(ts []Tensor) []string {
	var s []string
	for _, t := range ts {
		s = append(s, t.Name)
	}
	return s
}

// pythonFixtures writes the reference files with /usr/bin/python3 and PyTorch into a
// temporary directory, or skips the test saying why.
func pythonFixtures(t *testing.T) string {
	t.Helper()
	const py = "/usr/bin/python3"
	if out, err := exec.Command(py, "-c", "import torch, numpy").CombinedOutput(); err != nil {
		skipWithoutPython(t, "%s cannot import torch and numpy (%v: %s): install python3-torch (make deps)", py, err, bytes.TrimSpace(out))
	}
	dir := t.TempDir()
	out, err := exec.Command(py, filepath.Join("testdata", "make_fixtures.py"), dir).CombinedOutput()
	if err != nil {
		t.Fatalf("make_fixtures.py: %v\n%s", err, out)
	}
	return dir
}

// pk assembles pickles by hand, opcode by opcode, for inputs torch does not write.
type pk struct{ bytes.Buffer }

func (p *pk) op(b ...byte) *pk { p.Write(b); return p }

func (p *pk) str(s string) *pk { // BINUNICODE
	p.WriteByte('X')
	binary.Write(&p.Buffer, binary.LittleEndian, uint32(len(s)))
	p.WriteString(s)
	return p
}

func (p *pk) str2(s string) *pk { // SHORT_BINSTRING, a Python 2 str
	p.WriteByte('U')
	p.WriteByte(byte(len(s)))
	p.WriteString(s)
	return p
}

func (p *pk) int(v int64) *pk {
	if v >= 0 && v < 256 {
		return p.op('K', byte(v))
	}
	if v >= math.MinInt32 && v <= math.MaxInt32 {
		p.WriteByte('J')
		binary.Write(&p.Buffer, binary.LittleEndian, int32(v))
		return p
	}
	p.op(0x8a, 8)
	binary.Write(&p.Buffer, binary.LittleEndian, v)
	return p
}

func (p *pk) global(mod, name string) *pk {
	p.WriteByte('c')
	p.WriteString(mod + "\n" + name + "\n")
	return p
}

func (p *pk) ints(vs ...int64) *pk {
	p.op('(')
	for _, v := range vs {
		p.int(v)
	}
	return p.op('t')
}

// pkTensor describes one tensor of a hand-built state dict.
type pkTensor struct {
	name         string
	storageType  string // e.g. FloatStorage
	key          string
	storageNumel int64
	offset       int64
	size, stride []int64
	v1           bool    // torch._utils._rebuild_tensor (torch <= 0.3) instead of _v2
	view         []int64 // legacy storage view (offset, numel) with key key+"v"
	py2          bool    // keys as Python 2 str
}

// stateDictPickle pickles an OrderedDict of the tensors the way torch.save does.
func stateDictPickle(ts []pkTensor, legacy bool) []byte { return stateDictPickleAs(ts, legacy, false) }

// stateDictPickleAs pickles as Python 2 does, OrderedDict([[k, v], …]), if py2 is set.
func stateDictPickleAs(ts []pkTensor, legacy, py2 bool) []byte {
	var p pk
	p.op(0x80, 2).global("collections", "OrderedDict")
	if py2 {
		p.op('(', ']', '(')
	} else {
		p.op(')', 'R', '(')
	}
	for _, t := range ts {
		if py2 {
			p.op('(')
		}
		if t.py2 {
			p.str2(t.name)
		} else {
			p.str(t.name)
		}
		if t.v1 {
			p.global("torch._utils", "_rebuild_tensor")
		} else {
			p.global("torch._utils", "_rebuild_tensor_v2")
		}
		p.op('(', '(').str("storage").global("torch", t.storageType).str(t.key).str("cpu").int(t.storageNumel)
		if legacy {
			if t.view != nil {
				p.op('(').str(t.key + "v").int(t.view[0]).int(t.view[1]).op('t')
			} else {
				p.op('N')
			}
		}
		p.op('t', 'Q').int(t.offset).ints(t.size...).ints(t.stride...)
		if !t.v1 {
			p.op(0x89).global("collections", "OrderedDict").op(')', 'R')
		}
		p.op('t', 'R')
		if py2 {
			p.op('l')
		}
	}
	if py2 {
		p.op('e', 't', 'R', '.')
	} else {
		p.op('u', '.')
	}
	return p.Bytes()
}

// torchZip wraps a data.pkl and its storages the way torch.save does (stored entries).
func torchZip(pkl []byte, storages map[string][]byte, extra map[string]string) []byte {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	put := func(name string, b []byte) {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: name, Method: zip.Store})
		if err != nil {
			panic(err)
		}
		w.Write(b)
	}
	put("archive/data.pkl", pkl)
	for k, b := range storages {
		put("archive/data/"+k, b)
	}
	for k, v := range extra {
		put("archive/"+k, []byte(v))
	}
	put("archive/version", []byte("3\n"))
	zw.Close()
	return buf.Bytes()
}

// legacyFile builds the pre-1.6 stream: magic, protocol, sys info, object, keys, storages.
func legacyFile(obj []byte, keys []string, storages map[string][]byte, elemSize map[string]int) []byte {
	var b bytes.Buffer
	var p pk
	p.op(0x80, 2, 0x8a, 10).WriteString(legacyMagic)
	p.op('.')
	b.Write(p.Bytes())
	p.Reset()
	p.op(0x80, 2).int(1001).op('.')
	b.Write(p.Bytes())
	p.Reset()
	p.op(0x80, 2, '}', '(').str("protocol_version").int(1001).str("little_endian").op(0x88).op('u', '.')
	b.Write(p.Bytes())
	b.Write(obj)
	p.Reset()
	p.op(0x80, 2, ']', '(')
	for _, k := range keys {
		p.str(k)
	}
	p.op('e', '.')
	b.Write(p.Bytes())
	for _, k := range keys {
		binary.Write(&b, binary.LittleEndian, int64(len(storages[k])/elemSize[k]))
		b.Write(storages[k])
	}
	return b.Bytes()
}

func f32Bytes(vs ...float32) []byte {
	b := make([]byte, 0, 4*len(vs))
	for _, v := range vs {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
	}
	return b
}

// allocBound fails when decoding len(input) bytes allocated more than the readers promise:
// a small multiple of the input (8× for U8→I64, the pickle's objects, deflate's expansion
// bounded by maxDeflateRatio) plus fixed buffers. It reads the runtime's cumulative
// allocation counter through runtime/metrics: 0.7 µs a read, where runtime.ReadMemStats
// stops the world (24 µs here, and a quarter of a fuzz execution's time). The counter
// sees small objects a span at a time, kilobytes, far below the megabytes bounded.
func allocBound(t *testing.T, inputLen int, f func()) {
	t.Helper()
	limit := uint64(8<<20) + 2*maxDeflateRatio*uint64(inputLen)
	if got := allocated(f); got > limit {
		t.Fatalf("decoding %d bytes allocated %d bytes; limit %d", inputLen, got, limit)
	}
}

// skipWithoutPython skips a test that needs /usr/bin/python3 with its
// packages, and fails it where CRDGO_CI is set (.ci/run sets it): CI installs
// them, so a missing one there is a broken environment, not a reason to pass.
func skipWithoutPython(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv("CRDGO_CI") != "" {
		t.Fatalf("CRDGO_CI is set: "+format, args...)
	}
	t.Skipf(format, args...)
}

// allocated is how many bytes f allocated on the heap.
func allocated(f func()) uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	metrics.Read(s)
	before := s[0].Value.Uint64()
	f()
	metrics.Read(s)
	return s[0].Value.Uint64() - before
}

var sink []byte

// TestAllocated: the counter allocBound reads sees a large allocation whole and
// small ones within a few KiB.
func TestAllocated(t *testing.T) {
	if got := allocated(func() { sink = make([]byte, 16<<20) }); got < 16<<20 {
		t.Errorf("allocated(16 MiB) = %d", got)
	}
	if got := allocated(func() {
		for range 1000 {
			sink = make([]byte, 1000)
		}
	}); got < 1000*1000-64<<10 || got > 2<<20 {
		t.Errorf("allocated(1000 × 1000 B) = %d; want about 1 MB", got)
	}
}
