package weights

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"unicode/utf8"
)

// This file is the subset of Python's pickle machine that torch.save uses for state dicts
// and checkpoints (protocol 2, plus the protocol 3–5 opcodes that cost nothing). It builds
// plain values (None, bool, int64, float64, string, tuple, list, dict) and, through a small
// table of allowed globals, the two torch objects a state dict holds: storages (persistent
// ids) and tensors (views of a storage). Anything else — an unknown opcode or global, which
// is what a pickled nn.Module or arbitrary object looks like — is an error naming it. No
// code runs and no value is sized from the input beyond what the input itself holds.

// maxPickleBytes caps a data.pkl entry (or one legacy pickle); real state dicts need KBs.
const maxPickleBytes = 64 << 20

type (
	pyTuple  []any
	pyLong   string // an integer too large for int64: its little-endian two's complement bytes
	pyBytes  string
	pyGlobal struct{ module, name string }
	pyList   struct{ items []any }
	pyDict   struct {
		keys, vals []any
		index      map[any]int // for hashable scalar keys
	}
)

func newDict() *pyDict { return &pyDict{index: map[any]int{}} }

func (d *pyDict) set(k, v any) {
	if hashable(k) {
		if i, ok := d.index[k]; ok {
			d.vals[i] = v
			return
		}
		d.index[k] = len(d.keys)
	}
	d.keys = append(d.keys, k)
	d.vals = append(d.vals, v)
}

func (d *pyDict) get(k string) (any, bool) {
	i, ok := d.index[k]
	if !ok {
		return nil, false
	}
	return d.vals[i], true
}

// hashable reports whether k may be a Go map key (a pyTuple, a slice, may not).
func hashable(k any) bool {
	switch k.(type) {
	case nil, bool, int64, float64, string, pyLong, pyBytes, pyGlobal:
		return true
	}
	return false
}

// storageRef is a torch storage named by a persistent id.
type storageRef struct {
	key   string
	dtype DType
	numel int64 // elements of dtype
	// A legacy (pre-0.4) storage view: a window of numel elements at base+offset.
	base   *storageRef
	offset int64
}

// tensorRef is a tensor: a strided view of a storage, not yet read.
type tensorRef struct {
	storage *storageRef
	offset  int64 // in elements
	size    []int64
	stride  []int64
}

func typeName(v any) string {
	switch v := v.(type) {
	case nil:
		return "None"
	case bool:
		return "bool"
	case int64, pyLong:
		return "int"
	case float64:
		return "float"
	case string:
		return "str"
	case pyBytes:
		return "bytes"
	case pyTuple:
		return "tuple"
	case *pyList:
		return "list"
	case *pyDict:
		return "dict"
	case pyGlobal:
		return v.module + "." + v.name
	case *storageRef:
		return "storage"
	case *tensorRef:
		return "tensor"
	}
	return fmt.Sprintf("%T", v)
}

// storageTypes maps torch's storage class names to dtypes.
var storageTypes = map[string]DType{
	"FloatStorage":    F32,
	"DoubleStorage":   F64,
	"HalfStorage":     F16,
	"BFloat16Storage": BF16,
	"LongStorage":     I64,
	"IntStorage":      I32,
	"ShortStorage":    I16,
	"CharStorage":     I8,
	"ByteStorage":     U8,
	"BoolStorage":     Bool,
}

// pickleReader is the byte source of one pickle: a buffered reader that knows how many
// bytes remain, so no length field can ask for more than is there.
type pickleReader struct {
	r    *bufio.Reader
	left int64
	pos  int64
}

func (p *pickleReader) byte() (byte, error) {
	if p.left < 1 {
		return 0, io.ErrUnexpectedEOF
	}
	b, err := p.r.ReadByte()
	if err != nil {
		return 0, noEOF(err)
	}
	p.left--
	p.pos++
	return b, nil
}

