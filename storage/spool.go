package storage

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
)

// spooled is a put's body, readable again from the start for every attempt, with
// its size and SHA-256 known before the first byte is sent.
type spooled struct {
	io.ReaderAt
	size   int64
	sha256 string
	close  func() error
}

func (s *spooled) Close() error {
	if s.close == nil {
		return nil
	}
	return s.close()
}

// spool makes r re-readable. A reader that can read at offsets (a file, a
// bytes.Reader) is hashed in place from its current offset; any other stream is
// copied to memory (up to mem bytes) or to a temporary file in dir. A reader that
// ends before a known size is an error.
func spool(ctx context.Context, r io.Reader, size int64, dir string, mem int64) (*spooled, error) {
	ra, isAt := r.(io.ReaderAt)
	sk, isSeek := r.(io.Seeker)
	if isAt && isSeek && size >= 0 {
		off, err := sk.Seek(0, io.SeekCurrent)
		if err == nil {
			h := newHashReader(io.NewSectionReader(ra, off, size))
			if _, err := copyCtx(ctx, io.Discard, h); err != nil {
				return nil, err
			}
			if h.n != size {
				return nil, fmt.Errorf("the reader ended after %d bytes, declared %d", h.n, size)
			}
			return &spooled{ReaderAt: io.NewSectionReader(ra, off, size), size: size, sha256: h.sum()}, nil
		}
	}
	h := newHashReader(r)
	var src io.Reader = h
	if size >= 0 {
		src = io.LimitReader(h, size)
	}
	check := func(n int64) error {
		if size >= 0 && n != size {
			return fmt.Errorf("the reader ended after %d bytes, declared %d", n, size)
		}
		return nil
	}
	if size < 0 || size <= mem {
		var buf bytes.Buffer
		n, err := copyCtx(ctx, &buf, io.LimitReader(src, mem+1))
		if err != nil {
			return nil, err
		}
		if n <= mem {
			if err := check(n); err != nil {
				return nil, err
			}
			return &spooled{ReaderAt: bytes.NewReader(buf.Bytes()), size: n, sha256: h.sum()}, nil
		}
		src = io.MultiReader(&buf, src) // over mem: on to a file, from the start
	}
	f, err := os.CreateTemp(dir, "crdgo-spool-*")
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	cleanup := func() error {
		f.Close()
		return os.Remove(f.Name())
	}
	n, err := copyCtx(ctx, f, src)
	if err == nil {
		err = check(n)
	}
	if err != nil {
		cleanup()
		return nil, err
	}
	return &spooled{ReaderAt: f, size: n, sha256: h.sum(), close: cleanup}, nil
}
