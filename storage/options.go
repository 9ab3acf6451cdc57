package storage

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"time"

	"go.uber.org/zap"
)

// Options configures the stores Open returns. Zero fields take DefaultOptions'
// values.
type Options struct {
	// AccessKey and SecretKey, when set, are the S3 credentials (flags). Otherwise
	// CredentialsFile, then AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are used.
	// They are never logged or put in an error.
	AccessKey, SecretKey string
	// CredentialsFile is an AWS shared-credentials file (INI: [profile] with
	// aws_access_key_id and aws_secret_access_key); Profile picks the section
	// ("default" when empty).
	CredentialsFile, Profile string
	// Getenv reads the environment (os.Getenv when nil); tests replace it.
	Getenv func(string) string

	// Retry says how transient failures are retried.
	Retry Retry
	// Timeout bounds one request (one attempt) when the caller's ctx has no
	// deadline of its own. Puts and Gets get Timeout plus the time to move the
	// object at MinRate.
	Timeout time.Duration
	// MinRate is the slowest transfer, in bytes per second, a deadline allows for.
	MinRate int64
	// PartSize is the multipart part size in bytes: objects larger than it are
	// uploaded in parts (at least 5 MiB; raised for objects over 10,000 parts).
	PartSize int64
	// Threads is how many parts of one object are uploaded at once.
	Threads int
	// SpoolDir holds temporary copies of streams put with an unknown size or from
	// a reader that cannot be read twice (os.TempDir() when empty): a retried
	// upload starts again from the copy. Streams up to SpoolMemory bytes are kept
	// in memory instead.
	SpoolDir    string
	SpoolMemory int64
	// Transport carries the S3 requests (a default transport when nil).
	Transport http.RoundTripper
	// Log receives retries and failures (zap.NewNop() when nil).
	Log *zap.Logger
}

// Retry is a capped exponential backoff with jitter: before attempt k+1 (k ≥ 1)
// the store waits a random duration in [d/2, d], d = min(Cap, Base·2^(k−1)), and
// gives up after Attempts attempts or when ctx ends, whichever comes first.
type Retry struct {
	Attempts int
	Base     time.Duration
	Cap      time.Duration
}

// DefaultOptions returns 10 attempts from 100 ms to 5 s apart, 2-minute requests
// at no less than 1 MiB/s, 16 MiB parts 4 at a time, and 8 MiB in-memory spools.
func DefaultOptions() Options {
	return Options{
		Retry:       Retry{Attempts: 10, Base: 100 * time.Millisecond, Cap: 5 * time.Second},
		Timeout:     2 * time.Minute,
		MinRate:     1 << 20,
		PartSize:    16 << 20,
		Threads:     4,
		SpoolMemory: 8 << 20,
	}
}

// withDefaults fills the zero fields of o from DefaultOptions, so that a zero
// Options works.
func (o Options) withDefaults() Options {
	d := DefaultOptions()
	if o.Retry == (Retry{}) {
		o.Retry = d.Retry
	}
	if o.Timeout == 0 {
		o.Timeout = d.Timeout
	}
	if o.MinRate == 0 {
		o.MinRate = d.MinRate
	}
	if o.PartSize == 0 {
		o.PartSize = d.PartSize
	}
	if o.Threads == 0 {
		o.Threads = d.Threads
	}
	if o.SpoolMemory == 0 {
		o.SpoolMemory = d.SpoolMemory
	}
	return o
}

// Validate reports every invalid field at once.
func (o Options) Validate() error {
	var errs []error
	if o.Retry.Attempts < 1 {
		errs = append(errs, fmt.Errorf("storage.retry.attempts: must be ≥ 1, got %d", o.Retry.Attempts))
	}
	if o.Retry.Base <= 0 || o.Retry.Cap < o.Retry.Base {
		errs = append(errs, fmt.Errorf("storage.retry: want 0 < base ≤ cap, got base %v cap %v", o.Retry.Base, o.Retry.Cap))
	}
	if o.Timeout <= 0 {
		errs = append(errs, fmt.Errorf("storage.timeout: must be > 0, got %v", o.Timeout))
	}
	if o.MinRate < 1 {
		errs = append(errs, fmt.Errorf("storage.min_rate: must be ≥ 1 byte/s, got %d", o.MinRate))
	}
	if o.PartSize < 5<<20 || o.PartSize > 5<<30 {
		errs = append(errs, fmt.Errorf("storage.part_size: must be in [5 MiB, 5 GiB] (S3's limits), got %d", o.PartSize))
	}
	if o.Threads < 1 {
		errs = append(errs, fmt.Errorf("storage.threads: must be ≥ 1, got %d", o.Threads))
	}
	if o.SpoolMemory < 0 {
		errs = append(errs, fmt.Errorf("storage.spool_memory: must be ≥ 0, got %d", o.SpoolMemory))
	}
	if (o.AccessKey == "") != (o.SecretKey == "") {
		errs = append(errs, errors.New("storage: give both the access key and the secret key, or neither"))
	}
	return errors.Join(errs...)
}

func (o Options) getenv(k string) string {
	if o.Getenv != nil {
		return o.Getenv(k)
	}
	return os.Getenv(k)
}

func (o Options) log() *zap.Logger {
	if o.Log != nil {
		return o.Log
	}
	return zap.NewNop()
}

// deadline returns ctx with the store's deadline for moving n bytes (n < 0: a small
// request) when ctx has none.
func (o Options) deadline(ctx context.Context, n int64) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	d := o.Timeout
	if n > 0 {
		d += time.Duration(float64(n) / float64(o.MinRate) * float64(time.Second))
	}
	return context.WithTimeout(ctx, d)
}

// Open returns the store at a URL (see Location): the fs store for file:///dir or
// a path, the S3 store for s3://bucket/prefix. It checks nothing over the network:
// a missing bucket or wrong credentials show in the first call.
func Open(ctx context.Context, rawURL string, opts Options) (Store, error) {
	loc, err := ParseURL(rawURL)
	if err != nil {
		return nil, err
	}
	return OpenLocation(ctx, loc, opts)
}

// OpenLocation is Open for a parsed URL.
func OpenLocation(ctx context.Context, loc Location, opts Options) (Store, error) {
	switch loc.Scheme {
	case "file":
		return NewFS(loc.Dir, opts)
	case "s3":
		return NewS3(ctx, loc, opts)
	}
	return nil, fmt.Errorf("storage: scheme %q: want file or s3", loc.Scheme)
}