func (p *pickleReader) bytes(n int64) ([]byte, error) {
	if n < 0 || n > p.left {
		return nil, fmt.Errorf("%d-byte field at byte %d runs past the %d bytes left", n, p.pos, p.left)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(p.r, b); err != nil {
		return nil, noEOF(err)
	}
	p.left -= n
	p.pos += n
	return b, nil
}

func (p *pickleReader) uint(n int) (uint64, error) {
	b, err := p.bytes(int64(n))
	if err != nil {
		return 0, err
	}
	var v uint64
	for i := n - 1; i >= 0; i-- {
		v = v<<8 | uint64(b[i])
	}
	return v, nil
}

func (p *pickleReader) line() (string, error) {
	var sb strings.Builder
	for {
		b, err := p.byte()
		if err != nil {
			return "", err
		}
		if b == '\n' {
			return sb.String(), nil
		}
		if sb.Len() >= 256 {
			return "", fmt.Errorf("GLOBAL name longer than 256 bytes at byte %d", p.pos)
		}
		sb.WriteByte(b)
	}
}

func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// unpickle runs one pickle from p and returns the object STOP leaves and the storages its
// persistent ids named, by key.
func unpickle(p *pickleReader) (any, map[string]*storageRef, error) {
	u := unpickler{p: p, memo: map[uint64]any{}, storages: map[string]*storageRef{}, views: map[string]*storageRef{}}
	v, err := u.run()
	if err != nil {
		return nil, nil, fmt.Errorf("pickle: %w", err)
	}
	return v, u.storages, nil
}

type unpickler struct {
	p        *pickleReader
	stack    []any
	marks    []int
	memo     map[uint64]any
	storages map[string]*storageRef
	views    map[string]*storageRef // legacy storage views, by view key
}

func (u *unpickler) push(v any) { u.stack = append(u.stack, v) }

func (u *unpickler) pop() (any, error) {
	if len(u.stack) == 0 || (len(u.marks) > 0 && len(u.stack) == u.marks[len(u.marks)-1]) {
		return nil, errors.New("stack underflow")
	}
	v := u.stack[len(u.stack)-1]
	u.stack = u.stack[:len(u.stack)-1]
	return v, nil
}

func (u *unpickler) top() (any, error) {
	if len(u.stack) == 0 || (len(u.marks) > 0 && len(u.stack) == u.marks[len(u.marks)-1]) {
		return nil, errors.New("stack underflow")
	}
	return u.stack[len(u.stack)-1], nil
}

// popMark returns the items pushed since the last MARK and removes them and the mark.
func (u *unpickler) popMark() ([]any, error) {
	if len(u.marks) == 0 {
		return nil, errors.New("no MARK on the stack")
	}
	m := u.marks[len(u.marks)-1]
	u.marks = u.marks[:len(u.marks)-1]
	items := append([]any(nil), u.stack[m:]...)
	u.stack = u.stack[:m]
	return items, nil
}

func (u *unpickler) run() (any, error) {
	for {
		at := u.p.pos
		op, err := u.p.byte()
		if err != nil {
			return nil, fmt.Errorf("no STOP: %w", err)
		}
		done, err := u.step(op)
		if err != nil {
			return nil, fmt.Errorf("opcode 0x%02x at byte %d: %w", op, at, err)
		}
		if done {
			v, err := u.pop()
			if err != nil {
				return nil, fmt.Errorf("STOP at byte %d: %w", at, err)
			}
			if len(u.stack) != 0 || len(u.marks) != 0 {
				return nil, fmt.Errorf("STOP at byte %d leaves %d values and %d marks", at, len(u.stack), len(u.marks))
			}
			return v, nil
		}
	}
}

func (u *unpickler) step(op byte) (stop bool, err error) {
	p := u.p
	switch op {
	case 0x80: // PROTO
		v, err := p.byte()
		if err != nil {
			return false, err
		}
		if v > 5 {
			return false, fmt.Errorf("pickle protocol %d", v)
		}
	case 0x95: // FRAME: a length hint only
		if _, err := p.uint(8); err != nil {
			return false, err
		}
	case '.': // STOP
		return true, nil
	case '(': // MARK
		u.marks = append(u.marks, len(u.stack))
	case ')': // EMPTY_TUPLE
		u.push(pyTuple{})
	case ']': // EMPTY_LIST
		u.push(&pyList{})
	case '}': // EMPTY_DICT
		u.push(newDict())
	case 'N': // NONE
		u.push(nil)
	case 0x88: // NEWTRUE
		u.push(true)
	case 0x89: // NEWFALSE
		u.push(false)
	case 't': // TUPLE
		items, err := u.popMark()
		if err != nil {
			return false, err
		}
		u.push(pyTuple(items))
	case 0x85, 0x86, 0x87: // TUPLE1, TUPLE2, TUPLE3
		n := int(op - 0x84)
		t := make(pyTuple, n)
		for i := n - 1; i >= 0; i-- {
			if t[i], err = u.pop(); err != nil {
				return false, err
			}
		}
		u.push(t)
	case 'l': // LIST
		items, err := u.popMark()
		if err != nil {
			return false, err
		}
		u.push(&pyList{items: items})
	case 'd': // DICT
		items, err := u.popMark()
		if err != nil {
			return false, err
		}
		d := newDict()
		if err := setItems(d, items); err != nil {
			return false, err
		}
		u.push(d)
	case 'q', 'r': // BINPUT, LONG_BINPUT
		n := 1
		if op == 'r' {
			n = 4
		}
		idx, err := p.uint(n)
		if err != nil {
			return false, err
		}
		v, err := u.top()
		if err != nil {
			return false, err
		}
		u.memo[idx] = v
	case 0x94: // MEMOIZE
		v, err := u.top()
		if err != nil {
			return false, err
		}
		u.memo[uint64(len(u.memo))] = v
	case 'h', 'j': // BINGET, LONG_BINGET
		n := 1
		if op == 'j' {
			n = 4
		}
		idx, err := p.uint(n)
		if err != nil {
			return false, err
		}
		v, ok := u.memo[idx]
		if !ok {
			return false, fmt.Errorf("memo %d is empty", idx)
		}
		u.push(v)
	case 'J': // BININT
		v, err := p.uint(4)
		if err != nil {
			return false, err
		}
		u.push(int64(int32(uint32(v))))
	case 'K': // BININT1
		v, err := p.uint(1)
		if err != nil {
			return false, err
		}
		u.push(int64(v))
	case 'M': // BININT2
		v, err := p.uint(2)
		if err != nil {
			return false, err
		}
		u.push(int64(v))
	case 0x8a, 0x8b: // LONG1, LONG4
		w := 1
		if op == 0x8b {
			w = 4
		}
		n, err := p.uint(w)
		if err != nil {
			return false, err
		}
		if n > 1024 {
			return false, fmt.Errorf("%d-byte integer", n)
		}
		b, err := p.bytes(int64(n))
		if err != nil {
			return false, err
		}
		u.push(longValue(b))
	case 'G': // BINFLOAT, big-endian
		b, err := p.bytes(8)
		if err != nil {
			return false, err
		}
		u.push(math.Float64frombits(binary.BigEndian.Uint64(b)))
	case 'X', 0x8c, 0x8d, 'T', 'U': // BINUNICODE, SHORT_BINUNICODE, BINUNICODE8, BINSTRING, SHORT_BINSTRING
		w := map[byte]int{'X': 4, 0x8c: 1, 0x8d: 8, 'T': 4, 'U': 1}[op]
		n, err := p.uint(w)
		if err != nil {
			return false, err
		}
		if n > math.MaxInt64 {
			return false, fmt.Errorf("string of %d bytes", n)
		}
		b, err := p.bytes(int64(n))
		if err != nil {
			return false, err
		}
		// Python decodes BINUNICODE as UTF-8 and torch.load Python 2 str the
		// same way by default: both fail on bytes that are not UTF-8, and so does
		// crdgo (a tensor name must survive the trip into a safetensors header).
		if !utf8.Valid(b) {
			return false, fmt.Errorf("string of %d bytes is not valid UTF-8", n)
		}
		u.push(string(b))
	case 'B', 'C', 0x8e: // BINBYTES, SHORT_BINBYTES, BINBYTES8
		w := map[byte]int{'B': 4, 'C': 1, 0x8e: 8}[op]
		n, err := p.uint(w)
		if err != nil {
			return false, err
		}
		if n > math.MaxInt64 {
			return false, fmt.Errorf("bytes of %d bytes", n)
		}
		b, err := p.bytes(int64(n))
		if err != nil {
			return false, err
		}
		u.push(pyBytes(b))
	case 'c': // GLOBAL
		mod, err := p.line()
		if err != nil {
			return false, err
		}
		name, err := p.line()
		if err != nil {
			return false, err
		}
		g, err := global(mod, name)
		if err != nil {
			return false, err
		}
		u.push(g)
	case 0x93: // STACK_GLOBAL
		nv, err := u.pop()
		if err != nil {
			return false, err
		}
		mv, err := u.pop()
		if err != nil {
			return false, err
		}
		mod, ok1 := mv.(string)
		name, ok2 := nv.(string)
		if !ok1 || !ok2 {
			return false, fmt.Errorf("STACK_GLOBAL of %s and %s", typeName(mv), typeName(nv))
		}
		g, err := global(mod, name)
		if err != nil {
			return false, err
		}
		u.push(g)
	case 'R': // REDUCE
		av, err := u.pop()
		if err != nil {
			return false, err
		}
		fv, err := u.pop()
		if err != nil {
			return false, err
		}
		args, ok := av.(pyTuple)
		if !ok {
			return false, fmt.Errorf("REDUCE with %s arguments", typeName(av))
		}
		fn, ok := fv.(pyGlobal)
		if !ok {
			return false, fmt.Errorf("REDUCE calls a %s", typeName(fv))
		}
		v, err := call(fn, args)
		if err != nil {
			return false, err
		}
		u.push(v)
	case 'b': // BUILD
		state, err := u.pop()
		if err != nil {
			return false, err
		}
		obj, err := u.top()
		if err != nil {
			return false, err
		}
		// A state dict's state is its _metadata (module versions); a tensor's is its
		// Python attributes. Neither carries data, so both are dropped.
		switch obj.(type) {
		case *pyDict, *tensorRef:
		default:
			return false, fmt.Errorf("BUILD on a %s (state %s)", typeName(obj), typeName(state))
		}
	case 's': // SETITEM
		v, err := u.pop()
		if err != nil {
			return false, err
		}
		k, err := u.pop()
		if err != nil {
			return false, err
		}
		dv, err := u.top()
		if err != nil {
			return false, err
		}
		d, ok := dv.(*pyDict)
		if !ok {
			return false, fmt.Errorf("SETITEM on a %s", typeName(dv))
		}
		d.set(k, v)
	case 'u': // SETITEMS
		items, err := u.popMark()
		if err != nil {
			return false, err
		}
		dv, err := u.top()
		if err != nil {
			return false, err
		}
		d, ok := dv.(*pyDict)
		if !ok {
			return false, fmt.Errorf("SETITEMS on a %s", typeName(dv))
		}
		if err := setItems(d, items); err != nil {
			return false, err
		}
	case 'a': // APPEND
		v, err := u.pop()
		if err != nil {
			return false, err
		}
		lv, err := u.top()
		if err != nil {
			return false, err
		}
		l, ok := lv.(*pyList)
		if !ok {
			return false, fmt.Errorf("APPEND to a %s", typeName(lv))
		}
		l.items = append(l.items, v)
	case 'e': // APPENDS
		items, err := u.popMark()
		if err != nil {
			return false, err
		}
		lv, err := u.top()
		if err != nil {
			return false, err
		}
		l, ok := lv.(*pyList)
		if !ok {
			return false, fmt.Errorf("APPENDS to a %s", typeName(lv))
		}
		l.items = append(l.items, items...)
	case 'Q': // BINPERSID
		pid, err := u.pop()
		if err != nil {
			return false, err
		}
		s, err := u.persistent(pid)
		if err != nil {
			return false, err
		}
		u.push(s)
	case '0': // POP
		if _, err := u.pop(); err != nil {
			return false, err
		}
	case '1': // POP_MARK
		if _, err := u.popMark(); err != nil {
			return false, err
		}
	case '2': // DUP
		v, err := u.top()
		if err != nil {
			return false, err
		}
		u.push(v)
	default:
		return false, errors.New("unsupported opcode")
	}
	return false, nil
}

func setItems(d *pyDict, items []any) error {
	if len(items)%2 != 0 {
		return fmt.Errorf("odd number (%d) of dict items", len(items))
	}
	for i := 0; i < len(items); i += 2 {
		d.set(items[i], items[i+1])
	}
	return nil
}

// longValue decodes a little-endian two's complement integer: an int64 when it fits.
func longValue(b []byte) any {
	if len(b) == 0 {
		return int64(0)
	}
	neg := b[len(b)-1]&0x80 != 0
	fits := true
	for i := 8; i < len(b); i++ {
		if (neg && b[i] != 0xff) || (!neg && b[i] != 0) {
			fits = false
		}
	}
	if len(b) > 8 && fits && (b[7]&0x80 != 0) != neg {
		fits = false
	}
	if !fits {
		return pyLong(b)
	}
	var v uint64
	if neg {
		v = math.MaxUint64
	}
	for i := min(len(b), 8) - 1; i >= 0; i-- {
		v = v<<8 | uint64(b[i])
	}
	return int64(v)
}

// The globals a state dict may name; everything else is refused by name.
var allowedGlobals = map[string]bool{
	"collections.OrderedDict":                    true,
	"torch._utils._rebuild_tensor":               true,
	"torch._utils._rebuild_tensor_v2":            true,
	"torch._utils._rebuild_parameter":            true,
	"torch._utils._rebuild_parameter_with_state": true,
}

func global(mod, name string) (pyGlobal, error) {
	if mod == "torch" || mod == "torch.cuda" {
		if _, ok := storageTypes[name]; ok {
			return pyGlobal{mod, name}, nil
		}
		if strings.HasSuffix(name, "Storage") {
			return pyGlobal{}, fmt.Errorf("storage type %s.%s is not supported", mod, name)
		}
	}
	if !allowedGlobals[mod+"."+name] {
		return pyGlobal{}, fmt.Errorf("global %s.%s is not allowed in a state dict (a pickled module or object rather than a state_dict?)", mod, name)
	}
	return pyGlobal{mod, name}, nil
}

func call(fn pyGlobal, args pyTuple) (any, error) {
	switch fn.module + "." + fn.name {
	case "collections.OrderedDict":
		d := newDict()
		switch {
		case len(args) == 0:
			return d, nil
		case len(args) == 1:
			// Python 2 pickles an OrderedDict as OrderedDict([[key, value], …]).
			var items []any
			switch v := args[0].(type) {
			case *pyList:
				items = v.items
			case pyTuple:
				items = v
			default:
				return nil, fmt.Errorf("OrderedDict of a %s", typeName(args[0]))
			}
			for i, it := range items {
				var kv []any
				switch v := it.(type) {
				case *pyList:
					kv = v.items
				case pyTuple:
					kv = v
				}
				if len(kv) != 2 {
					return nil, fmt.Errorf("OrderedDict item %d is a %s, not a pair", i, typeName(it))
				}
				d.set(kv[0], kv[1])
			}
			return d, nil
		}
		return nil, fmt.Errorf("OrderedDict with %d arguments", len(args))
	case "torch._utils._rebuild_tensor", "torch._utils._rebuild_tensor_v2":
		// (storage, storage_offset, size, stride[, requires_grad, backward_hooks[, metadata]])
		if len(args) < 4 {
			return nil, fmt.Errorf("%s with %d arguments", fn.name, len(args))
		}
		s, ok := args[0].(*storageRef)
		if !ok {
			return nil, fmt.Errorf("%s of a %s, not a storage", fn.name, typeName(args[0]))
		}
		off, ok := args[1].(int64)
		if !ok || off < 0 {
			return nil, fmt.Errorf("%s: storage offset %s", fn.name, typeName(args[1]))
		}
		size, err := intTuple(args[2])
		if err != nil {
			return nil, fmt.Errorf("%s: size: %w", fn.name, err)
		}
		stride, err := intTuple(args[3])
		if err != nil {
			return nil, fmt.Errorf("%s: stride: %w", fn.name, err)
		}
		if len(size) != len(stride) {
			return nil, fmt.Errorf("%s: size %v and stride %v differ in rank", fn.name, size, stride)
		}
		return &tensorRef{storage: s, offset: off, size: size, stride: stride}, nil
	case "torch._utils._rebuild_parameter", "torch._utils._rebuild_parameter_with_state":
		if len(args) < 1 {
			return nil, fmt.Errorf("%s with no arguments", fn.name)
		}
		t, ok := args[0].(*tensorRef)
		if !ok {
			return nil, fmt.Errorf("%s of a %s", fn.name, typeName(args[0]))
		}
		return t, nil
	}
	return nil, fmt.Errorf("%s.%s is not callable", fn.module, fn.name)
}

func intTuple(v any) ([]int64, error) {
	t, ok := v.(pyTuple)
	if !ok {
		return nil, fmt.Errorf("a %s, not a tuple", typeName(v))
	}
	out := make([]int64, len(t))
	for i, x := range t {
		n, ok := x.(int64)
		if !ok {
			return nil, fmt.Errorf("element %d is a %s", i, typeName(x))
		}
		out[i] = n
	}
	return out, nil
}

// persistent resolves a persistent id: ('storage', storage_type, key, location, numel) in
// the zip format, with a sixth element (view_metadata) in the legacy one. The same key
// always names the same storage.
func (u *unpickler) persistent(pid any) (*storageRef, error) {
	t, ok := pid.(pyTuple)
	if !ok || len(t) < 5 || len(t) > 6 {
		return nil, fmt.Errorf("persistent id is a %s, not a 5- or 6-tuple", typeName(pid))
	}
	if kind, _ := t[0].(string); kind != "storage" {
		return nil, fmt.Errorf("persistent id of kind %v", typeName(t[0]))
	}
	g, ok := t[1].(pyGlobal)
	if !ok {
		return nil, fmt.Errorf("storage type is a %s", typeName(t[1]))
	}
	dt, ok := storageTypes[g.name]
	if !ok {
		return nil, fmt.Errorf("storage type %s.%s", g.module, g.name)
	}
	key, ok := t[2].(string)
	if !ok {
		return nil, fmt.Errorf("storage key is a %s", typeName(t[2]))
	}
	n, ok := t[4].(int64)
	if !ok || n < 0 {
		return nil, fmt.Errorf("storage %q: element count is a %s", key, typeName(t[4]))
	}
	s, seen := u.storages[key]
	if !seen {
		s = &storageRef{key: key, dtype: dt, numel: n}
		u.storages[key] = s
	} else if s.dtype != dt || s.numel != n {
		return nil, fmt.Errorf("storage %q is %d×%s and %d×%s", key, s.numel, s.dtype, n, dt)
	}
	if len(t) == 6 && t[5] != nil {
		// Legacy view: (view_key, offset, view_size) into the root storage.
		v, ok := t[5].(pyTuple)
		if !ok || len(v) != 3 {
			return nil, fmt.Errorf("storage %q: view metadata is a %s", key, typeName(t[5]))
		}
		vkey, ok1 := v[0].(string)
		off, ok2 := v[1].(int64)
		vn, ok3 := v[2].(int64)
		if !ok1 || !ok2 || !ok3 || off < 0 || vn < 0 || off > n || vn > n-off {
			return nil, fmt.Errorf("storage %q: bad view metadata", key)
		}
		view := &storageRef{key: vkey, dtype: dt, numel: vn, base: s, offset: off}
		if old, ok := u.views[vkey]; ok {
			if old.base != s || old.offset != off || old.numel != vn {
				return nil, fmt.Errorf("storage view %q defined twice", vkey)
			}
			return old, nil
		}
		u.views[vkey] = view
		return view, nil
	}
	return s, nil
}
