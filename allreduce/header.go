package allreduce

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
)

// HeaderSize is the size in bytes of the header that starts every chunk frame.
const HeaderSize = 64

const (
	frameVersion = 1
	kindChunk    = 1
)

var frameMagic = [4]byte{'C', 'R', 'A', 'R'}

// Header identifies one chunk of one ring operation. On the wire it is HeaderSize
// bytes, little-endian, followed by Count float32 values (little-endian):
//
//	off size field
//	0   4    magic "CRAR"
//	4   1    version (1)
//	5   1    kind (1: chunk)
//	6   2    From: sender rank
//	8   8    Job: FNV-1a 64 of the job name
//	16  8    Gen: generation
//	24  8    Step: training step
//	32  8    Phase: FNV-1a 64 of the phase name
//	40  8    Op: operation number within the generation
//	48  4    Total: elements in the whole buffer
//	52  2    RingStep: k in [0, 2(world-1))
//	54  2    To: receiver rank
//	56  4    Chunk: chunk index within the segment
//	60  4    Count: float32 values that follow
//
// The receiver checks every field against what it expects next, so a frame from
// another job, generation or operation is dropped and counted, and a frame that
// does not fit the plan fails the operation; none is ever applied.
type Header struct {
	From     uint16
	To       uint16
	Job      uint64
	Gen      uint64
	Step     uint64
	Phase    uint64
	Op       uint64
	Total    uint32
	RingStep uint16
	Chunk    uint32
	Count    uint32
}

// ErrMalformed is wrapped by errors about frames that do not decode.
var ErrMalformed = errors.New("malformed frame")

// maxCount bounds Count so that HeaderSize+4*Count fits in an int on every
// platform; transports bound it further by the configured chunk size.
const maxCount = 1<<29 - HeaderSize/4

// PutHeader writes h into b[:HeaderSize].
func PutHeader(b []byte, h Header) {
	_ = b[HeaderSize-1]
	copy(b[0:4], frameMagic[:])
	b[4] = frameVersion
	b[5] = kindChunk
	le := binary.LittleEndian
	le.PutUint16(b[6:], h.From)
	le.PutUint64(b[8:], h.Job)
	le.PutUint64(b[16:], h.Gen)
	le.PutUint64(b[24:], h.Step)
	le.PutUint64(b[32:], h.Phase)
	le.PutUint64(b[40:], h.Op)
	le.PutUint32(b[48:], h.Total)
	le.PutUint16(b[52:], h.RingStep)
	le.PutUint16(b[54:], h.To)
	le.PutUint32(b[56:], h.Chunk)
	le.PutUint32(b[60:], h.Count)
}

// ParseHeader decodes the header at the start of b without looking at the payload.
// Transports that frame a byte stream use it to learn how long the frame is.
func ParseHeader(b []byte) (Header, error) {
	if len(b) < HeaderSize {
		return Header{}, fmt.Errorf("%w: %d bytes, header needs %d", ErrMalformed, len(b), HeaderSize)
	}
	if [4]byte(b[0:4]) != frameMagic {
		return Header{}, fmt.Errorf("%w: magic %q, want %q", ErrMalformed, b[0:4], frameMagic[:])
	}
	if b[4] != frameVersion {
		return Header{}, fmt.Errorf("%w: version %d, want %d", ErrMalformed, b[4], frameVersion)
	}
	if b[5] != kindChunk {
		return Header{}, fmt.Errorf("%w: kind %d, want %d", ErrMalformed, b[5], kindChunk)
	}
	le := binary.LittleEndian
	h := Header{
		From:     le.Uint16(b[6:]),
		Job:      le.Uint64(b[8:]),
		Gen:      le.Uint64(b[16:]),
		Step:     le.Uint64(b[24:]),
		Phase:    le.Uint64(b[32:]),
		Op:       le.Uint64(b[40:]),
		Total:    le.Uint32(b[48:]),
		RingStep: le.Uint16(b[52:]),
		To:       le.Uint16(b[54:]),
		Chunk:    le.Uint32(b[56:]),
		Count:    le.Uint32(b[60:]),
	}
	if h.Count > maxCount {
		return Header{}, fmt.Errorf("%w: count %d exceeds %d", ErrMalformed, h.Count, maxCount)
	}
	if h.Count > h.Total {
		return Header{}, fmt.Errorf("%w: count %d exceeds total %d", ErrMalformed, h.Count, h.Total)
	}
	return h, nil
}

// FrameSize is the size in bytes of a frame carrying h: header plus payload.
func (h Header) FrameSize() int { return HeaderSize + 4*int(h.Count) }

// DecodeFrame decodes a whole frame: the header, and a payload whose length must be
// exactly 4*Count bytes. The payload aliases b.
func DecodeFrame(b []byte) (Header, []byte, error) {
	h, err := ParseHeader(b)
	if err != nil {
		return Header{}, nil, err
	}
	return decodeParts(h, b[:HeaderSize], b[HeaderSize:])
}

// decodeParts checks a frame whose header and payload arrived apart.
func decodeParts(h Header, hdr, payload []byte) (Header, []byte, error) {
	if len(hdr) != HeaderSize || len(payload) != 4*int(h.Count) {
		return Header{}, nil, fmt.Errorf("%w: %d header and %d payload bytes, header says %d and %d (count %d)",
			ErrMalformed, len(hdr), len(payload), HeaderSize, 4*int(h.Count), h.Count)
	}
	return h, payload, nil
}

// splitFrame cuts a contiguous frame into header and payload; a frame too short
// for a header comes back whole as the header, to fail its decoding.
func splitFrame(f []byte) (hdr, payload []byte) {
	if len(f) < HeaderSize {
		return f, nil
	}
	return f[:HeaderSize], f[HeaderSize:]
}

// nameHash is the FNV-1a 64 hash that stands for a job or phase name on the wire.
func nameHash(s string) uint64 {
	f := fnv.New64a()
	f.Write([]byte(s))
	return f.Sum64()
}
