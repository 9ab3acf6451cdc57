package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"go.uber.org/zap"
)

// S3 is the Store of the objects under a prefix of an S3 bucket (MinIO or any S3
// service), through minio-go.
//
// Put spools the stream (in memory up to Options.SpoolMemory, else in a temporary
// file) so that it knows size and SHA-256 before it sends a byte and can send the
// object again after a transient failure; objects over Options.PartSize go up in
// parts, Options.Threads at a time. The SHA-256 travels as the object's metadata
// x-amz-meta-crdgo-sha256; each request or part carries a CRC32C checksum that the
// server verifies (minio-go's default with trailing headers; over plain HTTP its
// streaming signature also covers each chunk's SHA-256), and Put checks the size
// the server reports. Get checks size and SHA-256 as the stream is read, and a
// stream broken by a transient failure is resumed where it stopped, pinned to the
// same ETag.
//
// minio-go's own retries are off: this store retries, so that attempts are counted
// and logged in one place.
type S3 struct {
	loc    Location
	name   string // the URL, for String
	base   string // s3://bucket/prefix, for errors
	client *minio.Client
	opts   Options
	retry  *retrier
	log    *zap.Logger
}

// metaSHA256 is the user metadata key of the object's SHA-256 (x-amz-meta-crdgo-sha256).
const metaSHA256 = "Crdgo-Sha256"

// NewS3 returns the store of loc (scheme s3). It resolves credentials but sends
// nothing: a missing bucket or a refused key shows in the first call.
func NewS3(ctx context.Context, loc Location, opts Options) (*S3, error) {
	opts = opts.withDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if loc.Scheme != "s3" {
		return nil, fmt.Errorf("storage: %s is not an s3 URL", loc)
	}
	ak, sk, from, err := resolveCredentials(opts)
	if err != nil {
		return nil, fmt.Errorf("storage: %s: %w", loc, err)
	}
	log := opts.log().With(zap.String("store", loc.String()))
	log.Debug("storage: credentials", zap.String("from", from)) // where from, never what
	lookup := minio.BucketLookupAuto
	switch loc.PathStyle {
	case "true":
		lookup = minio.BucketLookupPath
	case "false":
		lookup = minio.BucketLookupDNS
	}
	tr := opts.Transport
	if tr == nil {
		t, err := minio.DefaultTransport(loc.TLS)
		if err != nil {
			return nil, fmt.Errorf("storage: %s: transport: %w", loc, err)
		}
		t.ResponseHeaderTimeout = opts.Timeout
		tr = t
	}
	client, err := minio.New(loc.Endpoint, &minio.Options{
		Creds:           credentials.NewStaticV4(ak, sk, ""),
		Secure:          loc.TLS,
		Region:          loc.Region,
		BucketLookup:    lookup,
		Transport:       tr,
		MaxRetries:      1, // ours, not minio-go's: see retrier
		TrailingHeaders: true,
	})
	if err != nil {
		return nil, fmt.Errorf("storage: %s: %v", loc, err)
	}
	base := "s3://" + loc.Bucket
	if loc.Prefix != "" {
		base += "/" + loc.Prefix
	}
	return &S3{loc: loc, name: loc.String(), base: base, client: client, opts: opts,
		retry: newRetrier(opts.Retry, log), log: log}, nil
}

func (s *S3) String() string { return s.name }

// Location is the store's parsed URL.
func (s *S3) Location() Location { return s.loc }

// objectKey is the bucket's key of key ("" gives the prefix with its slash).
func (s *S3) objectKey(key string) string {
	if s.loc.Prefix == "" {
		return key
	}
	return s.loc.Prefix + "/" + key
}

func (s *S3) what(key string) string {
	if key == "" {
		return s.base
	}
	return s.base + "/" + key
}

func (s *S3) Stat(ctx context.Context, key string) (ObjectInfo, error) {
	if err := checkKey(s, "stat", key); err != nil {
		return ObjectInfo{}, err
	}
	var info ObjectInfo
	err := s.retry.do(ctx, "stat", s.what(key), isPermanent, func(ctx context.Context) error {
		ctx, cancel := s.opts.deadline(ctx, -1)
		defer cancel()
		oi, err := s.client.StatObject(ctx, s.loc.Bucket, s.objectKey(key), minio.StatObjectOptions{})
		if err != nil {
			return s.classify(err)
		}
		info = s.info(key, oi)
		return nil
	})
	if err != nil {
		return ObjectInfo{}, s.fail("stat", key, err)
	}
	return info, nil
}

