package train

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"go.uber.org/zap"
)

// ObjectStore is where a run's checkpoints go when they are not kept on local
// disk: an object store (MinIO, S3). Keys are slash-separated,
// "step-00000020/teacher_G.safetensors". Package storage adapts its Store to
// this interface (storage.Objects); crd/train never imports storage.
//
// A put is whole or nothing; a get verifies the object's recorded size and
// SHA-256. Implementations are safe for concurrent use.
type ObjectStore interface {
	PutObject(ctx context.Context, key string, data []byte) error
	// GetObject returns the object's bytes, reading at most limit of them
	// (an object larger than limit is an error); a missing object is an error
	// that matches fs.ErrNotExist.
	GetObject(ctx context.Context, key string, limit int64) ([]byte, error)
	// ListObjects calls fn for every object whose key starts with prefix, in
	// key order, with its size and SHA-256 (lower-case hex, "" when the store
	// records none).
	ListObjects(ctx context.Context, prefix string, fn func(key string, size int64, sha256 string)) error
	// DeleteObject removes an object; a missing one is not an error.
	DeleteObject(ctx context.Context, key string) error
	// String names the store (a URL without credentials).
	String() string
}

// objectMeta describes an object of an ObjectStore.
type objectMeta struct {
	Key    string
	Size   int64
	SHA256 string // lower-case hex, "" when the store has none
}

// maxCheckpointFile bounds one checkpoint file read from a store (the
// paper-scale teacher's optimizer state is ~24 MB).
const maxCheckpointFile = 4 << 30

// SaveCheckpointObjects writes the trainer's checkpoint into the store: the
// files of SaveCheckpoint (built first in a folder under scratch, which is
// removed afterwards), each put whole, then manifest.json last. A checkpoint
// whose manifest is not in the store does not exist: an upload cut short
// leaves files that no reader takes for a checkpoint, and the next prune
// removes them. It returns the checkpoint's name in the store (store URL /
// step-N).
func (t *Trainer) SaveCheckpointObjects(ctx context.Context, store ObjectStore, scratch string) (string, error) {
	if err := os.MkdirAll(scratch, 0o755); err != nil {
		return "", fmt.Errorf("checkpoint: %w", err)
	}
	tmp, err := os.MkdirTemp(scratch, "upload")
	if err != nil {
		return "", fmt.Errorf("checkpoint: %w", err)
	}
	defer os.RemoveAll(tmp)
	dir, err := t.SaveCheckpoint(tmp)
	if err != nil {
		return "", err
	}
	delete(t.intact, dir) // a scratch copy: retention does not look here
	m, err := VerifyCheckpoint(dir)
	if err != nil {
		return "", err
	}
	name := filepath.Base(dir)
	for _, f := range append(m.Files, ManifestFile{Name: manifestName}) { // the manifest last
		b, err := os.ReadFile(filepath.Join(dir, f.Name))
		if err != nil {
			return "", fmt.Errorf("checkpoint: %w", err)
		}
		if err := store.PutObject(ctx, name+"/"+f.Name, b); err != nil {
			return "", fmt.Errorf("checkpoint %s/%s: %s: %w", store, name, f.Name, err)
		}
	}
	if t.intactObjects == nil {
		t.intactObjects = map[string]bool{}
	}
	t.intactObjects[name] = true
	return store.String() + "/" + name, nil
}

// objectCheckpoint is a checkpoint's name in a store and its objects.
type objectCheckpoint struct {
	name  string
	step  int
	files map[string]objectMeta // by file name
}

