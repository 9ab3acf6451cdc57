package weights

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
)

// MaxSafetensorsHeader is the largest safetensors JSON header the reader accepts, in bytes
// (the reference implementation's limit is 100 MB).
const MaxSafetensorsHeader = 100 << 20

const metadataKey = "__metadata__"

// chunkBytes is how much tensor data the readers hold in a raw buffer at a time.
const chunkBytes = 1 << 20

// ReadSafetensors reads a safetensors file of size bytes: the tensors in file order (by data
// offset; tensors of no bytes at one offset by name) and the __metadata__ map (nil if the
// file has none). The header is validated in full before any tensor is read: header length
// against the file size and MaxSafetensorsHeader, known dtypes, non-negative dimensions,
// element counts that do not overflow, data_offsets inside the buffer with begin <= end and
// end-begin = elements × element size, no two tensors sharing a byte, no duplicate names.
// Tensor data is then read in bounded chunks.
func ReadSafetensors(r io.ReaderAt, size int64) ([]Tensor, map[string]string, error) {
	ts, meta, err := readSafetensors(r, size)
	if err != nil {
		return nil, nil, fmt.Errorf("weights: safetensors: %w", err)
	}
	return ts, meta, nil
}

// ReadSafetensorsFile reads the safetensors file at path; see ReadSafetensors.
func ReadSafetensorsFile(path string) ([]Tensor, map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("weights: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, nil, fmt.Errorf("weights: %w", err)
	}
	ts, meta, err := readSafetensors(f, st.Size())
	if err != nil {
		return nil, nil, fmt.Errorf("weights: %s: %w", path, err)
	}
	return ts, meta, nil
}

type stEntry struct {
	name       string
	dtype      DType
	shape      []int64
	begin, end int64
}

type stInfo struct {
	DType   *string  `json:"dtype"`
	Shape   *[]int64 `json:"shape"`
	Offsets *[]int64 `json:"data_offsets"`
}

func readSafetensors(r io.ReaderAt, size int64) ([]Tensor, map[string]string, error) {
	if size < 8 {
		return nil, nil, fmt.Errorf("file of %d bytes is shorter than the 8-byte header length", size)
	}
	var lenBuf [8]byte
	if _, err := r.ReadAt(lenBuf[:], 0); err != nil {
		return nil, nil, fmt.Errorf("reading header length: %w", err)
	}
	hlen := binary.LittleEndian.Uint64(lenBuf[:])
	if hlen > MaxSafetensorsHeader {
		return nil, nil, fmt.Errorf("header length %d exceeds the %d-byte limit", hlen, MaxSafetensorsHeader)
	}
	if hlen > uint64(size-8) {
		return nil, nil, fmt.Errorf("header length %d exceeds the %d bytes after it (truncated file?)", hlen, size-8)
	}
	hdr := make([]byte, hlen)
	if _, err := r.ReadAt(hdr, 8); err != nil {
		return nil, nil, fmt.Errorf("reading %d-byte header: %w", hlen, err)
	}
	bufStart := 8 + int64(hlen)
	bufLen := size - bufStart
	entries, meta, err := parseSafetensorsHeader(hdr, bufLen)
	if err != nil {
		return nil, nil, err
	}
	ts := make([]Tensor, len(entries))
	raw := make([]byte, 0, min(chunkBytes, maxEntryBytes(entries)))
	for i, e := range entries {
		t := Tensor{Name: e.name, DType: e.dtype, Shape: intShape(e.shape)}
		n := (e.end - e.begin) / int64(e.dtype.Size())
		allocData(&t, int(n))
		isz := int64(e.dtype.Size())
		step := max(chunkBytes/isz, 1) * isz
		for off := e.begin; off < e.end; off += step {
			k := min(step, e.end-off)
			raw = raw[:k]
			if _, err := r.ReadAt(raw, bufStart+off); err != nil {
				return nil, nil, fmt.Errorf("tensor %q: reading bytes [%d,%d) of the buffer: %w", e.name, off, off+k, err)
			}
			decodeInto(&t, e.dtype, raw, int((off-e.begin)/isz))
		}
		if err := checkDecoded(&t); err != nil {
			return nil, nil, fmt.Errorf("tensor %q: %w", e.name, err)
		}
		ts[i] = t
	}
	return ts, meta, nil
}

func maxEntryBytes(es []stEntry) int64 {
	var m int64
	for _, e := range es {
		m = max(m, e.end-e.begin)
	}
	return m
}

