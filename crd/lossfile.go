package crd

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
)

// A loss file is the input of `crdgo loss`, for cross-checking other
// implementations of the loss:
//
//	{"shape_NCHW": [N, C, H, W], "patch_size": P,
//	 "teacher": [N·C·H·W numbers], "student": [N·C·H·W numbers]}
//
// teacher and student are flat, row-major NCHW. ReadLossFile decodes it as a
// stream: once the shape is known, a tensor's numbers are converted to float32
// as they are read and reading stops at the first number past N·C·H·W, so a
// huge file with a small shape costs neither time nor memory. A tensor that
// comes before "shape_NCHW" is held (as float32) up to MaxEarlyNumbers.

// MaxEarlyNumbers bounds a tensor that comes before "shape_NCHW" in a loss
// file: its length cannot be checked until the shape is known.
const MaxEarlyNumbers = 1 << 24

// LossInput is a validated loss file.
type LossInput struct {
	Shape            [4]int // N, C, H, W
	Patch            int
	Teacher, Student []float32
}

// ReadLossFile decodes and validates a loss file from r (name is for errors),
// reading at most limit bytes. It reports every problem of the shape and the
// tensors at once; a syntax error, an unknown key or an oversized input stops it
// at once.
func ReadLossFile(name string, r io.Reader, limit int64) (LossInput, error) {
	fail := func(format string, a ...any) error {
		return fmt.Errorf("loss: %s: "+format, append([]any{name}, a...)...)
	}
	sc := &lossScanner{r: bufio.NewReaderSize(&limitedReader{r: r, left: limit}, 64<<10)}
	wrap := func(err error) error {
		if errors.Is(err, errTooLarge) {
			return fail("larger than %d bytes", limit)
		}
		return fail("%w", err)
	}
	c, err := sc.next()
	if errors.Is(err, io.EOF) && sc.offset == 0 {
		return LossInput{}, fail(`empty file: want a JSON object {"shape_NCHW": [N, C, H, W], "patch_size": P, "teacher": [...], "student": [...]}`)
	}
	if err != nil {
		return LossInput{}, wrap(sc.eof(err))
	}
	if c != '{' {
		return LossInput{}, fail("want a JSON object, got %s", sc.what(c))
	}
	var (
		in      LossInput
		shape   []int
		patch   *int
		tensors = map[string]*tensorRead{}
		seen    = map[string]bool{}
		errs    []error
		bad     = func(format string, a ...any) { errs = append(errs, fail(format, a...)) }
		want    = -1 // N·C·H·W once the shape and patch are known and valid
		stopped bool // a tensor had more numbers than want: reading ended there
	)
	known := func() {
		if want >= 0 || shape == nil || patch == nil || len(shape) != 4 {
			return
		}
		copy(in.Shape[:], shape)
		in.Patch = *patch
		if CheckShape(in.Shape, in.Patch, Intended) == nil {
			want = in.Shape[0] * in.Shape[1] * in.Shape[2] * in.Shape[3] // checked: no overflow
		}
	}
	for first := true; ; first = false {
		c, err := sc.next()
		if err != nil {
			return LossInput{}, wrap(sc.eof(err))
		}
		if c == '}' && first {
			break
		}
		if !first {
			if c == '}' {
				break
			}
			if c != ',' {
				return LossInput{}, wrap(sc.syntax(c, "after object value"))
			}
			if c, err = sc.next(); err != nil {
				return LossInput{}, wrap(sc.eof(err))
			}
		}
		key, err := sc.key(c)
		if err != nil {
			return LossInput{}, wrap(err)
		}
		if seen[key] {
			return LossInput{}, fail("key %q appears twice", key)
		}
		seen[key] = true
		switch key {
		case "shape_NCHW":
			shape, err = sc.ints(16)
			known()
		case "patch_size":
			var p int
			var isNull bool
			if p, isNull, err = sc.int(); err == nil && !isNull {
				patch = &p
			}
			known()
		case "teacher", "student":
			t := &tensorRead{key: key, want: want}
			err = sc.tensor(t)
			tensors[key] = t
		default:
			return LossInput{}, fail("json: unknown field %q", key)
		}
		if errors.Is(err, errStop) {
			stopped = true
			break
		}
		if err != nil {
			var v *valueError
			if errors.As(err, &v) {
				return LossInput{}, fail("%q%s", key, v.msg)
			}
			return LossInput{}, wrap(err)
		}
	}
	if c, err := sc.next(); stopped {
		// A tensor is too long: the rest of the input does not matter.
	} else if err == nil {
		return LossInput{}, fail("data after the JSON object (%s at byte %d)", sc.what(c), sc.offset)
	} else if !errors.Is(err, io.EOF) {
		return LossInput{}, wrap(err)
	}

	switch {
	case shape == nil:
		bad(`"shape_NCHW" is missing`)
	case len(shape) != 4:
		bad(`"shape_NCHW" = %v: want 4 sizes [N, C, H, W]`, shape)
	}
	if patch == nil {
		bad(`"patch_size" is missing`)
	}
	if len(errs) == 0 {
		if err := CheckShape(in.Shape, in.Patch, Intended); err != nil {
			bad(`"shape_NCHW", "patch_size": %w`, err)
		}
	}
	if len(errs) == 0 {
		want = in.Shape[0] * in.Shape[1] * in.Shape[2] * in.Shape[3]
		for _, key := range []string{"teacher", "student"} {
			t := tensors[key]
			switch {
			case t == nil || t.null:
				bad("%q is missing", key)
			case t.err != nil:
				bad("%w", t.err)
			case t.over || len(t.v) != want:
				n := strconv.Itoa(len(t.v))
				if t.over {
					n = "more than " + n
				}
				bad("%q has %s numbers; shape_NCHW wants N·C·H·W = %d", key, n, want)
			}
		}
		if len(errs) == 0 {
			in.Teacher, in.Student = tensors["teacher"].v, tensors["student"].v
		}
	}
	if err := errors.Join(errs...); err != nil {
		return LossInput{}, err
	}
	return in, nil
}

