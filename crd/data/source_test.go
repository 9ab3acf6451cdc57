package data

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"testing/fstest"
)

func TestDirListsFilesDirectlyInDirSorted(t *testing.T) {
	root := t.TempDir()
	mk := func(name, body string) {
		t.Helper()
		p := filepath.Join(root, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	mk("trainA/b.png", "b")
	mk("trainA/a.jpg", "a")
	mk("trainA/C.PNG", "c")
	mk("trainA/sub/deeper.png", "d") // not directly in trainA
	mk("elsewhere/linked.png", "l")
	if err := os.Symlink(filepath.Join(root, "elsewhere", "linked.png"), filepath.Join(root, "trainA", "l.png")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(root, "nowhere.png"), filepath.Join(root, "trainA", "dangling.png")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(root, "trainA"), filepath.Join(root, "valA")); err != nil {
		t.Fatal(err)
	}
	src := Dir(root)
	ctx := context.Background()
	got, err := src.List(ctx, "trainA")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"trainA/C.PNG", "trainA/a.jpg", "trainA/b.png", "trainA/l.png"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("List(trainA) = %q; want %q", got, want)
	}
	// A split that is a link to another (the scripts' valA → testA) lists the same files.
	got, err = src.List(ctx, "valA")
	if err != nil || len(got) != 4 || got[0] != "valA/C.PNG" {
		t.Errorf("List(valA) = %q, %v; want the 4 files of trainA under valA/", got, err)
	}
	rc, err := src.Open(ctx, "trainA/l.png")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(rc)
	rc.Close()
	if string(body) != "l" {
		t.Errorf("Open(trainA/l.png) read %q; want %q", body, "l")
	}
	if s := src.String(); !strings.HasPrefix(s, "file:///") || !strings.HasSuffix(s, filepath.ToSlash(root)) {
		t.Errorf("String() = %q; want file://%s", s, root)
	}
}

func TestDirRejectsKeysOutsideRoot(t *testing.T) {
	src := Dir(t.TempDir())
	ctx := context.Background()
	for _, key := range []string{"../etc/passwd", "/etc/passwd", "a/../../b", ""} {
		if rc, err := src.Open(ctx, key); err == nil {
			rc.Close()
			t.Errorf("Open(%q) succeeded; want an error", key)
		}
		if _, err := src.List(ctx, key); err == nil {
			t.Errorf("List(%q) succeeded; want an error", key)
		}
	}
}

func TestListMissingSplitNamesSourceAndSplit(t *testing.T) {
	src := FS(fstest.MapFS{"trainA/x.png": {}}, "mem://set")
	_, err := src.List(context.Background(), "trainB")
	if err == nil || !strings.Contains(err.Error(), "mem://set") || !strings.Contains(err.Error(), "trainB") {
		t.Errorf("List(trainB) = %v; want an error naming mem://set and trainB", err)
	}
}

func TestSourceHonoursCancelledContext(t *testing.T) {
	src := FS(fstest.MapFS{"a/x.png": {}}, "mem://set")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := src.List(ctx, "a"); err != context.Canceled {
		t.Errorf("List with a cancelled context = %v; want context.Canceled", err)
	}
	if _, err := src.Open(ctx, "a/x.png"); err != context.Canceled {
		t.Errorf("Open with a cancelled context = %v; want context.Canceled", err)
	}
}

// TestSub: a Sub source lists and opens the files of its folder with keys
// relative to it, and refuses keys that leave it.
func TestSub(t *testing.T) {
	ctx := context.Background()
	root := FS(fstest.MapFS{
		"ds/train/a.png": {Data: []byte("a")},
		"ds/train/b.png": {Data: []byte("b")},
		"other/x.png":    {Data: []byte("x")},
	}, "mem://root")
	s := Sub(root, "ds")
	keys, err := s.List(ctx, "train")
	if err != nil || len(keys) != 2 || keys[0] != "train/a.png" || keys[1] != "train/b.png" {
		t.Fatalf("List(train) = %v, %v; want [train/a.png train/b.png]", keys, err)
	}
	rc, err := s.Open(ctx, "train/b.png")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	if string(b) != "b" {
		t.Errorf("Open(train/b.png) read %q; want b", b)
	}
	for _, bad := range []string{"../other/x.png", "/ds/train/a.png", "."} {
		if _, err := s.Open(ctx, bad); err == nil {
			t.Errorf("Open(%q) succeeded; want a refusal", bad)
		}
	}
	if got := s.String(); got != "mem://root/ds" {
		t.Errorf("String() = %q; want mem://root/ds", got)
	}
}
