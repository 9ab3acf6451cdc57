package storage_test

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/crdgo/crdgo/storage"
	"github.com/crdgo/crdgo/storage/storetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newFS(t *testing.T) *storage.FS {
	s, err := storage.NewFS(t.TempDir(), storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestFS(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storage.Store { return newFS(t) })
}

// TestFSCorrupt: a file changed behind the store's back fails its Get at the end.
func TestFSCorrupt(t *testing.T) {
	s := newFS(t)
	b := storetest.Bytes(1, 5000)
	storetest.Put(t, s, "x/y", b)
	p := filepath.Join(s.Dir(), "x", "y")
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{b[100] ^ 1}, 100); err != nil {
		t.Fatal(err)
	}
	f.Close()
	rc, _, err := s.Get(t.Context(), "x/y")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if _, err := io.ReadAll(rc); !errors.Is(err, storage.ErrCorrupt) {
		t.Errorf("read of a flipped byte = %v; want ErrCorrupt", err)
	}
	if _, err := storage.Verify(t.Context(), s, "x/y"); !errors.Is(err, storage.ErrCorrupt) {
		t.Errorf("Verify of a flipped byte = %v; want ErrCorrupt", err)
	}
}

// TestFSLayout: objects are plain files under the folder, no temporary file is
// left behind, and links are followed without looping.
func TestFSLayout(t *testing.T) {
	s := newFS(t)
	storetest.Put(t, s, "testA/1.png", []byte("a"))
	storetest.Put(t, s, "trainA/1.png", []byte("b"))
	if err := os.Symlink("testA", filepath.Join(s.Dir(), "valA")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("..", filepath.Join(s.Dir(), "testA", "up")); err != nil { // a loop
		t.Fatal(err)
	}
	var files []string
	filepath.WalkDir(s.Dir(), func(p string, d os.DirEntry, err error) error {
		if !d.IsDir() {
			files = append(files, strings.TrimPrefix(p, s.Dir()+"/"))
		}
		return nil
	})
	slices.Sort(files)
	if want := []string{"testA/1.png", "testA/up", "trainA/1.png", "valA"}; !slices.Equal(files, want) {
		t.Errorf("files = %q; want %q", files, want)
	}
	all, err := storage.ListAll(t.Context(), s, "")
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, o := range all {
		keys = append(keys, o.Key)
	}
	if want := []string{"testA/1.png", "trainA/1.png", "valA/1.png"}; !slices.Equal(keys, want) {
		t.Errorf("ListAll = %q; want %q", keys, want)
	}
	if b := storetest.Get(t, s, "valA/1.png"); string(b) != "a" {
		t.Errorf("Get(valA/1.png) = %q; want a", b)
	}
}