// valueError is a value of the right JSON syntax but the wrong kind or range;
// its message follows the key's name.
type valueError struct{ msg string }

func (e *valueError) Error() string { return e.msg }

// tensorRead is one tensor of a loss file as it is read.
type tensorRead struct {
	key  string
	want int // its length when the shape is known; -1 before
	v    []float32
	null bool
	over bool  // stopped at the first number past want
	err  error // the first number out of the float32 range
}

// lossScanner reads the JSON of a loss file: an object whose values are
// integers, arrays of numbers, or null. It is a small hand-written scanner
// because encoding/json either holds a whole value in memory (Decode) or costs
// a microsecond a number (Token).
type lossScanner struct {
	r      *bufio.Reader
	offset int64
	num    []byte
}

func (s *lossScanner) readByte() (byte, error) {
	c, err := s.r.ReadByte()
	if err == nil {
		s.offset++
	}
	return c, err
}

// next returns the next byte that is not white space.
func (s *lossScanner) next() (byte, error) {
	for {
		c, err := s.readByte()
		if err != nil {
			return 0, err
		}
		if c != ' ' && c != '\t' && c != '\n' && c != '\r' {
			return c, nil
		}
	}
}

// eof turns the end of the input inside the object into "unexpected EOF".
func (s *lossScanner) eof(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

func (s *lossScanner) what(c byte) string {
	switch c {
	case '"':
		return "string"
	case '{':
		return "object"
	case '[':
		return "array"
	case 't', 'f':
		return "bool"
	case 'n':
		return "null"
	}
	if c == '-' || (c >= '0' && c <= '9') {
		return "number"
	}
	return strconv.QuoteRune(rune(c))
}

func (s *lossScanner) syntax(c byte, where string) error {
	return fmt.Errorf("invalid character %s %s (byte %d)", strconv.QuoteRune(rune(c)), where, s.offset)
}

// key reads an object key that starts with c, and the colon after it.
func (s *lossScanner) key(c byte) (string, error) {
	if c != '"' {
		return "", s.syntax(c, "looking for beginning of object key string")
	}
	raw := []byte{'"'}
	for esc := false; ; {
		c, err := s.readByte()
		if err != nil {
			return "", s.eof(err)
		}
		raw = append(raw, c)
		if len(raw) > 256 {
			return "", fmt.Errorf("object key longer than 256 bytes (byte %d)", s.offset)
		}
		if esc {
			esc = false
			continue
		}
		if c == '\\' {
			esc = true
		} else if c == '"' {
			break
		}
	}
	var key string
	if err := json.Unmarshal(raw, &key); err != nil {
		return "", fmt.Errorf("object key %s: %w", raw, err)
	}
	c, err := s.next()
	if err != nil {
		return "", s.eof(err)
	}
	if c != ':' {
		return "", s.syntax(c, "after object key")
	}
	return key, nil
}

// number reads a JSON number that starts with c into s.num.
func (s *lossScanner) number(c byte) error {
	s.num = append(s.num[:0], c)
	for {
		b, err := s.r.Peek(1)
		if err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return err
		}
		if !(b[0] >= '0' && b[0] <= '9' || b[0] == '.' || b[0] == 'e' || b[0] == 'E' || b[0] == '+' || b[0] == '-') {
			break
		}
		s.num = append(s.num, b[0])
		s.readByte()
		if len(s.num) > 64 {
			return fmt.Errorf("number longer than 64 bytes (byte %d)", s.offset)
		}
	}
	if !validNumber(s.num) {
		return fmt.Errorf("invalid number %q (byte %d)", s.num, s.offset)
	}
	return nil
}

