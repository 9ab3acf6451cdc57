package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"

	"github.com/crdgo/crdgo/storage"
	"github.com/crdgo/crdgo/storage/miniotest"
)

// TestTrainAgainstMinIO is the storage issue's end to end, against a real
// MinIO server: a synthetic dataset pushed into a bucket, trained from with
// --data-root s3://… into --out s3://…, resumed from the store (bit for bit
// against an uninterrupted run); with the newest checkpoint's manifest
// deleted, resume takes the one before.
func TestTrainAgainstMinIO(t *testing.T) {
	srv := miniotest.New(t)
	t.Setenv("AWS_ACCESS_KEY_ID", srv.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", srv.SecretKey)
	dir := t.TempDir()
	recipe := filepath.Join(dir, "tiny.yaml")
	if err := os.WriteFile(recipe, []byte(tinyRecipeYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	local := filepath.Join(dir, "data")
	runCLI(t, "data", "synth", "--kind", "edges2shapes", "--size", "32", "--n", "16", "--n-test", "4", "--seed", "3", "--out", filepath.Join(local, "tinyshapes"))
	datasets := srv.URL("crd", "datasets")
	runCLI(t, "data", "push", filepath.Join(local, "tinyshapes"), srv.URL("crd", "datasets/tinyshapes"))

	cache := filepath.Join(dir, "cache")
	train := func(out string, steps string, extra ...string) {
		args := append([]string{"train", "--recipe", recipe, "--data-root", datasets, "--out", out, "--no-progress", "--threads", "2",
			"--max-steps", steps, "--checkpoint-every", "2", "--keep", "2", "--cache-dir", cache}, extra...)
		runCLI(t, args...)
	}
	// An uninterrupted run to step 8, and one stopped at 4 and resumed.
	straight := srv.URL("crd", "jobs/straight")
	train(straight, "8")
	job := srv.URL("crd", "jobs/tiny")
	train(job, "4")
	train(job, "8", "--resume")

	ctx := context.Background()
	open := func(url string) *storage.Objects {
		s, err := storage.Open(ctx, url, storage.DefaultOptions())
		if err != nil {
			t.Fatal(err)
		}
		return storage.NewObjects(s, "checkpoints")
	}
	a, b := open(straight), open(job)
	for _, f := range []string{"teacher_G.safetensors", "teacher_D.safetensors", "student_G.safetensors", "optim_student_G.safetensors", "state.json"} {
		x, err := a.GetObject(ctx, "step-00000008/"+f, 1<<30)
		if err != nil {
			t.Fatal(err)
		}
		y, err := b.GetObject(ctx, "step-00000008/"+f, 1<<30)
		if err != nil {
			t.Fatal(err)
		}
		if f != "state.json" && string(x) != string(y) {
			t.Errorf("step 8 %s differs between the uninterrupted run and the one resumed from MinIO", f)
		}
	}
	for _, f := range []string{"metrics.jsonl", "samples/latest.png"} {
		if _, err := storage.NewObjects(mustOpen(t, job), "").GetObject(ctx, f, 1<<30); err != nil {
			t.Errorf("the run folder in the store has no %s: %v", f, err)
		}
	}
	// Retention kept 2: steps 6 and 8. Delete step 8's manifest: resume takes 6.
	if err := b.DeleteObject(ctx, "step-00000008/manifest.json"); err != nil {
		t.Fatal(err)
	}
	train(job, "8", "--resume")
	h := sha256.Sum256([]byte(mustOpen(t, job).String()))
	work := filepath.Join(cache, "runs", hex.EncodeToString(h[:8]))
	if _, err := os.Stat(filepath.Join(work, "fetched", "step-00000006", "manifest.json")); err != nil {
		t.Errorf("resume with step 8's manifest gone did not fetch step 6: %v", err)
	}
	if _, err := os.Stat(filepath.Join(work, "fetched", "step-00000008")); err == nil {
		t.Errorf("resume fetched step 8, whose manifest is gone")
	}
	// The recipe's schedule ends at step 8: the resumed run wrote it again, whole.
	if _, err := b.GetObject(ctx, "step-00000008/manifest.json", 1<<20); err != nil {
		t.Errorf("the run resumed from step 6 wrote no new step 8: %v", err)
	}
}

func mustOpen(t *testing.T, url string) storage.Store {
	t.Helper()
	s, err := storage.Open(context.Background(), url, storage.DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	return s
}
