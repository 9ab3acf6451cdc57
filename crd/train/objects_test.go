package train

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"slices"
	"strings"
	"sync"
	"testing"

	"go.uber.org/zap/zaptest"

	"github.com/crdgo/crdgo/crd/tensor"
)

// memObjects is an ObjectStore in memory that records every SHA-256, as
// crdgo's stores do; package storage's adapter is tested against MinIO in
// cmd/crdgo.
type memObjects struct {
	mu   sync.Mutex
	objs map[string][]byte
	sha  map[string]string // what the store recorded at put time
}

func newMemObjects() *memObjects {
	return &memObjects{objs: map[string][]byte{}, sha: map[string]string{}}
}

func (m *memObjects) String() string { return "mem://ckpt" }

func (m *memObjects) PutObject(_ context.Context, key string, data []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	h := sha256.Sum256(data)
	m.objs[key], m.sha[key] = append([]byte(nil), data...), hex.EncodeToString(h[:])
	return nil
}

func (m *memObjects) GetObject(_ context.Context, key string, limit int64) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.objs[key]
	if !ok {
		return nil, fmt.Errorf("%s: %w", key, fs.ErrNotExist)
	}
	if h := sha256.Sum256(b); hex.EncodeToString(h[:]) != m.sha[key] {
		return nil, fmt.Errorf("%s: corrupt", key)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s: %d bytes > %d", key, len(b), limit)
	}
	return append([]byte(nil), b...), nil
}

func (m *memObjects) ListObjects(_ context.Context, prefix string, fn func(string, int64, string)) error {
	m.mu.Lock()
	var keys []string
	for k := range m.objs {
		if strings.HasPrefix(k, prefix) {
			keys = append(keys, k)
		}
	}
	m.mu.Unlock()
	slices.Sort(keys)
	for _, k := range keys {
		fn(k, int64(len(m.objs[k])), m.sha[k])
	}
	return nil
}

func (m *memObjects) DeleteObject(_ context.Context, key string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.objs, key)
	delete(m.sha, key)
	return nil
}

func (m *memObjects) names(prefix string) []string {
	var out []string
	m.ListObjects(context.Background(), prefix, func(k string, _ int64, _ string) { out = append(out, k) })
	return out
}

