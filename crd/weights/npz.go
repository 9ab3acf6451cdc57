package weights

import (
	"archive/zip"
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
)

// Array64 is a float64 array, row-major (C order), as read from a .npy.
type Array64 struct {
	Shape []int
	Data  []float64
}

// maxNPYHeader caps a .npy header dict, in bytes (numpy itself refuses more than 10000 by
// default).
const maxNPYHeader = 1 << 20

// maxNPYBytes caps one .npy entry's data, in bytes.
const maxNPYBytes = 16 << 30

// ReadNPZ reads a numpy .npz (np.savez or np.savez_compressed): each name.npy becomes
// name. Supported arrays are floating ('<f8', '<f4', '<f2' and their big-endian forms),
// converted to float64 exactly. Arrays saved in Fortran order (fortran_order True, which
// numpy writes for F-contiguous arrays such as a transposed matrix) are transposed into C
// order, so Data is always row-major for Shape. Integer, complex, object and structured
// arrays are errors naming the entry.
func ReadNPZ(path string) (map[string]Array64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("weights: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("weights: %w", err)
	}
	zr, err := openZip(f, st.Size())
	if err != nil {
		return nil, fmt.Errorf("weights: %s: %w", path, err)
	}
	arrs, err := readNPZ(zr, st.Size())
	if err != nil {
		return nil, fmt.Errorf("weights: %s: %w", path, err)
	}
	m := make(map[string]Array64, len(arrs))
	for _, a := range arrs {
		m[a.name] = a.Array64
	}
	return m, nil
}

type namedArray struct {
	Array64
	name  string
	dtype DType
}

func readNPZ(zr *zip.Reader, size int64) ([]namedArray, error) {
	var out []namedArray
	seen := map[string]bool{}
	for _, f := range zr.File {
		name, ok := strings.CutSuffix(f.Name, ".npy")
		if !ok {
			return nil, fmt.Errorf("entry %s is not a .npy: not an .npz", f.Name)
		}
		if seen[name] {
			return nil, fmt.Errorf("array %q appears twice", name)
		}
		seen[name] = true
		rc, n, err := openEntry(f, size, maxNPYBytes)
		if err != nil {
			return nil, err
		}
		a, dt, err := readNPY(bufio.NewReader(rc), n)
		rc.Close()
		if err != nil {
			return nil, fmt.Errorf("array %q: %w", name, err)
		}
		out = append(out, namedArray{a, name, dt})
	}
	if len(out) == 0 {
		return nil, errors.New("zip holds no .npy entries")
	}
	return out, nil
}

// readNPY reads one .npy of size bytes from r. It returns the stored dtype too.
func readNPY(r io.Reader, size int64) (Array64, DType, error) {
	var pre [10]byte
	if size < 10 {
		return Array64{}, "", fmt.Errorf(".npy of %d bytes is shorter than its preamble", size)
	}
	if _, err := io.ReadFull(r, pre[:8]); err != nil {
		return Array64{}, "", noEOF(err)
	}
	if string(pre[:6]) != "\x93NUMPY" {
		return Array64{}, "", fmt.Errorf("no .npy magic (first bytes % x)", pre[:6])
	}
	var hlen, used int64
	switch pre[6] {
	case 1:
		if _, err := io.ReadFull(r, pre[8:10]); err != nil {
			return Array64{}, "", noEOF(err)
		}
		hlen, used = int64(binary.LittleEndian.Uint16(pre[8:10])), 10
	case 2, 3:
		var b [4]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return Array64{}, "", noEOF(err)
		}
		hlen, used = int64(binary.LittleEndian.Uint32(b[:])), 12
	default:
		return Array64{}, "", fmt.Errorf(".npy format version %d.%d", pre[6], pre[7])
	}
	if hlen > maxNPYHeader || hlen > size-used {
		return Array64{}, "", fmt.Errorf("header of %d bytes in a %d-byte .npy", hlen, size)
	}
	hdr := make([]byte, hlen)
	if _, err := io.ReadFull(r, hdr); err != nil {
		return Array64{}, "", noEOF(err)
	}
	descr, fortran, shape, err := parseNPYHeader(string(hdr))
	if err != nil {
		return Array64{}, "", fmt.Errorf("header %q: %w", truncate(string(hdr), 120), err)
	}
	var (
		dt    DType
		order binary.ByteOrder = binary.LittleEndian
	)
	switch descr[1:] {
	case "f8":
		dt = F64
	case "f4":
		dt = F32
	case "f2":
		dt = F16
	default:
		return Array64{}, "", fmt.Errorf("dtype %q: only float arrays ('<f8', '<f4', '<f2') are supported", descr)
	}
	switch descr[0] {
	case '<', '=', '|': // '=' is native: numpy writes '<' on every little-endian machine
	case '>':
		order = binary.BigEndian
	default:
		return Array64{}, "", fmt.Errorf("dtype %q: unknown byte order", descr)
	}
	isz := int64(dt.Size())
	n, err := numel(shape, dt.Size())
	if err != nil {
		return Array64{}, "", err
	}
	if data := size - used - hlen; data != n*isz {
		return Array64{}, "", fmt.Errorf("shape %v of %s needs %d bytes; the .npy holds %d", shape, descr, n*isz, data)
	}
	if int64(int(n)) != n {
		return Array64{}, "", fmt.Errorf("%d elements do not fit this platform's int", n)
	}
	out := make([]float64, n)
	raw := make([]byte, min(n*isz, max(chunkBytes/isz, 1)*isz))
	for i := int64(0); i < n; {
		k := min(int64(len(raw))/isz, n-i)
		b := raw[:k*isz]
		if _, err := io.ReadFull(r, b); err != nil {
			return Array64{}, "", noEOF(err)
		}
		for j := range k {
			switch dt {
			case F64:
				out[i+j] = math.Float64frombits(order.Uint64(b[8*j:]))
			case F32:
				out[i+j] = float64(math.Float32frombits(order.Uint32(b[4*j:])))
			case F16:
				out[i+j] = float64(f16to32(order.Uint16(b[2*j:])))
			}
		}
		i += k
	}
	a := Array64{Shape: intShape(shape), Data: out}
	if fortran && len(shape) > 1 {
		a.Data = fortranToC(out, a.Shape)
	}
	return a, dt, nil
}

