package crd

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"runtime"
	"strings"
	"testing"

	"github.com/crdgo/crdgo/internal/fuzzmin"
)

// endlessNumbers is a loss file whose teacher never ends: "0.5," forever, after
// a head that gives a small shape. It counts the bytes read.
type endlessNumbers struct {
	head []byte
	read int64
}

func (e *endlessNumbers) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		if len(e.head) > 0 {
			c := copy(p[n:], e.head)
			e.head = e.head[c:]
			n += c
			continue
		}
		c := copy(p[n:], "0.5,")
		n += c
		if c < 4 {
			break
		}
	}
	e.read += int64(n)
	return n, nil
}

// TestLossFileStopsAtTheFirstExtraNumber reproduces issue 19's fifth defect: a
// 240 MB file with shape [1,1,2,2] was read whole (36 s, 4.8 GB) before its
// length was checked. The reader now stops at the fifth number: it reads a few
// KiB of an endless file and allocates next to nothing.
func TestLossFileStopsAtTheFirstExtraNumber(t *testing.T) {
	src := &endlessNumbers{head: []byte(`{"shape_NCHW":[1,1,2,2],"patch_size":1,"teacher":[`)}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := ReadLossFile("big.json", src, 256<<20)
	runtime.ReadMemStats(&after)
	if err == nil || !strings.Contains(err.Error(), `big.json: "teacher" has more than 4 numbers; shape_NCHW wants N·C·H·W = 4`) {
		t.Errorf("ReadLossFile(endless teacher) = %v; want a length error naming the file and the tensor", err)
	}
	if src.read > 64<<10 {
		t.Errorf("read %d bytes of an endless file; want it to stop at the fifth number (a few KiB)", src.read)
	}
	if got := after.TotalAlloc - before.TotalAlloc; got > 1<<20 {
		t.Errorf("allocated %d bytes; want < 1 MiB", got)
	}
}

func TestLossFileLimits(t *testing.T) {
	in := []byte(`{"shape_NCHW":[1,1,4,4],"patch_size":2,"teacher":[],"student":[]}`)
	if _, err := ReadLossFile("x.json", bytes.NewReader(in), int64(len(in)-1)); err == nil || !strings.Contains(err.Error(), "x.json: larger than") {
		t.Errorf("input over the limit: error %v; want \"larger than\"", err)
	}
	if _, err := ReadLossFile("x.json", bytes.NewReader(in), int64(len(in))); err == nil || !strings.Contains(err.Error(), `"teacher" has 0 numbers`) {
		t.Errorf("input of exactly the limit: error %v; want it read (and its empty teacher refused)", err)
	}
	early := `{"teacher":[` + strings.Repeat("1,", MaxEarlyNumbers) + `1]}`
	if _, err := ReadLossFile("x.json", strings.NewReader(early), 1<<30); err == nil || !strings.Contains(err.Error(), `put "shape_NCHW" first`) {
		t.Errorf("a huge tensor before the shape: error %v; want \"put shape_NCHW first\"", err)
	}
	for _, c := range []struct{ input, want string }{
		{"", "x.json: empty file"},
		{"  \n", "x.json: unexpected EOF"},
		{"[1]", "want a JSON object"},
		{`{"shape_NCHW":[1,1,4,4],"shape_NCHW":[1,1,4,4]}`, `key "shape_NCHW" appears twice`},
		{`{"shape_NCHW":[1,1,4,4],"patch_size":2,"teacher":{},"student":[]}`, `"teacher": cannot unmarshal object into an array of numbers`},
		{`{"shape_NCHW":"x"}`, `"shape_NCHW": cannot unmarshal string into an array of integers`},
		{`{"shape_NCHW":[` + strings.Repeat("1,", 20) + `1]}`, "more than 16 sizes"},
		{`{"teacher":[1,2],"shape_NCHW":[1,1,4,4],"patch_size":2,"student":[]}`, `"teacher" has 2 numbers`},
	} {
		if _, err := ReadLossFile("x.json", strings.NewReader(c.input), 1<<20); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ReadLossFile(%.40q) = %v; want an error containing %q", c.input, err, c.want)
		}
	}
}

// TestMain shortens the fuzzer's minimisation (internal/fuzzmin).
func TestMain(m *testing.M) {
	fuzzmin.Default()
	os.Exit(m.Run())
}

// FuzzLossInput: whatever the bytes, reading and evaluating returns a result or an error.
func FuzzLossInput(f *testing.F) {
	f.Add([]byte(`{"shape_NCHW":[1,3,4,4],"patch_size":2,"teacher":[` + strings.Repeat("0.1,", 47) + `1],"student":[` + strings.Repeat("-0.3,", 47) + `0]}`))
	f.Add([]byte(`{"shape_NCHW":[2,1,3,5],"patch_size":1,"teacher":[` + strings.Repeat("1,", 29) + `1],"student":[` + strings.Repeat("1,", 29) + `1]}`))
	f.Add([]byte(`{"shape_NCHW":[1,3,2,2],"patch_size":1,"teacher":[1,2,3,4,5,6,7,8,9,10,11,12],"student":[0,0,0,0,0,0,0,0,0,0,0,3e38]}`))
	f.Add([]byte(`{"shape_NCHW":[1,1,4,4],"patch_size":2}`))
	f.Add([]byte(`[1,2,3]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		in, err := ReadLossFile("fuzz.json", bytes.NewReader(data), 1<<16)
		if err != nil {
			return
		}
		if in.Shape[2] > 64 || in.Shape[3] > 64 || in.Shape[0] > 4 {
			return // valid but slow: the fuzzer looks for panics, not timings
		}
		out, err := in.Report("fuzz.json")
		if err != nil {
			return
		}
		if _, err := json.Marshal(out); err != nil {
			t.Fatalf("Report accepted %q but its output does not marshal: %v", data, err)
		}
	})
}

var _ io.Reader = (*endlessNumbers)(nil)
