package allreduce

import (
	"errors"
	"fmt"
)

// Conditions callers branch on. Errors returned by a Reducer wrap one of these (or
// the context's error) and name the rank and host at fault where there is one.
var (
	// ErrStaleGeneration: the operation belongs to a generation that is over, either
	// because Join announced a newer one or because a peer already sends in a newer
	// one. The caller rejoins; it must not retry in the old generation.
	ErrStaleGeneration = errors.New("stale generation")
	// ErrPeerTimeout: a ring neighbour delivered nothing (or took nothing) for the
	// ring timeout: it crashed, is partitioned away or is stuck.
	ErrPeerTimeout = errors.New("peer timed out")
	// ErrChunkLost: a link skipped a chunk (a dropped message, a peer that moved on
	// to a later operation); the operation cannot complete.
	ErrChunkLost = errors.New("chunk lost")
	// ErrMismatch: the ranks do not run the same operation: a different step, phase,
	// buffer length or chunk size.
	ErrMismatch = errors.New("ranks disagree")
	// ErrNotJoined: no generation was joined, or the last Join failed.
	ErrNotJoined = errors.New("no generation joined")
	// ErrClosed: the Reducer or the link is closed.
	ErrClosed = errors.New("closed")
)

// PeerError is an operation's failure attributed to one ring neighbour.
type PeerError struct {
	Rank int    // the neighbour's rank
	Host string // the neighbour's host, from Group.Hosts
	Dir  string // "from" (we waited for its chunks) or "to" (it did not take ours)
	What string // what we were doing: "ring step 3 chunk 7"
	Err  error  // the cause; wraps a sentinel of this package or a transport error
}

func (e *PeerError) Error() string {
	return fmt.Sprintf("%s rank %d (%s): %s: %v", e.Dir, e.Rank, e.Host, e.What, e.Err)
}

func (e *PeerError) Unwrap() error { return e.Err }