func (s *S3) info(key string, oi minio.ObjectInfo) ObjectInfo {
	return ObjectInfo{Key: key, Size: oi.Size, SHA256: userSHA256(oi.UserMetadata), ModTime: oi.LastModified}
}

// userSHA256 finds the recorded hash among user metadata, whose keys come with or
// without the X-Amz-Meta- prefix depending on the call.
func userSHA256(m map[string]string) string {
	for k, v := range m {
		k = strings.TrimPrefix(strings.ToLower(k), "x-amz-meta-")
		if k == strings.ToLower(metaSHA256) && isHexSHA256(v) {
			return v
		}
	}
	return ""
}

func (s *S3) Get(ctx context.Context, key string) (io.ReadCloser, ObjectInfo, error) {
	if err := checkKey(s, "get", key); err != nil {
		return nil, ObjectInfo{}, err
	}
	r := &s3Reader{s: s, key: key}
	r.ctx, r.cancel = context.WithCancelCause(ctx)
	// The stream has no fixed deadline (its length is not known before the
	// request), so it has a stall deadline: no progress for Options.Timeout ends it.
	r.stall = time.AfterFunc(s.opts.Timeout, func() {
		r.cancel(fmt.Errorf("storage: get %s: no progress for %v", s.what(key), s.opts.Timeout))
	})
	var info ObjectInfo
	err := s.retry.do(r.ctx, "get", s.what(key), isPermanent, func(context.Context) error {
		oi, err := r.open(0, "")
		if err != nil {
			return err
		}
		info, r.etag = s.info(key, oi), oi.ETag
		return nil
	})
	if err != nil {
		r.Close()
		return nil, ObjectInfo{}, s.fail("get", key, err)
	}
	return newVerifyReader(r, info, s.what(key)), info, nil
}

// s3Reader streams an object and resumes it, pinned to its ETag, after a
// transient failure.
type s3Reader struct {
	s      *S3
	key    string
	ctx    context.Context
	cancel context.CancelCauseFunc
	stall  *time.Timer
	etag   string
	obj    io.ReadCloser // the response body of the current GET
	off    int64
	mu     sync.Mutex // Close may come from another goroutine than Read
	closed bool
}

// open starts the GET at byte off (of ETag etag when set).
func (r *s3Reader) open(off int64, etag string) (minio.ObjectInfo, error) {
	var o minio.GetObjectOptions
	if off > 0 {
		if err := o.SetRange(off, 0); err != nil {
			return minio.ObjectInfo{}, err
		}
	}
	if etag != "" {
		if err := o.SetMatchETag(etag); err != nil {
			return minio.ObjectInfo{}, err
		}
	}
	// Core's GetObject is one GET; Client's makes a HEAD first and then a GET
	// pinned to the HEAD's ETag, which fails when the object is overwritten between.
	obj, oi, _, err := minio.Core{Client: r.s.client}.GetObject(r.ctx, r.s.loc.Bucket, r.s.objectKey(r.key), o)
	if err != nil {
		return minio.ObjectInfo{}, r.s.classify(err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		obj.Close()
		return minio.ObjectInfo{}, errors.New("closed")
	}
	r.obj = obj
	return oi, nil
}

func (r *s3Reader) Read(p []byte) (int, error) {
	var last error
	for k := 1; ; k++ {
		if r.obj != nil { // nil after a resume that failed
			n, err := r.obj.Read(p)
			r.off += int64(n)
			if n > 0 {
				r.stall.Reset(r.s.opts.Timeout)
			}
			if err == nil || err == io.EOF {
				return n, err
			}
			if n > 0 {
				return n, nil // deliver what came; the next Read meets the error again and resumes
			}
			last = r.s.classify(err)
			r.obj.Close()
			r.obj = nil
		}
		if isPermanent(last) || r.ctx.Err() != nil || k >= r.s.opts.Retry.Attempts {
			return 0, r.s.fail("get", r.key, fmt.Errorf("at byte %d (attempt %d): %w", r.off, k, last))
		}
		wait := r.s.retry.backoff(k)
		r.s.log.Warn("storage: stream broken, resuming", zap.String("object", r.s.what(r.key)),
			zap.Int64("offset", r.off), zap.Int("attempt", k), zap.Duration("wait", wait), zap.Error(last))
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-r.ctx.Done():
			t.Stop()
			return 0, r.s.fail("get", r.key, fmt.Errorf("at byte %d: %w (%v)", r.off, last, context.Cause(r.ctx)))
		}
		if _, err := r.open(r.off, r.etag); err != nil {
			last = err
		}
	}
}

