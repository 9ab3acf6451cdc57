package weights

import (
	"archive/zip"
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strings"
)

// ReadPyTorch reads a state dict saved by torch.save: the zip format of torch >= 1.6 or the
// legacy pickle stream of older versions (torchvision's and pytorch-fid's published weights
// are in that one). Tensors come back in the state dict's order, made contiguous whatever
// their storage offset and strides; float32/float16/bfloat16/float64 storages go to F32,
// integer and bool storages to I64.
//
// The pickled object must be a dict of name → tensor. A checkpoint dict that holds its
// tensors one level down is flattened by picking that sub-dict: the value of "state_dict"
// if it is a dict, else that of "model"; the rest of the checkpoint (epoch, optimizer
// state …) is ignored, and its tensors are not read. Pickled modules or other objects are
// refused with the name of the global they need. The old tar format (torch < 0.1.10) is
// not supported.
func ReadPyTorch(path string) ([]Tensor, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("weights: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("weights: %w", err)
	}
	ts, err := readPyTorch(f, st.Size())
	if err != nil {
		return nil, fmt.Errorf("weights: %s: %w", path, err)
	}
	return ts, nil
}

// Limits on what a torch file may ask the reader to allocate.
const (
	// maxStorageBytes caps one storage (zip entry or legacy record), in bytes.
	maxStorageBytes = 16 << 30
	// maxDeflateRatio bounds a compressed zip entry's declared size by its compressed size
	// (deflate cannot exceed ~1032:1), so a lying header cannot size a huge buffer.
	maxDeflateRatio = 1100
	// A state dict's tensors may view their storages more than once (tied weights), but not
	// without bound: all tensors together may hold at most outputFactor × the elements of the
	// storages they view, plus outputSlack.
	outputFactor = 4
	outputSlack  = 1 << 16
)

