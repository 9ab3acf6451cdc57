package allreduce

import (
	"bytes"
	"errors"
	"testing"
)

func sampleHeader() Header {
	return Header{From: 3, To: 4, Job: nameHash("job"), Gen: 7, Step: 1234, Phase: nameHash("D"), Op: 9,
		Total: 1000, RingStep: 5, Chunk: 2, Count: 3}
}

func frameOf(h Header, payload ...float32) []byte {
	b := make([]byte, HeaderSize)
	PutHeader(b, h)
	return append(b, wireBytes(payload, make([]byte, 4*len(payload)))...)
}

func TestFrameRoundTrip(t *testing.T) {
	h := sampleHeader()
	f := frameOf(h, 1.5, -2, 3)
	got, payload, err := DecodeFrame(f)
	if err != nil {
		t.Fatal(err)
	}
	if got != h {
		t.Fatalf("DecodeFrame(PutHeader(%+v)) = %+v", h, got)
	}
	dst := make([]float32, 3)
	copyWire(dst, payload)
	if dst[0] != 1.5 || dst[1] != -2 || dst[2] != 3 {
		t.Fatalf("payload = %v; want [1.5 -2 3]", dst)
	}
	addWire(dst, payload)
	if dst[0] != 3 || dst[1] != -4 || dst[2] != 6 {
		t.Fatalf("payload added twice = %v; want [3 -4 6]", dst)
	}
	// Unaligned payloads take the portable path and give the same values.
	odd := append([]byte{0}, payload...)[1:]
	addWire(dst, odd)
	if dst[0] != 4.5 || dst[1] != -6 || dst[2] != 9 {
		t.Fatalf("unaligned payload added = %v; want [4.5 -6 9]", dst)
	}
}

func TestDecodeFrameRejects(t *testing.T) {
	good := frameOf(sampleHeader(), 1, 2, 3)
	mutate := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	big := sampleHeader()
	big.Count, big.Total = 1<<30, 1<<31
	for _, tc := range []struct {
		name  string
		frame []byte
	}{
		{"empty", nil},
		{"short header", good[:HeaderSize-1]},
		{"bad magic", mutate(func(b []byte) []byte { b[0] = 'X'; return b })},
		{"bad version", mutate(func(b []byte) []byte { b[4] = 2; return b })},
		{"bad kind", mutate(func(b []byte) []byte { b[5] = 9; return b })},
		{"payload short", good[:len(good)-1]},
		{"payload long", append(append([]byte(nil), good...), 0)},
		{"count beyond total", frameOf(Header{Total: 2, Count: 3}, 1, 2, 3)},
		{"huge count", frameOf(big)},
	} {
		if _, _, err := DecodeFrame(tc.frame); !errors.Is(err, ErrMalformed) {
			t.Errorf("DecodeFrame(%s) err = %v; want ErrMalformed", tc.name, err)
		}
	}
}

// judge is the protocol: what a receiver does with each kind of frame.
func TestJudge(t *testing.T) {
	want := sampleHeader()
	for _, tc := range []struct {
		name string
		edit func(h *Header)
		v    verdict
	}{
		{"expected", func(h *Header) {}, accept},
		{"other job", func(h *Header) { h.Job++ }, dropForeign},
		{"other receiver", func(h *Header) { h.To++ }, dropMisrouted},
		{"other sender", func(h *Header) { h.From++ }, dropMisrouted},
		{"older generation", func(h *Header) { h.Gen--; h.Op = 100 }, dropStaleGen},
		{"newer generation", func(h *Header) { h.Gen++; h.Op = 0 }, failNewerGen},
		{"older operation", func(h *Header) { h.Op--; h.Step = 1 }, dropStaleOp},
		{"later operation", func(h *Header) { h.Op++ }, failLaterOp},
		{"other step", func(h *Header) { h.Step++ }, failMismatch},
		{"other phase", func(h *Header) { h.Phase++ }, failMismatch},
		{"other length", func(h *Header) { h.Total++ }, failMismatch},
		{"skipped chunk", func(h *Header) { h.Chunk++ }, failOrder},
		{"other ring step", func(h *Header) { h.RingStep++ }, failOrder},
		{"other chunk size", func(h *Header) { h.Count++ }, failMismatch},
	} {
		h := want
		tc.edit(&h)
		if got := judge(h, want); got != tc.v {
			t.Errorf("judge(%s) = %v; want %v", tc.name, got, tc.v)
		}
	}
}

func TestControlRoundTrip(t *testing.T) {
	for _, m := range []ctlMsg{
		{Kind: ctlHello, From: 1, To: 2, Job: 3, Gen: 4},
		{Kind: ctlGrant, From: 2, To: 1, Lane: 5, Job: 3, Gen: 4, Value: 99},
		{Kind: ctlAddr, From: 2, To: 1, Job: 3, Gen: 4, Addr: "10.0.0.1:7001"},
	} {
		got, err := decodeCtl(m.encode())
		if err != nil || got != m {
			t.Errorf("decodeCtl(encode(%+v)) = %+v, %v", m, got, err)
		}
	}
	for name, b := range map[string][]byte{
		"short":          make([]byte, ctlSize-1),
		"addr missing":   ctlMsg{Kind: ctlAddr}.encode(),
		"grant trailing": append(ctlMsg{Kind: ctlGrant}.encode(), 'x'),
		"bad kind":       ctlMsg{Kind: 7}.encode(),
	} {
		if _, err := decodeCtl(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("decodeCtl(%s) err = %v; want ErrMalformed", name, err)
		}
	}
}

// FuzzDecodeFrame: any input either fails to decode or decodes to a header that
// encodes back to the same bytes, with a payload of exactly Count values.
func FuzzDecodeFrame(f *testing.F) {
	f.Add(frameOf(sampleHeader(), 1, 2, 3))
	f.Add(frameOf(Header{Total: 1}))
	f.Add([]byte("CRAR"))
	f.Add(make([]byte, HeaderSize))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, payload, err := DecodeFrame(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("DecodeFrame error %v does not wrap ErrMalformed", err)
			}
			return
		}
		if len(payload) != 4*int(h.Count) || h.Count > h.Total {
			t.Fatalf("DecodeFrame: count %d total %d, payload %d bytes", h.Count, h.Total, len(payload))
		}
		enc := make([]byte, HeaderSize)
		PutHeader(enc, h)
		if !bytes.Equal(enc, b[:HeaderSize]) {
			t.Fatalf("header does not round-trip:\n in  % x\n out % x", b[:HeaderSize], enc)
		}
	})
}

// FuzzDecodeControl: control messages decode or fail, and what decodes
// round-trips.
func FuzzDecodeControl(f *testing.F) {
	f.Add(ctlMsg{Kind: ctlHello, From: 1, To: 2, Job: 3, Gen: 4}.encode())
	f.Add(ctlMsg{Kind: ctlAddr, Addr: "127.0.0.1:1"}.encode())
	f.Add([]byte("CRCT\x01\x02"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeCtl(b)
		if err != nil {
			return
		}
		if !bytes.Equal(m.encode(), b) {
			t.Fatalf("control message does not round-trip: % x", b)
		}
	})
}
