package storage

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
)

// Objects is a Store seen as whole objects in memory under a prefix: the
// shape in which crd/train keeps checkpoints in a store (train.ObjectStore),
// without storage importing crd. Keys are relative to the prefix.
type Objects struct {
	s      Store
	prefix string // "" or a key prefix with no trailing slash
}

// NewObjects returns s's objects under prefix ("" for the whole store).
func NewObjects(s Store, prefix string) *Objects {
	return &Objects{s: s, prefix: strings.Trim(prefix, "/")}
}

func (o *Objects) key(k string) string {
	if o.prefix == "" {
		return k
	}
	return o.prefix + "/" + k
}

// String is the URL of the prefix.
func (o *Objects) String() string {
	if o.prefix == "" {
		return o.s.String()
	}
	if loc, err := ParseURL(o.s.String()); err == nil {
		return loc.Join(o.prefix).String()
	}
	return o.s.String() + "/" + o.prefix
}

// PutObject writes data whole at key.
func (o *Objects) PutObject(ctx context.Context, key string, data []byte) error {
	_, err := o.s.Put(ctx, o.key(key), bytes.NewReader(data), int64(len(data)))
	return err
}

// GetObject reads the object at key, verified (ErrCorrupt on a mismatch), at
// most limit bytes: a larger object is an error before anything is read.
func (o *Objects) GetObject(ctx context.Context, key string, limit int64) ([]byte, error) {
	rc, info, err := o.s.Get(ctx, o.key(key))
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	if info.Size > limit {
		return nil, fmt.Errorf("storage: %s/%s: %d bytes, more than the %d expected", o, key, info.Size, limit)
	}
	b := make([]byte, 0, max(info.Size, 0))
	buf := bytes.NewBuffer(b)
	if _, err := io.Copy(buf, io.LimitReader(rc, limit+1)); err != nil {
		return nil, err
	}
	if int64(buf.Len()) > limit {
		return nil, fmt.Errorf("storage: %s/%s: more than the %d bytes expected", o, key, limit)
	}
	return buf.Bytes(), nil
}

// ListObjects calls fn for every object under prefix (relative keys), in key
// order.
func (o *Objects) ListObjects(ctx context.Context, prefix string, fn func(key string, size int64, sha256 string)) error {
	all, err := ListAll(ctx, o.s, o.key(prefix))
	if err != nil {
		return err
	}
	cut := 0
	if o.prefix != "" {
		cut = len(o.prefix) + 1
	}
	for _, x := range all {
		fn(x.Key[cut:], x.Size, x.SHA256)
	}
	return nil
}

// DeleteObject removes the object at key.
func (o *Objects) DeleteObject(ctx context.Context, key string) error {
	return o.s.Delete(ctx, o.key(key))
}