// ObjectCheckpoints lists the step folders of a store, newest first, whether
// or not they hold a manifest.
func objectCheckpoints(ctx context.Context, store ObjectStore) ([]objectCheckpoint, error) {
	var objs []objectMeta
	if err := store.ListObjects(ctx, "step-", func(key string, size int64, sha string) {
		objs = append(objs, objectMeta{key, size, sha})
	}); err != nil {
		return nil, fmt.Errorf("checkpoints in %s: %w", store, err)
	}
	byName := map[string]*objectCheckpoint{}
	for _, o := range objs {
		dir, file, ok := strings.Cut(o.Key, "/")
		if !ok || strings.Contains(file, "/") {
			continue
		}
		n, err := strconv.Atoi(strings.TrimPrefix(dir, "step-"))
		if err != nil || n < 0 || dir != fmt.Sprintf("step-%08d", n) {
			continue
		}
		cp := byName[dir]
		if cp == nil {
			cp = &objectCheckpoint{name: dir, step: n, files: map[string]objectMeta{}}
			byName[dir] = cp
		}
		cp.files[file] = o
	}
	out := make([]objectCheckpoint, 0, len(byName))
	for _, cp := range byName {
		out = append(out, *cp)
	}
	slices.SortFunc(out, func(a, b objectCheckpoint) int { return b.step - a.step })
	return out, nil
}

// ObjectCheckpoints lists the names (step-N) of the checkpoints in a store
// that have a manifest, newest first.
func ObjectCheckpoints(ctx context.Context, store ObjectStore) ([]string, error) {
	cps, err := objectCheckpoints(ctx, store)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, cp := range cps {
		if _, ok := cp.files[manifestName]; ok {
			out = append(out, cp.name)
		}
	}
	return out, nil
}

// verifyObjects checks a checkpoint in a store: its manifest exists and
// parses, and every file it lists is there with its size and, when the store
// records one, its SHA-256 (the store checks the bytes against it on every
// read, so a file that matches here cannot be read back different).
func verifyObjects(ctx context.Context, store ObjectStore, cp objectCheckpoint) (Manifest, error) {
	if _, ok := cp.files[manifestName]; !ok {
		return Manifest{}, fmt.Errorf("checkpoint %s/%s: no manifest (incomplete checkpoint)", store, cp.name)
	}
	b, err := store.GetObject(ctx, cp.name+"/"+manifestName, maxManifest)
	if err != nil {
		return Manifest{}, fmt.Errorf("checkpoint %s/%s: %w", store, cp.name, err)
	}
	m, err := ParseManifest(b)
	if err != nil {
		return Manifest{}, fmt.Errorf("checkpoint %s/%s: %w", store, cp.name, err)
	}
	if m.Step != cp.step {
		return Manifest{}, fmt.Errorf("checkpoint %s/%s: manifest says step %d", store, cp.name, m.Step)
	}
	for _, f := range m.Files {
		o, ok := cp.files[f.Name]
		switch {
		case !ok:
			return Manifest{}, fmt.Errorf("checkpoint %s/%s: %s is missing", store, cp.name, f.Name)
		case o.Size != f.Size:
			return Manifest{}, fmt.Errorf("checkpoint %s/%s: %s: %d bytes, manifest says %d", store, cp.name, f.Name, o.Size, f.Size)
		case o.SHA256 != "" && o.SHA256 != f.SHA256:
			return Manifest{}, fmt.Errorf("checkpoint %s/%s: %s: sha256 %s, manifest says %s", store, cp.name, f.Name, o.SHA256[:12], f.SHA256[:12])
		}
	}
	return m, nil
}

// LatestObjectCheckpoint returns the name of the newest checkpoint in the store
// whose manifest exists and whose files match it; broken ones are logged and
// skipped. It returns "" when there is none.
func LatestObjectCheckpoint(ctx context.Context, store ObjectStore, log *zap.Logger) (string, error) {
	cps, err := objectCheckpoints(ctx, store)
	if err != nil {
		return "", err
	}
	for _, cp := range cps {
		if _, err := verifyObjects(ctx, store, cp); err != nil {
			log.Warn("skipping broken checkpoint", zap.String("checkpoint", store.String()+"/"+cp.name), zap.Error(err))
			continue
		}
		return cp.name, nil
	}
	return "", nil
}

