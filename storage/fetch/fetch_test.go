package fetch

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type entry struct {
	name string
	body []byte
	mode os.FileMode // 0: a regular file
	link string      // for links
}

func zipOf(t testing.TB, entries []entry) []byte {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, e := range entries {
		h := &zip.FileHeader{Name: e.name, Method: zip.Deflate}
		switch {
		case e.mode&os.ModeSymlink != 0:
			h.SetMode(os.ModeSymlink | 0o777)
			e.body = []byte(e.link)
		case e.mode.IsDir():
			h.SetMode(os.ModeDir | 0o755)
		default:
			h.SetMode(0o644)
		}
		w, err := zw.CreateHeader(h)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(e.body)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func tarGzOf(t testing.TB, entries []entry, links map[string]byte) []byte {
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Mode: 0o644, Size: int64(len(e.body)), Typeflag: tar.TypeReg}
		if typ, ok := links[e.name]; ok {
			h.Typeflag, h.Linkname, h.Size = typ, e.link, 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			tw.Write(e.body)
		}
	}
	tw.Close()
	gz.Close()
	return buf.Bytes()
}

// horseZip is a small horse2zebra.zip with the real one's layout.
func horseZip(t testing.TB) []byte {
	var es []entry
	for _, split := range []string{"trainA", "trainB", "testA", "testB"} {
		es = append(es, entry{name: "horse2zebra/" + split + "/", mode: os.ModeDir})
		for i := range 3 {
			// Incompressible bodies, so the archive is long enough to cut in the middle.
			es = append(es, entry{name: fmt.Sprintf("horse2zebra/%s/n%03d.jpg", split, i), body: noise(len(split)*100+i, 4000)})
		}
	}
	return zipOf(t, es)
}

func noise(seed, n int) []byte {
	b := make([]byte, n)
	x := uint32(seed)*2654435761 + 1
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return b
}

func shoesTarGz(t testing.TB) []byte {
	var es []entry
	for _, split := range []string{"train", "val"} {
		for i := range 4 {
			es = append(es, entry{name: fmt.Sprintf("edges2shoes-r/%s/%d_AB.jpg", split, i), body: noise(i, 3000)})
		}
	}
	return tarGzOf(t, es, nil)
}

// server serves archives by name and records the requests; misbehave, when set,
// may answer a request instead (returns true).
type server struct {
	*httptest.Server
	mu        sync.Mutex
	files     map[string][]byte
	requests  []string // "GET /x Range: bytes=…"
	misbehave func(w http.ResponseWriter, r *http.Request, body []byte, n int) bool
}

func newServer(t *testing.T, files map[string][]byte) *server {
	s := &server{files: files}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.requests = append(s.requests, r.Method+" "+r.URL.Path+" "+r.Header.Get("Range"))
		n := len(s.requests)
		body, ok := s.files[strings.TrimPrefix(r.URL.Path, "/")]
		mis := s.misbehave
		s.mu.Unlock()
		if !ok {
			http.NotFound(w, r)
			return
		}
		if mis != nil && mis(w, r, body, n) {
			return
		}
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(body))
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *server) reqs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests)
}

func testOptions(t *testing.T, root string) Options {
	o := DefaultOptions(root)
	o.Wait = 10 * time.Millisecond
	o.StallTimeout = 5 * time.Second
	o.Log = zaptest.NewLogger(t)
	return o
}

func horse(t *testing.T) Dataset {
	d, ok := Lookup("horse2zebra")
	if !ok {
		t.Fatal("no horse2zebra in the catalog")
	}
	return d
}

// wantNothingLeft checks that no dataset folder and no staging folder remain.
func wantNothingLeft(t *testing.T, root, dir string) {
	t.Helper()
	entries, _ := os.ReadDir(root)
	for _, e := range entries {
		if e.Name() == dir || strings.HasPrefix(e.Name(), ".fetch-") {
			t.Errorf("%s left in the data root after a failure", e.Name())
		}
	}
}

