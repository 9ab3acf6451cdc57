package storage

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
)

// hashReader counts and hashes what is read through it.
type hashReader struct {
	r io.Reader
	h hash.Hash
	n int64
}

func newHashReader(r io.Reader) *hashReader { return &hashReader{r: r, h: sha256.New()} }

func (h *hashReader) Read(p []byte) (int, error) {
	n, err := h.r.Read(p)
	h.h.Write(p[:n])
	h.n += int64(n)
	return n, err
}

func (h *hashReader) sum() string { return hex.EncodeToString(h.h.Sum(nil)) }

// verifyReader streams an object and, at its end, checks the bytes read against the
// recorded size and SHA-256 (when recorded): a mismatch is returned instead of io.EOF,
// so a caller that reads to the end never takes corrupt bytes for a whole object.
type verifyReader struct {
	rc     io.ReadCloser
	h      *hashReader
	size   int64  // recorded size
	sha256 string // recorded hash, or ""
	what   string // s3://bucket/key, for the error
	err    error  // sticky result once decided
}

func newVerifyReader(rc io.ReadCloser, info ObjectInfo, what string) *verifyReader {
	return &verifyReader{rc: rc, h: newHashReader(rc), size: info.Size, sha256: info.SHA256, what: what}
}

func (v *verifyReader) Read(p []byte) (int, error) {
	if v.err != nil {
		return 0, v.err
	}
	n, err := v.h.Read(p)
	if v.h.n > v.size {
		v.err = fmt.Errorf("storage: get %s: read %d bytes, more than the recorded %d: %w", v.what, v.h.n, v.size, ErrCorrupt)
		return n, v.err
	}
	if err == io.EOF {
		switch got := v.h.sum(); {
		case v.h.n != v.size:
			v.err = fmt.Errorf("storage: get %s: %d bytes, recorded %d: %w", v.what, v.h.n, v.size, ErrCorrupt)
		case v.sha256 != "" && got != v.sha256:
			v.err = fmt.Errorf("storage: get %s: SHA-256 %s, recorded %s: %w", v.what, got, v.sha256, ErrCorrupt)
		default:
			v.err = io.EOF
		}
		return n, v.err
	}
	return n, err
}

func (v *verifyReader) Close() error { return v.rc.Close() }
