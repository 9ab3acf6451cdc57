package fetch

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
)

// permanent marks a source that will not give the file (404, 403, a corrupt
// file): go to the next source rather than retry.
type permanent struct{ err error }

func (p *permanent) Error() string { return p.err.Error() }
func (p *permanent) Unwrap() error { return p.err }

// download fetches the first of urls that works into dst. Each source has its own
// partial file (dst.<hash of the URL>.part, so that bytes of two sources are
// never spliced) holding what has arrived so far; it is resumed with a Range
// request, after a dropped connection now or after an interrupted run earlier.
// size and sha (when known) are checked before dst appears.
func download(ctx context.Context, urls []string, dst string, size int64, sha string, o Options) (resumed bool, err error) {
	var errs []error
	for _, u := range urls {
		part := partName(dst, u)
		r, err := downloadFrom(ctx, u, part, size, o)
		resumed = resumed || r
		if err == nil {
			if err = check(part, size, sha); err == nil {
				for _, other := range urls {
					if other != u {
						os.Remove(partName(dst, other))
					}
				}
				return resumed, os.Rename(part, dst)
			}
			os.Remove(part) // wrong bytes: never resume from them
		}
		if p := (*permanent)(nil); errors.As(err, &p) {
			os.Remove(part) // this source will not give the file: nothing to resume
		}
		errs = append(errs, fmt.Errorf("%s: %w", u, err))
		if ctx.Err() != nil {
			break
		}
		o.log().Warn("fetch: source failed, trying the next", zap.String("url", u), zap.Error(err))
	}
	return resumed, errors.Join(errs...)
}

func partName(dst, url string) string {
	h := sha256.Sum256([]byte(url))
	return dst + "." + hex.EncodeToString(h[:4]) + ".part"
}

// check compares a downloaded file with the size and hash expected of it.
func check(path string, size int64, sha string) error {
	if size == 0 && sha == "" {
		return nil
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return err
	}
	if size != 0 && n != size {
		return fmt.Errorf("downloaded %d bytes; the archive has %d", n, size)
	}
	if got := hex.EncodeToString(h.Sum(nil)); sha != "" && got != sha {
		return fmt.Errorf("SHA-256 %s; the archive's is %s", got, sha)
	}
	return nil
}

// downloadFrom fetches u into part, resuming what part holds, retrying dropped
// connections and server errors.
func downloadFrom(ctx context.Context, u, part string, size int64, o Options) (resumed bool, err error) {
	for attempt := 1; ; attempt++ {
		r, done, err := downloadOnce(ctx, u, part, size, o)
		resumed = resumed || r
		if err == nil && done {
			return resumed, nil
		}
		var p *permanent
		if errors.As(err, &p) || ctx.Err() != nil || attempt >= o.Attempts {
			if err == nil {
				err = errors.New("incomplete")
			}
			return resumed, fmt.Errorf("%w (attempt %d)", err, attempt)
		}
		wait := min(o.Wait<<(attempt-1), 10*o.Wait)
		o.log().Warn("fetch: download interrupted, resuming", zap.String("url", u), zap.Int("attempt", attempt), zap.Duration("wait", wait), zap.Error(err))
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return resumed, ctx.Err()
		}
	}
}

// downloadOnce makes one request: from the start, or from the end of part.
func downloadOnce(ctx context.Context, u, part string, size int64, o Options) (resumed, done bool, err error) {
	f, err := os.OpenFile(part, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return false, false, &permanent{err}
	}
	defer f.Close()
	off, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return false, false, &permanent{err}
	}
	if size > 0 && off > size {
		off = 0 // longer than the archive: start again
	}
	// No progress for StallTimeout ends the request.
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stall := time.AfterFunc(o.StallTimeout, func() { cancel(fmt.Errorf("no data for %v", o.StallTimeout)) })
	defer stall.Stop()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return false, false, &permanent{err}
	}
	if off > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", off))
	}
	resp, err := o.client().Do(req)
	if err != nil {
		return false, false, err
	}
	defer resp.Body.Close()
	total := int64(-1)
	switch resp.StatusCode {
	case http.StatusPartialContent:
		start, t, ok := parseContentRange(resp.Header.Get("Content-Range"))
		if !ok || start != off {
			return false, false, fmt.Errorf("Content-Range %q does not start at %d", resp.Header.Get("Content-Range"), off)
		}
		total, resumed = t, true
	case http.StatusOK:
		if off > 0 {
			o.log().Info("fetch: the server does not resume; starting again", zap.String("url", u), zap.Int64("had", off))
		}
		off = 0
		if err := f.Truncate(0); err != nil {
			return false, false, &permanent{err}
		}
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return false, false, &permanent{err}
		}
		total = resp.ContentLength
	case http.StatusRequestedRangeNotSatisfiable:
		// The part may already be whole: the server says how long the file is.
		if _, t, ok := parseContentRange(resp.Header.Get("Content-Range")); ok && t == off {
			return false, true, nil
		}
		return false, false, f.Truncate(0) // start again on the next attempt
	default:
		err := fmt.Errorf("HTTP %s", resp.Status)
		if resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusRequestTimeout {
			return false, false, err
		}
		return false, false, &permanent{err}
	}
	if total >= 0 && size > 0 && total != size {
		return false, false, &permanent{fmt.Errorf("the server's file has %d bytes; the archive has %d", total, size)}
	}
	if o.Progress != nil {
		o.Progress(off, total)
	}
	buf := make([]byte, 256<<10)
	n := off
	for {
		m, rerr := resp.Body.Read(buf)
		if m > 0 {
			stall.Reset(o.StallTimeout)
			if _, err := f.Write(buf[:m]); err != nil {
				return resumed, false, &permanent{err}
			}
			n += int64(m)
			if o.Progress != nil {
				o.Progress(n, total)
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			if c := context.Cause(ctx); c != nil && ctx.Err() != nil {
				rerr = fmt.Errorf("%w (%v)", rerr, c)
			}
			f.Sync() // keep what came for the resume
			return resumed, false, fmt.Errorf("after %d bytes: %w", n, rerr)
		}
	}
	if err := f.Sync(); err != nil {
		return resumed, false, &permanent{err}
	}
	if total >= 0 && n != total {
		return resumed, false, fmt.Errorf("the connection ended at %d of %d bytes", n, total)
	}
	return resumed, true, nil
}

// parseContentRange reads "bytes START-END/TOTAL" or "bytes */TOTAL"; total is -1
// when the server writes "*".
func parseContentRange(s string) (start, total int64, ok bool) {
	rest, found := strings.CutPrefix(s, "bytes ")
	if !found {
		return 0, 0, false
	}
	rng, tot, found := strings.Cut(rest, "/")
	if !found {
		return 0, 0, false
	}
	total = -1
	if tot != "*" {
		t, err := strconv.ParseInt(tot, 10, 64)
		if err != nil || t < 0 {
			return 0, 0, false
		}
		total = t
	}
	if rng == "*" {
		return 0, total, total >= 0
	}
	a, b, found := strings.Cut(rng, "-")
	if !found {
		return 0, 0, false
	}
	start, err1 := strconv.ParseInt(a, 10, 64)
	end, err2 := strconv.ParseInt(b, 10, 64)
	if err1 != nil || err2 != nil || start < 0 || end < start || total >= 0 && end >= total {
		return 0, 0, false
	}
	return start, total, true
}