// fortranToC reorders column-major data of shape into row-major.
func fortranToC(src []float64, shape []int) []float64 {
	dst := make([]float64, len(src))
	nd := len(shape)
	cstride := make([]int, nd) // row-major stride of each dimension
	s := 1
	for d := nd - 1; d >= 0; d-- {
		cstride[d] = s
		s *= shape[d]
	}
	idx := make([]int, nd)
	pos := 0 // row-major position of idx
	for _, v := range src {
		dst[pos] = v
		for d := 0; d < nd; d++ { // column-major: the first index runs fastest
			idx[d]++
			pos += cstride[d]
			if idx[d] < shape[d] {
				break
			}
			pos -= idx[d] * cstride[d]
			idx[d] = 0
		}
	}
	return dst
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// parseNPYHeader parses the Python dict literal numpy writes, e.g.
// {'descr': '<f8', 'fortran_order': False, 'shape': (3, 4), }: exactly the three keys.
func parseNPYHeader(h string) (descr string, fortran bool, shape []int64, err error) {
	p := &pyLit{s: strings.TrimRight(h, " \n\x00")}
	if !p.eat('{') {
		return "", false, nil, errors.New("not a dict")
	}
	seen := map[string]bool{}
	for !p.eat('}') {
		key, err := p.str()
		if err != nil {
			return "", false, nil, err
		}
		if seen[key] {
			return "", false, nil, fmt.Errorf("key %q twice", key)
		}
		seen[key] = true
		if !p.eat(':') {
			return "", false, nil, fmt.Errorf("no ':' after %q", key)
		}
		switch key {
		case "descr":
			if descr, err = p.str(); err != nil {
				return "", false, nil, fmt.Errorf("descr: %w (structured dtypes are not supported)", err)
			}
			if len(descr) < 2 {
				return "", false, nil, fmt.Errorf("descr %q", descr)
			}
		case "fortran_order":
			switch {
			case p.word("True"):
				fortran = true
			case p.word("False"):
			default:
				return "", false, nil, errors.New("fortran_order is not True or False")
			}
		case "shape":
			if shape, err = p.intTuple(); err != nil {
				return "", false, nil, fmt.Errorf("shape: %w", err)
			}
		default:
			return "", false, nil, fmt.Errorf("unknown key %q", key)
		}
		if !p.eat(',') {
			if !p.eat('}') {
				return "", false, nil, errors.New("expected ',' or '}'")
			}
			break
		}
	}
	if p.skip(); p.i != len(p.s) {
		return "", false, nil, errors.New("text after the dict")
	}
	if !seen["descr"] || !seen["fortran_order"] || !seen["shape"] {
		return "", false, nil, errors.New("needs descr, fortran_order and shape")
	}
	return descr, fortran, shape, nil
}

// pyLit scans the little Python literal syntax of a .npy header.
type pyLit struct {
	s string
	i int
}

func (p *pyLit) skip() {
	for p.i < len(p.s) && (p.s[p.i] == ' ' || p.s[p.i] == '\t' || p.s[p.i] == '\n') {
		p.i++
	}
}

func (p *pyLit) eat(c byte) bool {
	p.skip()
	if p.i < len(p.s) && p.s[p.i] == c {
		p.i++
		return true
	}
	return false
}

func (p *pyLit) word(w string) bool {
	p.skip()
	if strings.HasPrefix(p.s[p.i:], w) {
		p.i += len(w)
		return true
	}
	return false
}

func (p *pyLit) str() (string, error) {
	p.skip()
	if p.i >= len(p.s) || (p.s[p.i] != '\'' && p.s[p.i] != '"') {
		return "", errors.New("expected a string")
	}
	q := p.s[p.i]
	end := strings.IndexByte(p.s[p.i+1:], q)
	if end < 0 {
		return "", errors.New("unterminated string")
	}
	v := p.s[p.i+1 : p.i+1+end]
	if strings.ContainsRune(v, '\\') {
		return "", errors.New("escaped string")
	}
	p.i += end + 2
	return v, nil
}

func (p *pyLit) intTuple() ([]int64, error) {
	if !p.eat('(') {
		return nil, errors.New("not a tuple")
	}
	dims := []int64{}
	for !p.eat(')') {
		p.skip()
		j := p.i
		for j < len(p.s) && p.s[j] >= '0' && p.s[j] <= '9' {
			j++
		}
		if j == p.i {
			return nil, errors.New("expected a non-negative integer")
		}
		v, err := strconv.ParseInt(p.s[p.i:j], 10, 64)
		if err != nil {
			return nil, err
		}
		p.i = j
		p.word("L") // Python 2's long suffix
		dims = append(dims, v)
		if !p.eat(',') {
			if !p.eat(')') {
				return nil, errors.New("expected ',' or ')'")
			}
			break
		}
	}
	return dims, nil
}