func TestFetchCycleGAN(t *testing.T) {
	srv := newServer(t, map[string][]byte{"horse2zebra.zip": horseZip(t)})
	root := t.TempDir()
	o := testOptions(t, root)
	o.BaseURL = srv.URL
	var last, total int64
	o.Progress = func(done, tot int64) { last, total = done, tot }
	res, err := Fetch(t.Context(), horse(t), o)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "horse2zebra")
	if res.Dir != dir || res.Already || res.Resumed {
		t.Errorf("Fetch = %+v; want a fresh fetch into %s", res, dir)
	}
	for _, split := range []string{"trainA", "trainB", "testA", "testB", "valA", "valB"} {
		entries, err := os.ReadDir(filepath.Join(dir, split))
		if err != nil || len(entries) != 3 {
			t.Errorf("%s: %d files, %v; want 3", split, len(entries), err)
		}
	}
	if l, err := os.Readlink(filepath.Join(dir, "valA")); err != nil || l != "testA" {
		t.Errorf("valA = link to %q, %v; want testA", l, err)
	}
	if want := len(srv.files["horse2zebra.zip"]); last != int64(want) || total != int64(want) {
		t.Errorf("progress ended at %d of %d; want %d of %d", last, total, want, want)
	}
	if len(res.Mismatches) != 4 { // 3 files per split against the real counts
		t.Errorf("Mismatches = %q; want the 4 splits reported", res.Mismatches)
	}
	if _, err := os.Stat(filepath.Join(root, ".downloads", "horse2zebra.zip")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("archive kept after unpacking: %v", err)
	}
	// Again: already there, no request.
	n := len(srv.reqs())
	res, err = Fetch(t.Context(), horse(t), o)
	if err != nil || !res.Already || len(srv.reqs()) != n {
		t.Errorf("second Fetch = %+v, %v, %d requests; want already there, none", res, err, len(srv.reqs())-n)
	}
}

func TestFetchTarGz(t *testing.T) {
	srv := newServer(t, map[string][]byte{"edges2shoes-r.tar.gz": shoesTarGz(t)})
	root := t.TempDir()
	o := testOptions(t, root)
	o.BaseURL = srv.URL
	d, _ := Lookup("edges2shoes")
	res, err := Fetch(t.Context(), d, o)
	if err != nil {
		t.Fatal(err)
	}
	if res.Dir != filepath.Join(root, "edges2shoes-r") || res.Counts["train"] != 4 || res.Counts["val"] != 4 {
		t.Errorf("Fetch = %+v; want edges2shoes-r with 4 train, 4 val", res)
	}
}

// TestFetchDroppedConnection: the server cuts the connection half-way; the next
// request asks for the rest and the archive comes out whole.
func TestFetchDroppedConnection(t *testing.T) {
	archive := horseZip(t)
	srv := newServer(t, map[string][]byte{"horse2zebra.zip": archive})
	srv.misbehave = func(w http.ResponseWriter, r *http.Request, body []byte, n int) bool {
		if n != 1 {
			return false
		}
		w.Header().Set("Content-Length", fmt.Sprint(len(body)))
		w.WriteHeader(http.StatusOK)
		w.Write(body[:len(body)/2])
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // drops the connection
	}
	root := t.TempDir()
	o := testOptions(t, root)
	o.BaseURL = srv.URL
	res, err := Fetch(t.Context(), horse(t), o)
	if err != nil {
		t.Fatal(err)
	}
	reqs := srv.reqs()
	if !res.Resumed || len(reqs) != 2 || !strings.HasSuffix(reqs[1], fmt.Sprintf("bytes=%d-", len(archive)/2)) {
		t.Errorf("Fetch = %+v after requests %q; want a resume from byte %d", res, reqs, len(archive)/2)
	}
	if c := res.Counts["trainA"]; c != 3 {
		t.Errorf("trainA: %d files; want 3", c)
	}
}