func readPyTorch(r io.ReaderAt, size int64) ([]Tensor, error) {
	var head [512]byte
	n, err := r.ReadAt(head[:], 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	h := head[:n]
	switch {
	case bytes.HasPrefix(h, []byte("PK\x03\x04")) || bytes.HasPrefix(h, []byte("PK\x05\x06")):
		zr, err := openZip(r, size)
		if err != nil {
			return nil, err
		}
		return readTorchZip(zr, r, size)
	case n > 0 && h[0] == 0x80:
		return readTorchLegacy(r, size)
	case isTar(h):
		return nil, errors.New("tar torch.save format of torch < 0.1.10: re-save with torch>=1.6")
	}
	return nil, fmt.Errorf("not a torch.save file (first bytes % x)", h[:min(n, 8)])
}

func isTar(h []byte) bool { return len(h) >= 262 && string(h[257:262]) == "ustar" }

func openZip(r io.ReaderAt, size int64) (*zip.Reader, error) {
	zr, err := zip.NewReader(r, size)
	if err != nil && !errors.Is(err, zip.ErrInsecurePath) { // names are only looked up, never extracted
		return nil, fmt.Errorf("zip: %w", err)
	}
	return zr, nil
}

// openEntry opens a zip entry after checking its declared size against limit, the archive
// size and, for compressed entries, the most deflate can expand; it returns the size.
func openEntry(f *zip.File, archive, limit int64) (io.ReadCloser, int64, error) {
	us, cs := f.UncompressedSize64, f.CompressedSize64
	if us > uint64(limit) {
		return nil, 0, fmt.Errorf("entry %s: %d bytes exceed the %d-byte limit", f.Name, us, limit)
	}
	if cs > uint64(archive) {
		return nil, 0, fmt.Errorf("entry %s: %d compressed bytes in a %d-byte file", f.Name, cs, archive)
	}
	switch f.Method {
	case zip.Store:
		if us != cs {
			return nil, 0, fmt.Errorf("entry %s: stored with %d bytes but declares %d", f.Name, cs, us)
		}
	case zip.Deflate:
		if us > maxDeflateRatio*cs+1024 {
			return nil, 0, fmt.Errorf("entry %s: %d bytes declared from %d compressed", f.Name, us, cs)
		}
	default:
		return nil, 0, fmt.Errorf("entry %s: compression method %d", f.Name, f.Method)
	}
	rc, err := f.Open()
	if err != nil {
		return nil, 0, fmt.Errorf("entry %s: %w", f.Name, err)
	}
	return rc, int64(us), nil
}

// readSmallEntry reads a whole entry of at most limit bytes.
func readSmallEntry(f *zip.File, archive, limit int64) ([]byte, error) {
	rc, n, err := openEntry(f, archive, limit)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b := make([]byte, n)
	if _, err := io.ReadFull(rc, b); err != nil {
		return nil, fmt.Errorf("entry %s: %w", f.Name, noEOF(err))
	}
	return b, nil
}

// torchPrefix returns the archive's top folder if it holds <prefix>/data.pkl.
func torchPrefix(zr *zip.Reader) (string, bool) {
	for _, f := range zr.File {
		dir, file, ok := strings.Cut(f.Name, "/")
		if ok && file == "data.pkl" {
			return dir, true
		}
	}
	return "", false
}

// readTorchZip reads the torch.save zip zr of the size bytes in r.
func readTorchZip(zr *zip.Reader, r io.ReaderAt, size int64) ([]Tensor, error) {
	prefix, ok := torchPrefix(zr)
	if !ok {
		return nil, errors.New("zip without <prefix>/data.pkl: not a torch.save file")
	}
	entries := map[string]*zip.File{}
	for _, f := range zr.File {
		rest, ok := strings.CutPrefix(f.Name, prefix+"/")
		if !ok {
			continue
		}
		if _, dup := entries[rest]; dup {
			return nil, fmt.Errorf("zip holds %s twice", f.Name)
		}
		entries[rest] = f
	}
	if f, ok := entries["byteorder"]; ok {
		b, err := readSmallEntry(f, size, 16)
		if err != nil {
			return nil, err
		}
		if string(b) != "little" {
			return nil, fmt.Errorf("byteorder %q: only little-endian files are supported", b)
		}
	}
	rc, n, err := openEntry(entries["data.pkl"], size, maxPickleBytes)
	if err != nil {
		return nil, err
	}
	obj, storages, err := unpickle(&pickleReader{r: bufio.NewReader(rc), left: n})
	rc.Close()
	if err != nil {
		return nil, fmt.Errorf("%s/data.pkl: %w", prefix, err)
	}
	// Validate every storage against its entry before any tensor is read.
	for key, s := range storages {
		f, ok := entries["data/"+key]
		if !ok {
			return nil, fmt.Errorf("storage %q: no entry %s/data/%s", key, prefix, key)
		}
		want := s.numel * int64(s.dtype.Size())
		if s.numel > maxStorageBytes/int64(s.dtype.Size()) || f.UncompressedSize64 != uint64(want) {
			return nil, fmt.Errorf("storage %q: entry %s holds %d bytes; %d×%s needs %d", key, f.Name, f.UncompressedSize64, s.numel, s.dtype, want)
		}
	}
	open := func(s *storageRef, off int64) (io.ReadCloser, error) {
		f := entries["data/"+s.key]
		n := int64(f.UncompressedSize64)
		if f.Method == zip.Store { // torch stores, never compresses: seek instead of reading
			at, err := f.DataOffset()
			if err != nil {
				return nil, fmt.Errorf("entry %s: %w", f.Name, err)
			}
			if at < 0 || at > size-n {
				return nil, fmt.Errorf("entry %s: %d bytes at %d run past the %d-byte file", f.Name, n, at, size)
			}
			return io.NopCloser(io.NewSectionReader(r, at+off, n-off)), nil
		}
		rc, _, err := openEntry(f, size, maxStorageBytes)
		if err != nil {
			return nil, err
		}
		if _, err := io.CopyN(io.Discard, rc, off); err != nil {
			rc.Close()
			return nil, fmt.Errorf("entry %s: skipping %d bytes: %w", f.Name, off, noEOF(err))
		}
		return rc, nil
	}
	return materialize(obj, open)
}

// legacyMagic is torch's MAGIC_NUMBER, 0x1950a86a20f9469cfc6c, as pickle's LONG1 bytes.
const legacyMagic = "\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"

// readTorchLegacy reads the pre-1.6 format: five pickles (magic number, protocol version,
// system info, the object, the list of storage keys) followed by each storage in key order
// as an int64 element count and its raw bytes.
func readTorchLegacy(r io.ReaderAt, size int64) ([]Tensor, error) {
	var off int64
	next := func(what string) (any, map[string]*storageRef, error) {
		p := &pickleReader{r: bufio.NewReader(io.NewSectionReader(r, off, size-off)), left: min(size-off, maxPickleBytes)}
		v, st, err := unpickle(p)
		if err != nil {
			return nil, nil, fmt.Errorf("legacy torch.save %s at byte %d: %w", what, off, err)
		}
		off += p.pos
		return v, st, nil
	}
	magic, _, err := next("magic number")
	if err != nil {
		return nil, err
	}
	if m, ok := magic.(pyLong); !ok || string(m) != legacyMagic {
		return nil, errors.New("pickle without torch's magic number: not a torch.save file")
	}
	proto, _, err := next("protocol version")
	if err != nil {
		return nil, err
	}
	if proto != int64(1001) {
		return nil, fmt.Errorf("legacy torch.save protocol %v, want 1001", proto)
	}
	sys, _, err := next("system info")
	if err != nil {
		return nil, err
	}
	if d, ok := sys.(*pyDict); !ok {
		return nil, errors.New("legacy torch.save system info is not a dict")
	} else if le, ok := d.get("little_endian"); ok && le != true {
		return nil, errors.New("legacy torch.save file written on a big-endian machine")
	}
	obj, storages, err := next("object")
	if err != nil {
		return nil, err
	}
	keysV, _, err := next("storage keys")
	if err != nil {
		return nil, err
	}
	keys, ok := keysV.(*pyList)
	if !ok {
		return nil, fmt.Errorf("legacy torch.save storage keys are a %s, not a list", typeName(keysV))
	}
	if len(keys.items) != len(storages) {
		return nil, fmt.Errorf("legacy torch.save lists %d storages; the object uses %d", len(keys.items), len(storages))
	}
	// Walk the records to find each storage's bytes; nothing is read but the counts.
	at := map[string]int64{}
	for _, kv := range keys.items {
		key, ok := kv.(string)
		if !ok {
			return nil, fmt.Errorf("legacy torch.save storage key is a %s", typeName(kv))
		}
		s, ok := storages[key]
		if !ok {
			return nil, fmt.Errorf("storage %q: listed but not used by the object", key)
		}
		if _, dup := at[key]; dup {
			return nil, fmt.Errorf("storage %q: listed twice", key)
		}
		var cnt [8]byte
		if off > size-8 {
			return nil, fmt.Errorf("storage %q: truncated file: record at byte %d of %d", key, off, size)
		}
		if _, err := r.ReadAt(cnt[:], off); err != nil {
			return nil, fmt.Errorf("storage %q: %w", key, err)
		}
		n := int64(leUint64(cnt[:]))
		if n != s.numel {
			return nil, fmt.Errorf("storage %q: record holds %d elements; the object says %d", key, n, s.numel)
		}
		isz := int64(s.dtype.Size())
		if n > maxStorageBytes/isz || n*isz > size-off-8 {
			return nil, fmt.Errorf("storage %q: %d×%s at byte %d runs past the %d-byte file (truncated?)", key, n, s.dtype, off+8, size)
		}
		at[key] = off + 8
		off += 8 + n*isz
	}
	open := func(s *storageRef, off int64) (io.ReadCloser, error) {
		return io.NopCloser(io.NewSectionReader(r, at[s.key]+off, s.numel*int64(s.dtype.Size())-off)), nil
	}
	return materialize(obj, open)
}

func leUint64(b []byte) uint64 {
	var v uint64
	for i := 7; i >= 0; i-- {
		v = v<<8 | uint64(b[i])
	}
	return v
}

// stateDict picks the dict of tensors out of the unpickled object; see ReadPyTorch.
func stateDict(obj any) (*pyDict, error) {
	d, ok := obj.(*pyDict)
	if !ok {
		return nil, fmt.Errorf("the file holds a %s, not a state dict", typeName(obj))
	}
	allTensors := true
	for _, v := range d.vals {
		if _, ok := v.(*tensorRef); !ok {
			allTensors = false
			break
		}
	}
	if !allTensors {
		for _, k := range []string{"state_dict", "model"} {
			if sub, ok := d.get(k); ok {
				if sd, ok := sub.(*pyDict); ok {
					return sd, nil
				}
			}
		}
	}
	return d, nil
}

// storageOpener returns a reader over the bytes of root storage s from byte off on.
type storageOpener func(s *storageRef, off int64) (io.ReadCloser, error)

// materialize reads the tensors of the state dict in obj.
func materialize(obj any, open storageOpener) ([]Tensor, error) {
	sd, err := stateDict(obj)
	if err != nil {
		return nil, err
	}
	type planned struct {
		name string
		t    *tensorRef
		n    int64
	}
	plan := make([]planned, 0, len(sd.keys))
	var out int64
	viewed := map[*storageRef]bool{}
	var budget int64 = outputSlack
	seen := map[string]bool{}
	for i, k := range sd.keys {
		name, ok := k.(string)
		if !ok {
			return nil, fmt.Errorf("state dict key %d is a %s, not a str", i, typeName(k))
		}
		if name == "" || seen[name] {
			return nil, fmt.Errorf("state dict key %q is empty or repeated", name)
		}
		seen[name] = true
		t, ok := sd.vals[i].(*tensorRef)
		if !ok {
			return nil, fmt.Errorf("tensor %q: the state dict holds a %s there", name, typeName(sd.vals[i]))
		}
		n, err := checkView(t)
		if err != nil {
			return nil, fmt.Errorf("tensor %q: %w", name, err)
		}
		root := rootOf(t.storage)
		if !viewed[root] {
			viewed[root] = true
			budget += outputFactor * root.numel
		}
		out += n
		if out > budget {
			return nil, fmt.Errorf("tensor %q: the tensors so far hold %d elements, more than %d× their storages", name, out, outputFactor)
		}
		plan = append(plan, planned{name, t, n})
	}
	ts := make([]Tensor, len(plan))
	for i, p := range plan {
		t, err := readView(p.name, p.t, p.n, open)
		if err != nil {
			return nil, fmt.Errorf("tensor %q: %w", p.name, err)
		}
		ts[i] = t
	}
	return ts, nil
}

func rootOf(s *storageRef) *storageRef {
	if s.base != nil {
		return s.base
	}
	return s
}

// checkView checks that t's size, stride and offset stay inside its storage and returns its
// element count.
func checkView(t *tensorRef) (int64, error) {
	s := t.storage
	n, err := numel(t.size, s.dtype.Size())
	if err != nil {
		return 0, err
	}
	if n == 0 {
		if t.offset > s.numel {
			return 0, fmt.Errorf("storage offset %d past the %d-element storage", t.offset, s.numel)
		}
		return 0, nil
	}
	last := t.offset // the furthest element the view reads
	for d, sz := range t.size {
		st := t.stride[d]
		if st < 0 {
			return 0, fmt.Errorf("negative stride %v", t.stride)
		}
		if sz > 1 && st > (math.MaxInt64-last)/(sz-1) {
			return 0, fmt.Errorf("size %v stride %v offset %d overflow", t.size, t.stride, t.offset)
		}
		last += (sz - 1) * st
	}
	if last >= s.numel {
		return 0, fmt.Errorf("size %v stride %v offset %d read element %d of a %d-element storage", t.size, t.stride, t.offset, last, s.numel)
	}
	if n > s.numel {
		return 0, fmt.Errorf("size %v stride %v views %d elements of a %d-element storage: expanded views are not supported, save t.contiguous()", t.size, t.stride, n, s.numel)
	}
	if int64(int(n)) != n {
		return 0, fmt.Errorf("%d elements do not fit this platform's int", n)
	}
	return n, nil
}

func contiguous(size, stride []int64) bool {
	want := int64(1)
	for d := len(size) - 1; d >= 0; d-- {
		if size[d] != 1 && stride[d] != want {
			return false
		}
		want *= size[d]
	}
	return true
}

// readView reads the n elements of view t, row-major.
func readView(name string, t *tensorRef, n int64, open storageOpener) (Tensor, error) {
	s := t.storage
	dt := s.dtype
	isz := int64(dt.Size())
	out := Tensor{Name: name, DType: dt, Shape: intShape(t.size)}
	allocData(&out, int(n))
	if n == 0 {
		return out, nil
	}
	start := t.offset
	if s.base != nil {
		start += s.offset
	}
	rc, err := open(rootOf(s), start*isz)
	if err != nil {
		return Tensor{}, err
	}
	defer rc.Close()
	if contiguous(t.size, t.stride) {
		raw := make([]byte, min(n*isz, max(chunkBytes/isz, 1)*isz))
		for i := int64(0); i < n; {
			k := min(int64(len(raw))/isz, n-i)
			if _, err := io.ReadFull(rc, raw[:k*isz]); err != nil {
				return Tensor{}, fmt.Errorf("storage %q: %w", s.key, noEOF(err))
			}
			decodeInto(&out, dt, raw[:k*isz], int(i))
			i += k
		}
		return out, checkDecoded(&out)
	}
	// Strided: read the span the view touches, then gather it row-major.
	var span int64 = 1
	for d, sz := range t.size {
		span += (sz - 1) * t.stride[d]
	}
	src := make([]byte, span*isz)
	if _, err := io.ReadFull(rc, src); err != nil {
		return Tensor{}, fmt.Errorf("storage %q: %w", s.key, noEOF(err))
	}
	dst := make([]byte, n*isz)
	idx := make([]int64, len(t.size))
	var pos int64
	for i := int64(0); i < n; i++ {
		copy(dst[i*isz:(i+1)*isz], src[pos*isz:(pos+1)*isz])
		for d := len(idx) - 1; d >= 0; d-- {
			idx[d]++
			pos += t.stride[d]
			if idx[d] < t.size[d] {
				break
			}
			pos -= idx[d] * t.stride[d]
			idx[d] = 0
		}
	}
	decodeInto(&out, dt, dst, 0)
	return out, checkDecoded(&out)
}
