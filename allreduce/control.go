package allreduce

import (
	"encoding/binary"
	"fmt"
	"strconv"
)

// Control messages open links and carry credit. They are fixed-size, little-endian:
//
//	off size field
//	0   4    magic "CRCT"
//	4   1    version (1)
//	5   1    kind: 1 hello, 2 grant, 3 addr
//	6   2    From: sender rank
//	8   2    To: receiver rank
//	10  2    Lane: the NATS lane of the link
//	12  4    zero
//	16  8    Job: FNV-1a 64 of the job name
//	24  8    Gen: generation
//	32  8    Value: for a grant, the number of frames the lane's sender may have sent
//	         in all (cumulative, so a lost grant is repaired by the next one); for
//	         a NATS hello, the sender's number of lanes
//
// An addr message is followed by the TCP address, at most maxAddrLen bytes.
const (
	ctlSize    = 40
	ctlVersion = 1
	maxAddrLen = 256
)

type ctlKind uint8

const (
	ctlHello ctlKind = 1 // a sender asks its right neighbour to open the link
	ctlGrant ctlKind = 2 // a receiver's credit, in reply to a hello or after consuming frames
	ctlAddr  ctlKind = 3 // a receiver's TCP address, in reply to a hello
)

var ctlMagic = [4]byte{'C', 'R', 'C', 'T'}

type ctlMsg struct {
	Kind     ctlKind
	From, To uint16
	Lane     uint16
	Job, Gen uint64
	Value    uint64
	Addr     string // ctlAddr only
}

func (m ctlMsg) encode() []byte {
	b := make([]byte, ctlSize, ctlSize+len(m.Addr))
	copy(b, ctlMagic[:])
	b[4] = ctlVersion
	b[5] = byte(m.Kind)
	le := binary.LittleEndian
	le.PutUint16(b[6:], m.From)
	le.PutUint16(b[8:], m.To)
	le.PutUint16(b[10:], m.Lane)
	le.PutUint64(b[16:], m.Job)
	le.PutUint64(b[24:], m.Gen)
	le.PutUint64(b[32:], m.Value)
	return append(b, m.Addr...)
}

func decodeCtl(b []byte) (ctlMsg, error) {
	if len(b) < ctlSize {
		return ctlMsg{}, fmt.Errorf("%w: control message of %d bytes, want %d", ErrMalformed, len(b), ctlSize)
	}
	if [4]byte(b[0:4]) != ctlMagic || b[4] != ctlVersion {
		return ctlMsg{}, fmt.Errorf("%w: control message magic %q version %d", ErrMalformed, b[0:4], b[4])
	}
	for _, z := range b[12:16] {
		if z != 0 {
			return ctlMsg{}, fmt.Errorf("%w: control message reserved bytes % x", ErrMalformed, b[12:16])
		}
	}
	le := binary.LittleEndian
	m := ctlMsg{
		Kind: ctlKind(b[5]),
		From: le.Uint16(b[6:]), To: le.Uint16(b[8:]), Lane: le.Uint16(b[10:]),
		Job: le.Uint64(b[16:]), Gen: le.Uint64(b[24:]), Value: le.Uint64(b[32:]),
	}
	rest := b[ctlSize:]
	switch m.Kind {
	case ctlHello, ctlGrant:
		if len(rest) != 0 {
			return ctlMsg{}, fmt.Errorf("%w: %d trailing bytes after control message kind %d", ErrMalformed, len(rest), m.Kind)
		}
	case ctlAddr:
		if len(rest) == 0 || len(rest) > maxAddrLen {
			return ctlMsg{}, fmt.Errorf("%w: address of %d bytes, want 1..%d", ErrMalformed, len(rest), maxAddrLen)
		}
		m.Addr = string(rest)
	default:
		return ctlMsg{}, fmt.Errorf("%w: control message kind %d", ErrMalformed, m.Kind)
	}
	return m, nil
}

// expect checks that m is a message of kind k on lane of the link from rank from
// to rank to, of job and generation.
func (m ctlMsg) expect(k ctlKind, job, gen uint64, from, to, lane int) error {
	if m.Kind != k || m.Job != job || m.Gen != gen || int(m.From) != from || int(m.To) != to || int(m.Lane) != lane {
		return fmt.Errorf("control message kind %d job %#x gen %d from rank %d to %d lane %d, want kind %d job %#x gen %d from %d to %d lane %d",
			m.Kind, m.Job, m.Gen, m.From, m.To, m.Lane, k, job, gen, from, to, lane)
	}
	return nil
}

// subject returns crdgo.<job>.ar.<gen>.<rank>[.<suffix>]: the subjects of the
// allreduce links. Over NATS, crdgo.<job>.ar.<gen>.<rank>.<lane> carries the
// chunks addressed to rank on lane, and .<lane>.hello and .<lane>.credit open
// the lane and carry its credit; over TCP, .addr answers with the address.
func subject(job string, gen uint64, rank int, suffix string) string {
	s := "crdgo." + job + ".ar." + strconv.FormatUint(gen, 10) + "." + strconv.Itoa(rank)
	if suffix != "" {
		s += "." + suffix
	}
	return s
}