// FetchCheckpoint copies the checkpoint name of the store into dir/name and
// returns that folder, for LoadCheckpoint (which checks every file's SHA-256
// against the manifest again). An existing dir/name is replaced.
func FetchCheckpoint(ctx context.Context, store ObjectStore, name, dir string) (string, error) {
	cps, err := objectCheckpoints(ctx, store)
	if err != nil {
		return "", err
	}
	i := slices.IndexFunc(cps, func(c objectCheckpoint) bool { return c.name == name })
	if i < 0 {
		return "", fmt.Errorf("checkpoint %s/%s: %w", store, name, fs.ErrNotExist)
	}
	m, err := verifyObjects(ctx, store, cps[i])
	if err != nil {
		return "", err
	}
	final := filepath.Join(dir, name)
	if err := os.RemoveAll(final); err != nil {
		return "", err
	}
	if err := os.MkdirAll(final, 0o755); err != nil {
		return "", err
	}
	for _, f := range append(m.Files, ManifestFile{Name: manifestName}) {
		b, err := store.GetObject(ctx, name+"/"+f.Name, maxCheckpointFile)
		if err != nil {
			return "", fmt.Errorf("checkpoint %s/%s: %s: %w", store, name, f.Name, err)
		}
		if err := os.WriteFile(filepath.Join(final, f.Name), b, 0o644); err != nil {
			return "", err
		}
	}
	return final, nil
}

// pruneObjectCheckpoints is pruneCheckpoints for a store: keep the newest keep
// intact checkpoints, those whose step is a multiple of keepEvery (> 0), and
// everything newer than the oldest kept; remove the rest. A checkpoint is
// removed manifest first, so that a removal cut short leaves files no reader
// takes for a checkpoint. Folders without a manifest older than the oldest
// kept checkpoint (uploads a crash cut short) go too. Only keys of files a
// checkpoint is made of are deleted.
func (t *Trainer) pruneObjectCheckpoints(ctx context.Context, store ObjectStore, keep, keepEvery int) {
	cps, err := objectCheckpoints(ctx, store)
	if err != nil {
		t.log.Warn("cannot list checkpoints for retention", zap.String("store", store.String()), zap.Error(err))
		return
	}
	if t.intactObjects == nil {
		t.intactObjects = map[string]bool{}
	}
	intact, cut := 0, len(cps)
	for i, cp := range cps {
		if !t.intactObjects[cp.name] {
			if _, err := verifyObjects(ctx, store, cp); err != nil {
				if _, ok := cp.files[manifestName]; ok && !t.reported[cp.name] {
					t.log.Warn("broken checkpoint: kept until enough newer intact ones exist", zap.String("checkpoint", store.String()+"/"+cp.name), zap.Error(err))
					if t.reported == nil {
						t.reported = map[string]bool{}
					}
					t.reported[cp.name] = true
				}
				continue
			}
			t.intactObjects[cp.name] = true
		}
		intact++
		if intact == keep {
			cut = i + 1
			break
		}
	}
	for _, cp := range cps[cut:] {
		if keepEvery > 0 && cp.step%keepEvery == 0 && t.intactObjects[cp.name] {
			continue
		}
		if err := deleteObjectCheckpoint(ctx, store, cp); err != nil {
			t.log.Warn("cannot remove old checkpoint", zap.String("checkpoint", store.String()+"/"+cp.name), zap.Error(err))
			continue
		}
		delete(t.intactObjects, cp.name)
	}
}

func deleteObjectCheckpoint(ctx context.Context, store ObjectStore, cp objectCheckpoint) error {
	names := make([]string, 0, len(cp.files))
	for name := range cp.files {
		if ownCheckpointFile(name) && name != manifestName {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	if _, ok := cp.files[manifestName]; ok {
		names = append([]string{manifestName}, names...)
	}
	for _, name := range names {
		if err := store.DeleteObject(ctx, path.Join(cp.name, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}
