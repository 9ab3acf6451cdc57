package main

import (
	"archive/zip"
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/crdgo/crdgo/storage/miniotest"
)

func runDataCmd(t *testing.T, env map[string]string, args ...string) (string, error) {
	t.Helper()
	for k, v := range env {
		t.Setenv(k, v)
	}
	cmd := newDataCmd(&globalFlags{logFormat: "console", logLevel: "error"})
	var stdout bytes.Buffer
	cmd.SetOut(&stdout)
	cmd.SetErr(&bytes.Buffer{})
	cmd.SetArgs(args)
	cmd.SetContext(t.Context())
	err := cmd.Execute()
	return stdout.String(), err
}

// TestDataPushLs: push into a missing bucket says it made it, a second push sends
// nothing, ls lists and sums, and wrong credentials fail with a clear message.
func TestDataPushLs(t *testing.T) {
	srv := miniotest.New(t)
	dir := t.TempDir()
	for i := range 5 {
		for _, split := range []string{"trainA", "testA"} {
			os.MkdirAll(filepath.Join(dir, split), 0o755)
			os.WriteFile(filepath.Join(dir, split, fmt.Sprintf("%d.png", i)), bytes.Repeat([]byte{byte(i)}, 100*(i+1)), 0o644)
		}
	}
	os.Symlink("testA", filepath.Join(dir, "valA"))
	env := map[string]string{"AWS_ACCESS_KEY_ID": srv.AccessKey, "AWS_SECRET_ACCESS_KEY": srv.SecretKey}
	url := srv.URL("crd", "datasets/toy")
	out, err := runDataCmd(t, env, "push", dir, url)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"created bucket s3://crd", "10 files", "10 uploaded", "0 already there", "not copied: valA"} {
		if !strings.Contains(out, want) {
			t.Errorf("push output lacks %q:\n%s", want, out)
		}
	}
	out, err = runDataCmd(t, env, "push", dir, url)
	if err != nil || !strings.Contains(out, "0 uploaded") || !strings.Contains(out, "10 already there") || strings.Contains(out, "created") {
		t.Errorf("second push = %v:\n%s\nwant nothing uploaded", err, out)
	}
	out, err = runDataCmd(t, env, "ls", url)
	if err != nil || !strings.Contains(out, "500  trainA/4.png") || !strings.Contains(out, "10 objects, 2.9 KiB in s3://crd/datasets/toy") {
		t.Errorf("ls = %v:\n%s", err, out)
	}
	out, err = runDataCmd(t, env, "ls", "--summary", url)
	if err != nil || !strings.Contains(out, "5 objects    1.5 KiB  testA") {
		t.Errorf("ls --summary = %v:\n%s", err, out)
	}
	out, err = runDataCmd(t, env, "ls", "-l", url)
	if err != nil || !strings.Contains(out, "trainA/0.png") || strings.Count(out, " - ") > 0 {
		t.Errorf("ls -l = %v:\n%s\nwant every object with its hash", err, out)
	}
	start := time.Now()
	_, err = runDataCmd(t, map[string]string{"AWS_SECRET_ACCESS_KEY": "wrong-secret-123"}, "ls", url)
	if err == nil || !strings.Contains(err.Error(), "access denied") || strings.Contains(err.Error(), "wrong-secret-123") || time.Since(start) > 2*time.Second {
		t.Errorf("ls with a wrong secret = %v after %v; want access denied at once, the secret not shown", err, time.Since(start))
	}
}

// TestDataFetch: fetch from a local server in the real layout; cityscapes prints
// its instructions.
func TestDataFetch(t *testing.T) {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, split := range []string{"trainA", "trainB", "testA", "testB"} {
		w, _ := zw.Create("horse2zebra/" + split + "/1.jpg")
		w.Write([]byte("jpeg"))
	}
	zw.Close()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/horse2zebra.zip" {
			http.NotFound(w, r)
			return
		}
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(buf.Bytes()))
	}))
	defer srv.Close()
	root := t.TempDir()
	out, err := runDataCmd(t, nil, "fetch", "horse2zebra", "--root", root, "--base-url", srv.URL)
	if err != nil || !strings.Contains(out, "trainA 1, trainB 1, testA 1, testB 1 in "+filepath.Join(root, "horse2zebra")) ||
		!strings.Contains(out, "valA → testA") || !strings.Contains(out, "note: trainA: 1 files, reported 1067") {
		t.Errorf("fetch = %v:\n%s", err, out)
	}
	out, err = runDataCmd(t, nil, "fetch", "horse2zebra", "--root", root, "--base-url", srv.URL)
	if err != nil || !strings.Contains(out, "already in") {
		t.Errorf("fetch again = %v:\n%s", err, out)
	}
	out, err = runDataCmd(t, nil, "fetch", "cityscapes", "--root", root)
	if err == nil || !strings.Contains(out, "prepare_cityscapes_dataset.py") {
		t.Errorf("fetch cityscapes = %v:\n%s; want the steps and an error", err, out)
	}
	if _, err := runDataCmd(t, nil, "fetch", "imagenet"); err == nil || !strings.Contains(err.Error(), "horse2zebra") {
		t.Errorf("fetch imagenet = %v; want the known names", err)
	}
}