// runObjects trains the tiny recipe up to maxSteps with checkpoints every
// `every` steps into store, resuming from its newest intact checkpoint.
func runObjects(t *testing.T, r Recipe, root string, store ObjectStore, maxSteps, every, keep int) (*Trainer, Summary) {
	t.Helper()
	log := zaptest.NewLogger(t)
	ctx := context.Background()
	if _, err := PrepareData(ctx, root, r, nil, log); err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	tr, err := New(Config{Recipe: r, DataRoot: root, OutDir: out, MaxSteps: maxSteps, LogEvery: 1, SampleEvery: 100,
		CheckpointEvery: every, KeepCheckpoints: keep, Workers: 1}, tensor.NewCPU(tensor.DefaultCPUKind(), 2), Extras{}, log)
	if err != nil {
		t.Fatal(err)
	}
	name, err := LatestObjectCheckpoint(ctx, store, log)
	if err != nil {
		t.Fatal(err)
	}
	if name != "" {
		dir, err := FetchCheckpoint(ctx, store, name, t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		if err := tr.LoadCheckpoint(dir); err != nil {
			t.Fatal(err)
		}
	}
	sum, err := tr.Run(ctx, RunOptions{Output: &RunFolder{Dir: out, Checkpoints: store, log: log}})
	if err != nil {
		t.Fatal(err)
	}
	return tr, sum
}

// TestCheckpointsInAStore: checkpoints go into an object store file by file,
// manifest last; resume from the store is bit for bit; a checkpoint whose
// manifest is gone, or whose file does not match it, is skipped; retention
// keeps the newest intact ones and removes uploads a crash cut short.
func TestCheckpointsInAStore(t *testing.T) {
	r := tinyRecipe(t, "demo")
	root := t.TempDir()
	straight, _ := runObjects(t, r, root, newMemObjects(), 10, 100, 3)

	store := newMemObjects()
	runObjects(t, r, root, store, 6, 2, 2) // checkpoints 2, 4, 6: keep 2 → 4, 6
	ctx := context.Background()
	if got, _ := ObjectCheckpoints(ctx, store); !slices.Equal(got, []string{"step-00000006", "step-00000004"}) {
		t.Fatalf("checkpoints in the store after keep 2: %v; want [step-00000006 step-00000004]", got)
	}
	// The newest loses its manifest (an upload cut short): resume takes step 4.
	// And an upload a crash cut short before its manifest (step 5).
	store.DeleteObject(ctx, "step-00000006/"+manifestName)
	store.PutObject(ctx, "step-00000005/teacher_G.safetensors", []byte("partial"))
	if name, err := LatestObjectCheckpoint(ctx, store, zaptest.NewLogger(t)); err != nil || name != "step-00000004" {
		t.Fatalf("latest with step 6's manifest gone = %q, %v; want step-00000004", name, err)
	}
	resumed, sum := runObjects(t, r, root, store, 10, 100, 2)
	if sum.Steps != 10 {
		t.Fatalf("resumed run ended at %d; want 10", sum.Steps)
	}
	if straight.Checksum() != resumed.Checksum() {
		t.Errorf("resumed from the store's step 4: state checksum %x; the straight run's %x", resumed.Checksum(), straight.Checksum())
	}
	// The run rewrote step 6 (an epoch ends there) and saved step 10;
	// retention kept those two and removed step 4 and the cut-short step 5.
	if got, _ := ObjectCheckpoints(ctx, store); !slices.Equal(got, []string{"step-00000010", "step-00000006"}) {
		t.Errorf("checkpoints after the resumed run: %v; want [step-00000010 step-00000006]", got)
	}
	if left := store.names("step-00000005/"); len(left) != 0 {
		t.Errorf("the cut-short upload of step 5 is still there: %v", left)
	}
	// A file that does not match its manifest: the checkpoint is skipped.
	store.mu.Lock()
	k := "step-00000010/student_G.safetensors"
	store.objs[k] = store.objs[k][:len(store.objs[k])-1]
	h := sha256.Sum256(store.objs[k])
	store.sha[k] = hex.EncodeToString(h[:])
	store.mu.Unlock()
	if name, _ := LatestObjectCheckpoint(ctx, store, zaptest.NewLogger(t)); name == "step-00000010" || name == "" {
		t.Errorf("latest with step 10's student truncated = %q; want an older intact one", name)
	}
	if _, err := FetchCheckpoint(ctx, store, "step-00000010", t.TempDir()); err == nil || !strings.Contains(err.Error(), "student_G.safetensors") {
		t.Errorf("fetching the broken step 10 = %v; want an error naming student_G.safetensors", err)
	}
}

// FuzzManifest: ParseManifest never panics, and whatever it accepts
// re-encodes to a manifest it accepts again with the same files.
func FuzzManifest(f *testing.F) {
	f.Add([]byte(`{"step":3,"recipe":"demo","crdgo_version":"dev","created":"2026-01-01T00:00:00Z","files":[{"name":"state.json","size":10,"sha256":"` + strings.Repeat("a", 64) + `"}]}`))
	f.Add([]byte(`{"step":-1,"files":[]}`))
	f.Add([]byte(`{"files":[{"name":"../x.safetensors","size":1,"sha256":""}]}`))
	f.Add([]byte(`{}{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseManifest(b)
		if err != nil {
			return
		}
		enc, err := jsonMarshal(m)
		if err != nil {
			t.Fatal(err)
		}
		m2, err := ParseManifest(enc)
		if err != nil || len(m2.Files) != len(m.Files) || m2.Step != m.Step {
			t.Fatalf("ParseManifest(%q) = %+v; re-encoded %q gives %+v, %v", b, m, enc, m2, err)
		}
	})
}

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }
