package allreduce

import (
	"errors"
	"fmt"
	"regexp"
	"time"
)

// Config is the Reducer's configuration. All ranks of a group must use the same
// ChunkBytes: it fixes the chunk boundaries, which every frame header carries and
// every receiver checks.
type Config struct {
	// RingTimeout bounds every wait of an operation: a chunk that does not arrive,
	// a neighbour that takes no data, an address or hello that is not answered.
	RingTimeout time.Duration
	// ChunkBytes is the payload of one frame, in bytes (a multiple of 4). With the
	// HeaderSize header a frame must fit the transport: for NATS, the server's
	// max_payload.
	ChunkBytes int
}

// DefaultConfig returns the defaults: a 5 s ring timeout and frames of exactly
// 1 MiB (header included), the max_payload of a NATS server left at its default.
func DefaultConfig() Config {
	return Config{
		RingTimeout: 5 * time.Second,
		ChunkBytes:  1<<20 - HeaderSize,
	}
}

// Validate reports every problem of c at once, naming the field.
func (c Config) Validate() error {
	var errs []error
	if c.RingTimeout <= 0 {
		errs = append(errs, fmt.Errorf("allreduce.ring_timeout: must be > 0, got %v", c.RingTimeout))
	}
	if c.ChunkBytes < 4 || c.ChunkBytes%4 != 0 {
		errs = append(errs, fmt.Errorf("allreduce.chunk_bytes: must be a positive multiple of 4, got %d", c.ChunkBytes))
	}
	if c.ChunkBytes > 4*maxCount {
		errs = append(errs, fmt.Errorf("allreduce.chunk_bytes: must be <= %d, got %d", 4*maxCount, c.ChunkBytes))
	}
	return errors.Join(errs...)
}

func (c Config) chunkElems() int { return c.ChunkBytes / 4 }

// FrameBytes is the size of the largest frame c produces.
func (c Config) FrameBytes() int { return HeaderSize + c.ChunkBytes }

// Group is one generation of a ring: who takes part, in which order, and which of
// them this process is.
type Group struct {
	Job   string   // job name; a NATS subject token: letters, digits, '-' and '_'
	Gen   uint64   // generation; a newer group has a larger Gen
	Rank  int      // this process's position in Hosts
	Hosts []string // the ring: Hosts[i] names rank i in errors and logs
}

// MaxWorld is the largest ring a header can describe (ring steps fit 16 bits).
const MaxWorld = 1 << 15

var jobRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// Validate reports every problem of g at once.
func (g Group) Validate() error {
	var errs []error
	if !jobRE.MatchString(g.Job) {
		errs = append(errs, fmt.Errorf("group.job %q: want 1-64 letters, digits, '-' or '_'", g.Job))
	}
	if len(g.Hosts) < 1 || len(g.Hosts) > MaxWorld {
		errs = append(errs, fmt.Errorf("group.hosts: %d ranks, want 1..%d", len(g.Hosts), MaxWorld))
	}
	if g.Rank < 0 || g.Rank >= len(g.Hosts) {
		errs = append(errs, fmt.Errorf("group.rank: %d, want 0..%d", g.Rank, len(g.Hosts)-1))
	}
	return errors.Join(errs...)
}

// World is the number of ranks.
func (g Group) World() int { return len(g.Hosts) }

// Left is the rank this one receives from.
func (g Group) Left() int { return mod(g.Rank-1, len(g.Hosts)) }

// Right is the rank this one sends to.
func (g Group) Right() int { return mod(g.Rank+1, len(g.Hosts)) }