// TestFetchResumesEarlierRun: a partial file left by an interrupted run is continued.
func TestFetchResumesEarlierRun(t *testing.T) {
	archive := horseZip(t)
	srv := newServer(t, map[string][]byte{"horse2zebra.zip": archive})
	root := t.TempDir()
	o := testOptions(t, root)
	o.BaseURL = srv.URL
	dst := filepath.Join(root, ".downloads", "horse2zebra.zip")
	os.MkdirAll(filepath.Dir(dst), 0o755)
	if err := os.WriteFile(partName(dst, srv.URL+"/horse2zebra.zip"), archive[:1000], 0o644); err != nil {
		t.Fatal(err)
	}
	res, err := Fetch(t.Context(), horse(t), o)
	if err != nil {
		t.Fatal(err)
	}
	if reqs := srv.reqs(); !res.Resumed || len(reqs) != 1 || !strings.HasSuffix(reqs[0], "bytes=1000-") {
		t.Errorf("Fetch = %+v after %q; want one request from byte 1000", res, reqs)
	}
}

// TestFetchTruncated: a server that serves a short file as if whole. With the
// archive's size known the download is refused; without it, the unpacking is.
// Either way nothing is left as if fetched, and the bad archive is gone.
func TestFetchTruncated(t *testing.T) {
	archive := horseZip(t)
	short := archive[:len(archive)*6/10]
	srv := newServer(t, map[string][]byte{"horse2zebra.zip": short})
	for _, known := range []bool{true, false} {
		t.Run(fmt.Sprintf("size-known=%v", known), func(t *testing.T) {
			root := t.TempDir()
			o := testOptions(t, root)
			o.BaseURL = srv.URL
			d := horse(t)
			if known {
				d.Size = int64(len(archive))
			}
			_, err := Fetch(t.Context(), d, o)
			switch {
			case err == nil:
				t.Fatal("Fetch of a truncated archive succeeded")
			case known && !strings.Contains(err.Error(), fmt.Sprintf("the archive has %d", len(archive))):
				t.Errorf("Fetch = %v; want the size mismatch named", err)
			case !known && !errors.Is(err, ErrCorrupt):
				t.Errorf("Fetch = %v; want ErrCorrupt", err)
			}
			t.Logf("%v", err)
			wantNothingLeft(t, root, "horse2zebra")
			entries, _ := os.ReadDir(filepath.Join(root, ".downloads"))
			if len(entries) != 0 {
				t.Errorf(".downloads holds %d files after a bad download; want none", len(entries))
			}
		})
	}
}

// TestFetchCorrupt: a flipped byte inside a member fails the zip CRC.
func TestFetchCorrupt(t *testing.T) {
	archive := horseZip(t)
	i := bytes.Index(archive, []byte("horse2zebra/testA/n001.jpg")) + 200
	archive[i] ^= 0xff
	srv := newServer(t, map[string][]byte{"horse2zebra.zip": archive})
	root := t.TempDir()
	o := testOptions(t, root)
	o.BaseURL = srv.URL
	_, err := Fetch(t.Context(), horse(t), o)
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "run again") {
		t.Fatalf("Fetch of a corrupt zip = %v; want ErrCorrupt and what to do", err)
	}
	t.Logf("%v", err)
	wantNothingLeft(t, root, "horse2zebra")
}

// TestFetchMirror: a source that answers 404 gives way to the next.
func TestFetchMirror(t *testing.T) {
	srv := newServer(t, map[string][]byte{"mirror/horse2zebra.zip": horseZip(t)})
	root := t.TempDir()
	d := horse(t)
	d.URLs = []string{srv.URL + "/gone/horse2zebra.zip", srv.URL + "/mirror/horse2zebra.zip"}
	res, err := Fetch(t.Context(), d, testOptions(t, root))
	if err != nil {
		t.Fatal(err)
	}
	if reqs := srv.reqs(); len(reqs) != 2 || res.Counts["testB"] != 3 {
		t.Errorf("Fetch = %+v after %q; want the 404 then the mirror", res, reqs)
	}
}

// TestFetchServerErrors: 503s are retried up to the attempts, then the source fails.
func TestFetchServerErrors(t *testing.T) {
	srv := newServer(t, map[string][]byte{"horse2zebra.zip": horseZip(t)})
	srv.misbehave = func(w http.ResponseWriter, r *http.Request, body []byte, n int) bool {
		if n <= 2 {
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return true
		}
		return false
	}
	root := t.TempDir()
	o := testOptions(t, root)
	o.BaseURL = srv.URL
	if _, err := Fetch(t.Context(), horse(t), o); err != nil {
		t.Fatalf("Fetch after two 503s = %v", err)
	}
	o.Root, o.Attempts = t.TempDir(), 2
	srv.mu.Lock()
	srv.requests = nil
	srv.mu.Unlock()
	if _, err := Fetch(t.Context(), horse(t), o); err == nil || !strings.Contains(err.Error(), "503") {
		t.Errorf("Fetch with 2 attempts against two 503s = %v; want the 503 reported", err)
	}
}

