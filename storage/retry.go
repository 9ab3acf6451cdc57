package storage

import (
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"go.uber.org/zap"
)

// retrier runs an operation under a Retry policy. Its random source (the jitter) is
// its own, so that stores do not share state.
type retrier struct {
	p   Retry
	log *zap.Logger
	mu  sync.Mutex
	rng *rand.Rand
}

func newRetrier(p Retry, log *zap.Logger) *retrier {
	var seed [16]byte
	_, _ = crand.Read(seed[:]) // never fails on Linux; a zero seed would still work
	return &retrier{p: p, log: log, rng: rand.New(rand.NewPCG(binary.LittleEndian.Uint64(seed[:8]), binary.LittleEndian.Uint64(seed[8:])))}
}

// backoff is the wait before attempt k+1: equal jitter, uniform in [d/2, d] with
// d = min(Cap, Base·2^(k−1)), so that clients retrying together spread out but
// none hammers the server with near-zero waits.
func (r *retrier) backoff(k int) time.Duration {
	d := r.p.Cap
	if k-1 < 30 {
		if e := r.p.Base << (k - 1); e > 0 && e < d {
			d = e
		}
	}
	r.mu.Lock()
	j := time.Duration(r.rng.Int64N(int64(d/2) + 1))
	r.mu.Unlock()
	return d - d/2 + j
}

// do runs f until it succeeds, fails permanently (permanent(err)), runs out of
// attempts, or ctx ends. what names the object for the log and the error.
func (r *retrier) do(ctx context.Context, op, what string, permanent func(error) bool, f func(context.Context) error) error {
	for k := 1; ; k++ {
		err := f(ctx)
		if err == nil {
			if k > 1 {
				r.log.Info("storage: succeeded after retries", zap.String("op", op), zap.String("object", what), zap.Int("attempts", k))
			}
			return nil
		}
		if permanent(err) {
			return err
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%w (attempt %d, %v)", err, k, context.Cause(ctx))
		}
		if k >= r.p.Attempts {
			return fmt.Errorf("%w (gave up after %d attempts)", err, k)
		}
		wait := r.backoff(k)
		r.log.Warn("storage: transient failure, retrying", zap.String("op", op), zap.String("object", what),
			zap.Int("attempt", k), zap.Duration("wait", wait), zap.Error(err))
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (attempt %d, then %v)", err, k, context.Cause(ctx))
		}
	}
}