// validNumber checks JSON's number grammar: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func validNumber(b []byte) bool {
	i := 0
	digits := func() int {
		j := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		return i - j
	}
	if i < len(b) && b[i] == '-' {
		i++
	}
	if i < len(b) && b[i] == '0' {
		i++
	} else if digits() == 0 {
		return false
	}
	if i < len(b) && b[i] == '.' {
		i++
		if digits() == 0 {
			return false
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if digits() == 0 {
			return false
		}
	}
	return i == len(b)
}

// literal reads the rest of null (c is its 'n').
func (s *lossScanner) null(c byte) error {
	for _, want := range []byte("ull") {
		b, err := s.readByte()
		if err != nil {
			return s.eof(err)
		}
		if b != want {
			return s.syntax(b, "in literal null")
		}
	}
	return nil
}

// value starts a value: it returns its first byte after checking that it is
// one this format allows where kind is wanted.
func (s *lossScanner) value(kind string) (byte, error) {
	c, err := s.next()
	if err != nil {
		return 0, s.eof(err)
	}
	switch {
	case c == 'n':
		return c, s.null(c)
	case c == '[' || c == '-' || (c >= '0' && c <= '9'):
		return c, nil
	case c == '"' || c == '{' || c == 't' || c == 'f':
		return 0, &valueError{fmt.Sprintf(": cannot unmarshal %s into %s", s.what(c), kind)}
	}
	return 0, s.syntax(c, "looking for beginning of value")
}

// int reads an integer or null.
func (s *lossScanner) int() (v int, isNull bool, err error) {
	c, err := s.value("an integer")
	if err != nil || c == 'n' {
		return 0, c == 'n', err
	}
	if c == '[' {
		return 0, false, &valueError{": cannot unmarshal array into an integer"}
	}
	if err := s.number(c); err != nil {
		return 0, false, err
	}
	n, err := strconv.Atoi(string(s.num))
	if err != nil {
		return 0, false, &valueError{fmt.Sprintf(": cannot unmarshal number %s into an integer", s.num)}
	}
	return n, false, nil
}