func TestFetchExistingFolder(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "horse2zebra", "trainA"), 0o755)
	_, err := Fetch(t.Context(), horse(t), testOptions(t, root))
	if err == nil || !strings.Contains(err.Error(), "not fetched by crdgo") {
		t.Errorf("Fetch over a user's folder = %v; want a refusal", err)
	}
}

func TestFetchManual(t *testing.T) {
	d, _ := Lookup("cityscapes")
	_, err := Fetch(t.Context(), d, testOptions(t, t.TempDir()))
	if !errors.Is(err, ErrManual) || !strings.Contains(err.Error(), "cityscapes-dataset.com") {
		t.Errorf("Fetch(cityscapes) = %v; want ErrManual with the instructions", err)
	}
}

func TestLookup(t *testing.T) {
	for name, want := range map[string]string{"summer2winter": "summer2winter_yosemite", "edges2shoes-r": "edges2shoes", "horse2zebra": "horse2zebra"} {
		if d, ok := Lookup(name); !ok || d.Name != want {
			t.Errorf("Lookup(%q) = %q, %v; want %q", name, d.Name, ok, want)
		}
	}
	if _, ok := Lookup("imagenet"); ok {
		t.Errorf("Lookup(imagenet) found something")
	}
}

// TestUnpackRefuses: traversal, absolute paths, links, devices, duplicates and
// bombs are refused, and nothing lands outside the folder.
func TestUnpackRefuses(t *testing.T) {
	big := bytes.Repeat([]byte{0}, 1<<20) // compresses to ~1 KiB
	lim := Limits{MaxFiles: 10, MaxFileBytes: 512 << 10, MaxTotalBytes: 800 << 10}
	many := make([]entry, 11)
	for i := range many {
		many[i] = entry{name: fmt.Sprintf("f%d", i), body: []byte("x")}
	}
	for _, c := range []struct {
		name    string
		archive func(t *testing.T) []byte
	}{
		{"zip traversal", func(t *testing.T) []byte { return zipOf(t, []entry{{name: "a/../../evil", body: []byte("x")}}) }},
		{"zip absolute", func(t *testing.T) []byte { return zipOf(t, []entry{{name: "/tmp/evil", body: []byte("x")}}) }},
		{"zip backslash", func(t *testing.T) []byte { return zipOf(t, []entry{{name: "..\\evil", body: []byte("x")}}) }},
		{"zip symlink", func(t *testing.T) []byte {
			return zipOf(t, []entry{{name: "link", mode: os.ModeSymlink, link: "/etc"}, {name: "link/passwd", body: []byte("x")}})
		}},
		{"zip duplicate", func(t *testing.T) []byte {
			return zipOf(t, []entry{{name: "a", body: []byte("1")}, {name: "a", body: []byte("2")}})
		}},
		{"zip bomb file", func(t *testing.T) []byte { return zipOf(t, []entry{{name: "bomb", body: big}}) }},
		{"zip bomb total", func(t *testing.T) []byte {
			return zipOf(t, []entry{{name: "a", body: big[:420<<10]}, {name: "b", body: big[:420<<10]}})
		}},
		{"zip many", func(t *testing.T) []byte { return zipOf(t, many) }},
		{"tar traversal", func(t *testing.T) []byte { return tarGzOf(t, []entry{{name: "../evil", body: []byte("x")}}, nil) }},
		{"tar symlink", func(t *testing.T) []byte {
			return tarGzOf(t, []entry{{name: "link", link: "/etc"}}, map[string]byte{"link": tar.TypeSymlink})
		}},
		{"tar hardlink", func(t *testing.T) []byte {
			return tarGzOf(t, []entry{{name: "link", link: "/etc/passwd"}}, map[string]byte{"link": tar.TypeLink})
		}},
		{"tar device", func(t *testing.T) []byte {
			return tarGzOf(t, []entry{{name: "dev"}}, map[string]byte{"dev": tar.TypeChar})
		}},
		{"tar bomb", func(t *testing.T) []byte { return tarGzOf(t, []entry{{name: "bomb", body: big}}, nil) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			base := t.TempDir()
			dst := filepath.Join(base, "a", "b")
			os.MkdirAll(dst, 0o755)
			src := filepath.Join(base, "archive")
			os.WriteFile(src, c.archive(t), 0o644)
			err := unpack(src, dst, lim)
			if !errors.Is(err, ErrUnsafe) {
				t.Errorf("unpack = %v; want ErrUnsafe", err)
			}
			if _, err := os.Stat(filepath.Join(base, "evil")); err == nil {
				t.Errorf("a file escaped the folder")
			}
			if _, err := os.Stat(filepath.Join(base, "a", "evil")); err == nil {
				t.Errorf("a file escaped the folder")
			}
		})
	}
}