// parseSafetensorsHeader validates the JSON header against a data buffer of bufLen bytes
// and returns its tensors in file order.
func parseSafetensorsHeader(hdr []byte, bufLen int64) ([]stEntry, map[string]string, error) {
	if len(hdr) == 0 || hdr[0] != '{' {
		return nil, nil, errors.New("header is not a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(hdr))
	if _, err := dec.Token(); err != nil { // the '{'
		return nil, nil, fmt.Errorf("header: %w", err)
	}
	var (
		meta     map[string]string
		seenMeta bool
		entries  []stEntry
		seen     = map[string]bool{}
	)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, nil, fmt.Errorf("header: %w", err)
		}
		name, ok := tok.(string)
		if !ok {
			return nil, nil, fmt.Errorf("header: key %v is not a string", tok)
		}
		if name == metadataKey {
			if seenMeta {
				return nil, nil, fmt.Errorf("header: %s appears twice", metadataKey)
			}
			seenMeta = true
			if err := dec.Decode(&meta); err != nil {
				return nil, nil, fmt.Errorf("header: %s must map strings to strings: %w", metadataKey, err)
			}
			continue
		}
		if name == "" {
			return nil, nil, errors.New("header: tensor with an empty name")
		}
		if seen[name] {
			return nil, nil, fmt.Errorf("header: tensor %q appears twice", name)
		}
		seen[name] = true
		var info stInfo
		if err := dec.Decode(&info); err != nil {
			return nil, nil, fmt.Errorf("header: tensor %q: %w", name, err)
		}
		e, err := checkEntry(name, info, bufLen)
		if err != nil {
			return nil, nil, fmt.Errorf("tensor %q: %w", name, err)
		}
		entries = append(entries, e)
	}
	if _, err := dec.Token(); err != nil { // the '}'
		return nil, nil, fmt.Errorf("header: %w", err)
	}
	// Only whitespace may follow (writers pad the header to 8 bytes with spaces).
	rest := hdr[dec.InputOffset():]
	if len(bytes.TrimLeft(rest, " \t\r\n")) != 0 {
		return nil, nil, fmt.Errorf("header: %d bytes after the JSON object that are not white space", len(rest))
	}
	sort.Slice(entries, func(i, j int) bool {
		a, b := entries[i], entries[j]
		if a.begin != b.begin {
			return a.begin < b.begin
		}
		if a.end != b.end {
			return a.end < b.end
		}
		return a.name < b.name
	})
	// Sorted by begin, a tensor overlaps another iff it starts before the furthest end so far.
	var end int64
	var last string
	for _, e := range entries {
		if e.begin == e.end {
			continue
		}
		if e.begin < end {
			return nil, nil, fmt.Errorf("tensor %q: bytes [%d,%d) overlap tensor %q", e.name, e.begin, e.end, last)
		}
		end, last = e.end, e.name
	}
	return entries, meta, nil
}

func checkEntry(name string, info stInfo, bufLen int64) (stEntry, error) {
	if info.DType == nil || info.Shape == nil || info.Offsets == nil {
		return stEntry{}, errors.New("needs dtype, shape and data_offsets")
	}
	dt := DType(*info.DType)
	isz := dt.Size()
	if isz == 0 {
		return stEntry{}, fmt.Errorf("unknown dtype %q", *info.DType)
	}
	if len(*info.Offsets) != 2 {
		return stEntry{}, fmt.Errorf("data_offsets %v: want [begin, end]", *info.Offsets)
	}
	begin, end := (*info.Offsets)[0], (*info.Offsets)[1]
	if begin < 0 || begin > end {
		return stEntry{}, fmt.Errorf("data_offsets [%d,%d]: want 0 <= begin <= end", begin, end)
	}
	if end > bufLen {
		return stEntry{}, fmt.Errorf("data_offsets [%d,%d] run past the %d-byte buffer (truncated file?)", begin, end, bufLen)
	}
	n, err := numel(*info.Shape, isz)
	if err != nil {
		return stEntry{}, err
	}
	if end-begin != n*int64(isz) {
		return stEntry{}, fmt.Errorf("data_offsets [%d,%d] hold %d bytes; shape %v of %s needs %d", begin, end, end-begin, *info.Shape, dt, n*int64(isz))
	}
	if int64(int(n)) != n {
		return stEntry{}, fmt.Errorf("%d elements do not fit this platform's int", n)
	}
	return stEntry{name: name, dtype: dt, shape: *info.Shape, begin: begin, end: end}, nil
}

// WriteSafetensors writes ts and meta as a safetensors file to w. Floating tensors (DType
// empty or any floating dtype) are stored as F32 from Tensor.F32, integer and boolean ones as
// I64 from Tensor.I64. The output is deterministic: the JSON header is compact, with
// __metadata__ first and the tensors' keys sorted, padded with spaces to a multiple of 8
// bytes as the Hugging Face writer does; the data lies in the order of ts, without gaps.
// Names must be unique and non-empty, and each tensor's data must match its shape.
func WriteSafetensors(w io.Writer, ts []Tensor, meta map[string]string) error {
	if err := writeSafetensors(w, ts, meta); err != nil {
		return fmt.Errorf("weights: safetensors: %w", err)
	}
	return nil
}