// elements calls each for every element of the array that starts at the next
// value (or not at all for null), with its first byte and its index.
func (s *lossScanner) elements(kind string, each func(c byte, q int) error) (isNull bool, err error) {
	c, err := s.value("an array of " + kind)
	if err != nil || c == 'n' {
		return c == 'n', err
	}
	if c != '[' {
		return false, &valueError{fmt.Sprintf(": cannot unmarshal number into an array of %s", kind)}
	}
	for q := 0; ; q++ {
		c, err := s.next()
		if err != nil {
			return false, s.eof(err)
		}
		if c == ']' && q == 0 {
			return false, nil
		}
		if q > 0 {
			if c == ']' {
				return false, nil
			}
			if c != ',' {
				return false, s.syntax(c, "after array element")
			}
			if c, err = s.next(); err != nil {
				return false, s.eof(err)
			}
		}
		if c == '"' || c == '{' || c == '[' || c == 't' || c == 'f' || c == 'n' {
			return false, &valueError{fmt.Sprintf("[%d]: cannot unmarshal %s into a number", q, s.what(c))}
		}
		if c != '-' && (c < '0' || c > '9') {
			return false, s.syntax(c, "looking for beginning of value")
		}
		if err := each(c, q); err != nil {
			return false, err
		}
	}
}

// errEnough ends an array early: the rest of the input does not matter.
var errEnough = errors.New("enough")

// ints reads an array of at most max integers (or null).
func (s *lossScanner) ints(max int) ([]int, error) {
	out := []int{}
	isNull, err := s.elements("integers", func(c byte, q int) error {
		if err := s.number(c); err != nil {
			return err
		}
		n, err := strconv.Atoi(string(s.num))
		if err != nil {
			return &valueError{fmt.Sprintf("[%d]: cannot unmarshal number %s into an integer", q, s.num)}
		}
		if q == max {
			return &valueError{fmt.Sprintf(": more than %d sizes: want 4 sizes [N, C, H, W]", max)}
		}
		out = append(out, n)
		return nil
	})
	if isNull {
		return nil, err
	}
	return out, err
}

// tensor reads t's array. Once the shape is known (t.want ≥ 0) it stops at the
// first number past t.want: the input is refused, and the rest of it does not
// matter.
func (s *lossScanner) tensor(t *tensorRead) error {
	limit := t.want
	if limit < 0 {
		limit = MaxEarlyNumbers
	} else {
		t.v = make([]float32, 0, limit)
	}
	isNull, err := s.elements("numbers", func(c byte, q int) error {
		if q == limit {
			t.over = true
			if t.want < 0 {
				return &valueError{fmt.Sprintf(` comes before "shape_NCHW" and has more than %d numbers: put "shape_NCHW" first`, MaxEarlyNumbers)}
			}
			return errEnough
		}
		if err := s.number(c); err != nil {
			return err
		}
		x, err := strconv.ParseFloat(string(s.num), 64)
		if err != nil {
			return &valueError{fmt.Sprintf("[%d]: cannot unmarshal number %s into a float64", q, s.num)}
		}
		if math.Abs(x) > math.MaxFloat32 && t.err == nil {
			t.err = fmt.Errorf("%q[%d] = %g: outside the float32 range", t.key, q, x)
		}
		t.v = append(t.v, float32(x))
		return nil
	})
	t.null = isNull
	if errors.Is(err, errEnough) {
		return errStop
	}
	return err
}

// errStop ends reading the file: a tensor has more numbers than the shape
// wants, which is reported with the other problems.
var errStop = errors.New("stop")

var errTooLarge = errors.New("input over the limit")

