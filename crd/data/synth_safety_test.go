package data

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"go.uber.org/zap/zaptest"
)

// interrupt runs Synthesize into dir and cancels it after k files, as a crash would
// stop it: the partial marker and some images are left, synth.json is not.
func interrupt(t *testing.T, dir string, cfg SynthConfig, k int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var n atomic.Int32
	err := Synthesize(ctx, dir, cfg, func() {
		if _, err := os.Stat(filepath.Join(dir, partialMarker)); err != nil {
			t.Errorf("an image was written before %s: %v", partialMarker, err)
		}
		if int(n.Add(1)) == k {
			cancel()
		}
	}, zaptest.NewLogger(t))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted Synthesize = %v; want context.Canceled", err)
	}
	if _, err := os.Stat(filepath.Join(dir, synthMarker)); err == nil {
		t.Fatalf("an interrupted generation wrote %s", synthMarker)
	}
}

// TestSynthResumesItsOwnInterruptedDataset: what an interrupted generation left is
// crdgo's (its marker says so), so running again removes it and writes the same
// dataset as an uninterrupted run.
func TestSynthResumesItsOwnInterruptedDataset(t *testing.T) {
	cfg := SynthConfig{Kind: SynthEdges2Shapes, Size: 16, N: 40, NTest: 4, Seed: 3, Workers: 1}
	want, dir := t.TempDir(), t.TempDir()
	synthesize(t, want, cfg)
	interrupt(t, dir, cfg, 7)
	synthesize(t, dir, cfg)
	if !mapsEqual(tree(t, dir), tree(t, want)) {
		t.Errorf("the dataset written after an interruption differs from an uninterrupted one")
	}
}

// TestSynthKeepsWhatItDidNotWrite: a file crdgo did not write is never removed. In a
// split folder it makes Synthesize refuse; beside the split folders it stays.
func TestSynthKeepsWhatItDidNotWrite(t *testing.T) {
	cfg := SynthConfig{Kind: SynthEdges2Shapes, Size: 16, N: 40, NTest: 4, Seed: 3, Workers: 1}
	log := zaptest.NewLogger(t)

	t.Run("user folder without a marker", func(t *testing.T) {
		dir := t.TempDir()
		mustWrite(t, filepath.Join(dir, "README.md"), "mine")
		mustWrite(t, filepath.Join(dir, "train", "0000.png"), "my own image")
		before := tree(t, dir)
		err := Synthesize(context.Background(), dir, cfg, nil, log)
		if err == nil || !strings.Contains(err.Error(), "is not empty") || !strings.Contains(err.Error(), filepath.Join(dir, "train")) {
			t.Errorf("Synthesize into a user's folder = %v; want a not-empty error naming %s", err, filepath.Join(dir, "train"))
		}
		if !mapsEqual(tree(t, dir), before) {
			t.Errorf("Synthesize changed a folder it refused")
		}
	})
	t.Run("user file beside the splits", func(t *testing.T) {
		dir := t.TempDir()
		mustWrite(t, filepath.Join(dir, "README.md"), "mine")
		synthesize(t, dir, cfg)
		if b, err := os.ReadFile(filepath.Join(dir, "README.md")); err != nil || string(b) != "mine" {
			t.Errorf("README.md = %q, %v; want it kept", b, err)
		}
	})
	t.Run("user file added after an interruption", func(t *testing.T) {
		dir := t.TempDir()
		interrupt(t, dir, cfg, 5)
		mustWrite(t, filepath.Join(dir, "train", "notes.txt"), "mine")
		err := Synthesize(context.Background(), dir, cfg, nil, log)
		if err == nil || !strings.Contains(err.Error(), "is not empty") {
			t.Errorf("Synthesize = %v; want a not-empty error", err)
		}
		got := tree(t, dir)
		if string(got["train/notes.txt"]) != "mine" || len(got) != 1 {
			t.Errorf("after the refusal the folder holds %d files; want only train/notes.txt", len(got))
		}
	})
	t.Run("marker that is not crdgo's", func(t *testing.T) {
		dir := t.TempDir()
		mustWrite(t, filepath.Join(dir, partialMarker), `{"kind": "edges2shapes", "size": 1}`)
		mustWrite(t, filepath.Join(dir, "train", "0000.png"), "my own image")
		err := Synthesize(context.Background(), dir, cfg, nil, log)
		if err == nil || !strings.Contains(err.Error(), "not a marker crdgo wrote") {
			t.Errorf("Synthesize = %v; want an error about the marker", err)
		}
		if _, err := os.Stat(filepath.Join(dir, "train", "0000.png")); err != nil {
			t.Errorf("train/0000.png: %v; want it kept", err)
		}
	})
	t.Run("a file where the folder should be", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "f")
		mustWrite(t, path, "x")
		if err := Synthesize(context.Background(), path, cfg, nil, log); err == nil || !strings.Contains(err.Error(), "is a file") {
			t.Errorf("Synthesize into a file = %v; want an error saying it is a file", err)
		}
	})
}

func mustWrite(t *testing.T, path, body string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestCheckSynthTarget: the check callers make before taking the folder's lock
// agrees with Synthesize and writes nothing.
func TestCheckSynthTarget(t *testing.T) {
	cfg := SynthConfig{Kind: SynthEdges2Shapes, Size: 16, N: 40, NTest: 4, Seed: 3, Workers: 1}
	user := t.TempDir()
	mustWrite(t, filepath.Join(user, "train", "photo.png"), "mine")
	before := tree(t, user)
	if err := CheckSynthTarget(user, cfg); err == nil || !strings.Contains(err.Error(), "is not empty (1 entries)") {
		t.Errorf("CheckSynthTarget(user folder) = %v; want a not-empty error", err)
	}
	if !mapsEqual(tree(t, user), before) {
		t.Errorf("CheckSynthTarget changed the folder")
	}
	interrupted := t.TempDir()
	interrupt(t, interrupted, cfg, 5)
	if err := CheckSynthTarget(interrupted, cfg); err != nil {
		t.Errorf("CheckSynthTarget(an interrupted generation) = %v; want nil: its files are crdgo's", err)
	}
	mustWrite(t, filepath.Join(interrupted, "val", "notes.txt"), "mine")
	if err := CheckSynthTarget(interrupted, cfg); err == nil || !strings.Contains(err.Error(), "val is not empty (1 entries)") {
		t.Errorf("CheckSynthTarget(interrupted, plus a user file) = %v; want a not-empty error counting the user's file", err)
	}
	if err := CheckSynthTarget(filepath.Join(t.TempDir(), "new"), cfg); err != nil {
		t.Errorf("CheckSynthTarget(missing folder) = %v; want nil", err)
	}
}