// WriteSafetensorsFile writes the file at path through a temporary file in the same
// directory that is synced and then renamed over path, so a reader never sees a partial
// file and a crash leaves the old one.
func WriteSafetensorsFile(path string, ts []Tensor, meta map[string]string) (err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("weights: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	bw := bufio.NewWriterSize(tmp, 1<<20)
	if err := writeSafetensors(bw, ts, meta); err != nil {
		return fmt.Errorf("weights: %s: %w", path, err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("weights: %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("weights: %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("weights: %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("weights: %w", err)
	}
	// Sync the directory so the rename itself survives a crash.
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

func writeSafetensors(w io.Writer, ts []Tensor, meta map[string]string) error {
	type placed struct {
		dt         DType
		shape      []int
		begin, end int64
	}
	byName := make(map[string]placed, len(ts))
	var off int64
	for i := range ts {
		t := &ts[i]
		if t.Name == "" || t.Name == metadataKey {
			return fmt.Errorf("tensor %d: invalid name %q", i, t.Name)
		}
		if _, dup := byName[t.Name]; dup {
			return fmt.Errorf("tensor %q appears twice", t.Name)
		}
		n := 1
		for _, d := range t.Shape {
			if d < 0 {
				return fmt.Errorf("tensor %q: negative dimension in shape %v", t.Name, t.Shape)
			}
			n *= d
		}
		dt, got := F32, len(t.F32)
		if t.DType != "" && !t.DType.IsFloat() {
			dt, got = I64, len(t.I64)
			if len(t.F32) != 0 {
				return fmt.Errorf("tensor %q: %s tensor holds F32 data", t.Name, t.DType)
			}
		} else if len(t.I64) != 0 {
			return fmt.Errorf("tensor %q: floating tensor holds I64 data", t.Name)
		}
		if got != n {
			return fmt.Errorf("tensor %q: %d elements, shape %v needs %d", t.Name, got, t.Shape, n)
		}
		sz := int64(n) * int64(dt.Size())
		byName[t.Name] = placed{dt, t.Shape, off, off + sz}
		off += sz
	}

	var hdr bytes.Buffer
	enc := json.NewEncoder(&hdr)
	enc.SetEscapeHTML(false)
	str := func(s string) {
		enc.Encode(s) // cannot fail for a string
		hdr.Truncate(hdr.Len() - 1)
	}
	hdr.WriteByte('{')
	if len(meta) > 0 {
		str(metadataKey)
		hdr.WriteString(":{")
		for i, k := range slices.Sorted(maps.Keys(meta)) {
			if i > 0 {
				hdr.WriteByte(',')
			}
			str(k)
			hdr.WriteByte(':')
			str(meta[k])
		}
		hdr.WriteByte('}')
	}
	for i, name := range slices.Sorted(maps.Keys(byName)) {
		if i > 0 || len(meta) > 0 {
			hdr.WriteByte(',')
		}
		p := byName[name]
		str(name)
		fmt.Fprintf(&hdr, `:{"dtype":"%s","shape":[`, p.dt)
		for j, d := range p.shape {
			if j > 0 {
				hdr.WriteByte(',')
			}
			fmt.Fprint(&hdr, d)
		}
		fmt.Fprintf(&hdr, `],"data_offsets":[%d,%d]}`, p.begin, p.end)
	}
	hdr.WriteByte('}')
	for hdr.Len()%8 != 0 {
		hdr.WriteByte(' ')
	}
	if hdr.Len() > MaxSafetensorsHeader {
		return fmt.Errorf("header of %d bytes exceeds the %d-byte limit", hdr.Len(), MaxSafetensorsHeader)
	}

	var lenBuf [8]byte
	binary.LittleEndian.PutUint64(lenBuf[:], uint64(hdr.Len()))
	if _, err := w.Write(lenBuf[:]); err != nil {
		return err
	}
	if _, err := w.Write(hdr.Bytes()); err != nil {
		return err
	}
	buf := make([]byte, 0, min(chunkBytes, max(off, 8)))
	flush := func() error {
		_, err := w.Write(buf)
		buf = buf[:0]
		return err
	}
	for i := range ts {
		t := &ts[i]
		if byName[t.Name].dt == I64 {
			for _, v := range t.I64 {
				buf = binary.LittleEndian.AppendUint64(buf, uint64(v))
				if len(buf) == cap(buf) {
					if err := flush(); err != nil {
						return err
					}
				}
			}
			continue
		}
		for _, v := range t.F32 {
			buf = binary.LittleEndian.AppendUint32(buf, math.Float32bits(v))
			if len(buf) == cap(buf) {
				if err := flush(); err != nil {
					return err
				}
			}
		}
	}
	return flush()
}