// limitedReader reads at most left bytes from r, then fails with errTooLarge
// for good (io.LimitReader would end with io.EOF, which reads as the end of the
// JSON). One byte is read past the limit to tell a file of exactly limit bytes
// from a longer one.
type limitedReader struct {
	r    io.Reader
	left int64
	over bool
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.over {
		return 0, errTooLarge
	}
	if l.left <= 0 {
		var b [1]byte
		n, err := l.r.Read(b[:])
		if n > 0 {
			l.over = true
			return 0, errTooLarge
		}
		return 0, err
	}
	if int64(len(p)) > l.left {
		p = p[:l.left]
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	return n, err
}

// RelationJSON is one relation of one slice set, as `crdgo loss` prints it.
type RelationJSON struct {
	Distance float64 `json:"distance"`
	Angle    float64 `json:"angle"`
	RKD      float64 `json:"rkd"`
}

// ImageJSON is one image's three slice sets.
type ImageJSON struct {
	Row    RelationJSON `json:"row"`
	Column RelationJSON `json:"column"`
	Patch  RelationJSON `json:"patch"`
}

// LossReport is what `crdgo loss` prints for a loss file (see LossInput.Report).
type LossReport struct {
	PerImage             []ImageJSON `json:"per_image"`
	CycleGANTotal        *float64    `json:"cyclegan_total,omitempty"`
	Pix2PixTotal         float64     `json:"pix2pix_total"`
	Pix2PixTotalOfficial *float64    `json:"pix2pix_total_official,omitempty"`
	GradCycleGANTotal    []float64   `json:"grad_cyclegan_total,omitempty"`
}

// Report evaluates the loss on in: the per-image relations (compat intended),
// the pix2pix total, and for N = 1 the CycleGAN total and its gradient with
// respect to the student, and for C = 3 the released code's pix2pix term
// (compat official). name is for errors: a value JSON cannot carry (only
// extreme inputs get there: the gradient of exactly duplicated student vectors
// is scaled by 1/1e-12, docs/crd.md §9 D12, and can overflow float32) is an error
// naming it.
func (in LossInput) Report(name string) (LossReport, error) {
	var w Workspace
	var out LossReport
	total, per := w.Pix2Pix(in.Student, in.Teacher, in.Shape, in.Patch, Intended, nil, 0)
	out.Pix2PixTotal = total
	rel := func(r Relation) RelationJSON { return RelationJSON{r.Distance, r.Angle, r.RKD} }
	for _, it := range per {
		out.PerImage = append(out.PerImage, ImageJSON{rel(it.Row), rel(it.Column), rel(it.Patch)})
	}
	if in.Shape[0] == 1 {
		grad := make([]float32, len(in.Student))
		total, _ := w.CycleGAN(in.Student, in.Teacher, in.Shape, in.Patch, grad, 1)
		out.CycleGANTotal = &total
		out.GradCycleGANTotal = make([]float64, len(grad))
		for q, g := range grad {
			out.GradCycleGANTotal[q] = float64(g)
		}
	}
	if in.Shape[1] == 3 {
		total, _ := w.Pix2Pix(in.Student, in.Teacher, in.Shape, in.Patch, Official, nil, 0)
		out.Pix2PixTotalOfficial = &total
	}
	return out, out.checkFinite(name)
}

// checkFinite names the first value of r that JSON cannot carry.
func (r LossReport) checkFinite(name string) error {
	bad := func(what string, v float64) error {
		return fmt.Errorf("loss: %s: %s = %v is not finite", name, what, v)
	}
	for b, it := range r.PerImage {
		for _, s := range []struct {
			set string
			rel RelationJSON
		}{{"row", it.Row}, {"column", it.Column}, {"patch", it.Patch}} {
			for _, v := range []float64{s.rel.Distance, s.rel.Angle, s.rel.RKD} {
				if math.IsNaN(v) || math.IsInf(v, 0) {
					return bad(fmt.Sprintf("per_image[%d].%s", b, s.set), v)
				}
			}
		}
	}
	for _, v := range []*float64{r.CycleGANTotal, &r.Pix2PixTotal, r.Pix2PixTotalOfficial} {
		if v != nil && (math.IsNaN(*v) || math.IsInf(*v, 0)) {
			return bad("a total", *v)
		}
	}
	for q, v := range r.GradCycleGANTotal {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return bad(fmt.Sprintf("grad_cyclegan_total[%d]", q), v)
		}
	}
	return nil
}