func TestParseContentRange(t *testing.T) {
	for _, c := range []struct {
		in           string
		start, total int64
		ok           bool
	}{
		{"bytes 0-9/10", 0, 10, true},
		{"bytes 5-9/*", 5, -1, true},
		{"bytes */10", 0, 10, true},
		{"bytes 5-4/10", 0, 0, false},
		{"bytes 5-10/10", 0, 0, false},
		{"bytes -1-3/10", 0, 0, false},
		{"bits 0-9/10", 0, 0, false},
		{"bytes */*", 0, 0, false},
	} {
		start, total, ok := parseContentRange(c.in)
		if ok != c.ok || ok && (start != c.start || total != c.total) {
			t.Errorf("parseContentRange(%q) = %d, %d, %v; want %d, %d, %v", c.in, start, total, ok, c.start, c.total, c.ok)
		}
	}
}

func FuzzParseContentRange(f *testing.F) {
	for _, s := range []string{"bytes 0-9/10", "bytes */10", "bytes 5-9/*", "bytes 9223372036854775807-9223372036854775807/*"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		start, total, ok := parseContentRange(s)
		if ok && (start < 0 || total < -1 || total >= 0 && start > total) {
			t.Fatalf("parseContentRange(%q) = %d, %d", s, start, total)
		}
	})
}

// FuzzUnpack: any bytes either unpack within the limits, inside the folder, or
// fail with ErrCorrupt or ErrUnsafe; never a panic or a file outside.
func FuzzUnpack(f *testing.F) {
	f.Add(zipOf(f, []entry{{name: "a/b.jpg", body: []byte("hello")}, {name: "d/", mode: os.ModeDir}}))
	f.Add(tarGzOf(f, []entry{{name: "a/b.jpg", body: []byte("hello")}}, nil))
	f.Add(zipOf(f, []entry{{name: "../x", body: []byte("x")}}))
	f.Add([]byte("PK\x03\x04garbage"))
	f.Add([]byte{0x1f, 0x8b, 8, 0})
	lim := Limits{MaxFiles: 50, MaxFileBytes: 1 << 20, MaxTotalBytes: 4 << 20}
	f.Fuzz(func(t *testing.T, b []byte) {
		base := t.TempDir()
		dst := filepath.Join(base, "out")
		os.MkdirAll(dst, 0o755)
		src := filepath.Join(base, "in")
		os.WriteFile(src, b, 0o644)
		err := unpack(src, dst, lim)
		if err != nil && !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrUnsafe) {
			t.Fatalf("unpack = %v; want ErrCorrupt or ErrUnsafe", err)
		}
		entries, _ := os.ReadDir(base)
		if len(entries) != 2 {
			t.Fatalf("unpack wrote beside its folder: %d entries in the parent", len(entries))
		}
		var total int64
		filepath.WalkDir(dst, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.Type()&os.ModeSymlink != 0 {
				t.Fatalf("unpack made a link: %s", p)
			}
			if err == nil && d.Type().IsRegular() {
				fi, _ := d.Info()
				total += fi.Size()
			}
			return nil
		})
		if total > lim.MaxTotalBytes {
			t.Fatalf("unpacked %d bytes, over the %d limit", total, lim.MaxTotalBytes)
		}
	})
}