func (r *s3Reader) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	r.stall.Stop()
	var err error
	if r.obj != nil {
		err = r.obj.Close()
	}
	r.cancel(errors.New("closed"))
	return err
}

func (s *S3) Put(ctx context.Context, key string, r io.Reader, size int64) (ObjectInfo, error) {
	if err := checkKey(s, "put", key); err != nil {
		return ObjectInfo{}, err
	}
	body, err := spool(ctx, r, size, s.opts.SpoolDir, s.opts.SpoolMemory)
	if err != nil {
		return ObjectInfo{}, s.fail("put", key, err)
	}
	defer body.Close()
	n := body.size
	var info ObjectInfo
	err = s.retry.do(ctx, "put", s.what(key), isPermanent, func(ctx context.Context) error {
		ctx, cancel := s.opts.deadline(ctx, n)
		defer cancel()
		ui, err := s.client.PutObject(ctx, s.loc.Bucket, s.objectKey(key), io.NewSectionReader(body, 0, n), n, minio.PutObjectOptions{
			UserMetadata: map[string]string{metaSHA256: body.sha256},
			ContentType:  "application/octet-stream",
			PartSize:     uint64(partSize(n, s.opts.PartSize)),
			NumThreads:   uint(s.opts.Threads),
		})
		if err != nil {
			return s.classify(err)
		}
		if ui.Size != n {
			return fmt.Errorf("the server stored %d bytes of %d: %w", ui.Size, n, ErrCorrupt)
		}
		info = ObjectInfo{Key: key, Size: n, SHA256: body.sha256, ModTime: ui.LastModified}
		return nil
	})
	if err != nil {
		return ObjectInfo{}, s.fail("put", key, err)
	}
	return info, nil
}

// partSize is the part size for an object of n bytes: the configured one, raised
// to the next MiB that keeps the object within S3's 10,000 parts.
func partSize(n, configured int64) int64 {
	const maxParts = 10000
	if n <= configured*maxParts {
		return configured
	}
	p := (n + maxParts - 1) / maxParts
	return (p + 1<<20 - 1) &^ (1<<20 - 1)
}

func (s *S3) Delete(ctx context.Context, key string) error {
	if err := checkKey(s, "delete", key); err != nil {
		return err
	}
	err := s.retry.do(ctx, "delete", s.what(key), isPermanent, func(ctx context.Context) error {
		ctx, cancel := s.opts.deadline(ctx, -1)
		defer cancel()
		return s.classify(s.client.RemoveObject(ctx, s.loc.Bucket, s.objectKey(key), minio.RemoveObjectOptions{}))
	})
	if err != nil {
		return s.fail("delete", key, err)
	}
	return nil
}

func (s *S3) List(ctx context.Context, prefix, after string, limit int) (Page, error) {
	if err := checkList(s, prefix, limit); err != nil {
		return Page{}, err
	}
	var page Page
	err := s.retry.do(ctx, "list", s.what(prefix), isPermanent, func(ctx context.Context) error {
		ctx, cancel := s.opts.deadline(ctx, -1)
		defer cancel()
		page = Page{}
		opts := minio.ListObjectsOptions{
			Prefix:       s.objectKey(prefix),
			Recursive:    true,
			MaxKeys:      min(limit+1, 1000), // one more tells whether another page follows
			WithMetadata: true,               // MinIO's extension gives the hash; other servers ignore it
		}
		if after != "" {
			opts.StartAfter = s.objectKey(after)
		}
		for oi := range s.client.ListObjectsIter(ctx, s.loc.Bucket, opts) {
			if oi.Err != nil {
				return s.classify(oi.Err)
			}
			key := oi.Key
			if s.loc.Prefix != "" {
				key = strings.TrimPrefix(key, s.loc.Prefix+"/")
			}
			if strings.HasSuffix(key, "/") || !ValidKey(key) {
				continue // folder markers and keys crdgo cannot name
			}
			if len(page.Objects) == limit {
				page.More = true
				break
			}
			page.Objects = append(page.Objects, s.info(key, oi))
		}
		return nil
	})
	if err != nil {
		return Page{}, s.fail("list", prefix, err)
	}
	return page, nil
}

// EnsureRoot creates the bucket when it is missing and says whether it did.
func (s *S3) EnsureRoot(ctx context.Context) (created bool, err error) {
	err = s.retry.do(ctx, "create bucket", s.what(""), isPermanent, func(ctx context.Context) error {
		ctx, cancel := s.opts.deadline(ctx, -1)
		defer cancel()
		ok, err := s.client.BucketExists(ctx, s.loc.Bucket)
		if err != nil {
			return s.classify(err)
		}
		if ok {
			return nil
		}
		err = s.client.MakeBucket(ctx, s.loc.Bucket, minio.MakeBucketOptions{Region: s.loc.Region})
		if c := minio.ToErrorResponse(err).Code; c == "BucketAlreadyOwnedByYou" || c == "BucketAlreadyExists" {
			return nil // made by a retried attempt, or by someone else meanwhile
		}
		if err != nil {
			return s.classify(err)
		}
		created = true
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("storage: create bucket s3://%s: %w", s.loc.Bucket, err)
	}
	return created, nil
}

// permanentError is a failure that retrying cannot fix.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

func isPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

// classify turns a minio-go error into one of ErrNotExist, ErrNoBucket, ErrAccess
// (permanent), another permanent error, or a transient one.
func (s *S3) classify(err error) error {
	if err == nil {
		return nil
	}
	var er minio.ErrorResponse
	if !errors.As(err, &er) {
		if transientNetErr(err) {
			return err
		}
		var ue *url.Error
		if errors.As(err, &ue) {
			return err // a request that did not complete: the network, a restarting server
		}
		return &permanentError{err}
	}
	msg := er.Code
	if er.Message != "" {
		msg += ": " + er.Message
	}
	switch er.Code {
	case minio.NoSuchKey, "NotFound", "NoSuchObject":
		return &permanentError{fmt.Errorf("%s: %w", msg, ErrNotExist)}
	case minio.NoSuchBucket:
		return &permanentError{fmt.Errorf("%s: %w", msg, ErrNoBucket)}
	case minio.AccessDenied, minio.InvalidAccessKeyID, minio.SignatureDoesNotMatch, "InvalidToken",
		"AllAccessDisabled", "AccountProblem", "InvalidSecurity", "AuthorizationHeaderMalformed", "AuthorizationQueryParametersError":
		return &permanentError{fmt.Errorf("%s (check the credentials and the bucket's policy): %w", msg, ErrAccess)}
	case "RequestTimeout", "SlowDown", "SlowDownRead", "SlowDownWrite", "InternalError", "ServiceUnavailable",
		"XMinioServerNotInitialized", "XMinioReadQuorum", "XMinioWriteQuorum", "Throttling", "RequestThrottled",
		"BadDigest", "XAmzContentSHA256Mismatch", "XAmzContentChecksumMismatch", "IncompleteBody", "RequestError":
		return errors.New(msg)
	}
	if er.StatusCode >= 500 || er.StatusCode == http.StatusRequestTimeout || er.StatusCode == http.StatusTooManyRequests {
		return errors.New(msg)
	}
	if er.StatusCode == 0 && er.Code == "" {
		return err // not from a server: minio-go's view of a broken request
	}
	return &permanentError{errors.New(msg)}
}

// transientNetErr reports the failures of a connection that a new attempt may not
// meet: refused, reset, broken, timed out, cut short.
func transientNetErr(err error) bool {
	var ne net.Error
	return errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNABORTED) ||
		errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne)
}

// fail words an error with the operation, bucket and key, and whether it was
// retried.
func (s *S3) fail(op, key string, err error) error {
	if isPermanent(err) && !errors.Is(err, ErrNotExist) {
		return fmt.Errorf("storage: %s %s: %w (permanent, not retried)", op, s.what(key), err)
	}
	return fmt.Errorf("storage: %s %s: %w", op, s.what(key), err)
}
