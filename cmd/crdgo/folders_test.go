package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/crdgo/crdgo/runlock"
)

// runCLIErr runs crdgo in process and returns its error.
func runCLIErr(t *testing.T, args ...string) error {
	t.Helper()
	root := newRootCmd()
	root.SetOut(&bytes.Buffer{})
	root.SetErr(&bytes.Buffer{})
	root.SetArgs(append([]string{"--log-level", "error"}, args...))
	return root.Execute()
}

// TestWritersAreTurnedAway: train and data synth refuse a folder another process
// holds, naming it (issue 19, defect 3); nothing is written there.
func TestWritersAreTurnedAway(t *testing.T) {
	dir := t.TempDir()
	recipe := filepath.Join(dir, "tiny.yaml")
	if err := os.WriteFile(recipe, []byte(tinyRecipeYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	host, _ := os.Hostname()
	pid := "pid " + strconv.Itoa(os.Getpid())
	for _, tc := range []struct {
		name   string
		locked string
		args   []string
	}{
		{"train", filepath.Join(dir, "run"), []string{"train", "--recipe", recipe, "--data-root", filepath.Join(dir, "data"), "--out", filepath.Join(dir, "run"), "--no-progress"}},
		{"train's dataset", filepath.Join(dir, "data", "tinyshapes"), []string{"train", "--recipe", recipe, "--data-root", filepath.Join(dir, "data"), "--out", filepath.Join(dir, "run2"), "--no-progress"}},
		{"data synth", filepath.Join(dir, "synth"), []string{"data", "synth", "--kind", "edges2shapes", "--size", "16", "--n", "4", "--out", filepath.Join(dir, "synth")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := runlock.Acquire(tc.locked)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Release()
			err = runCLIErr(t, tc.args...)
			if err == nil || !strings.Contains(err.Error(), pid) || !strings.Contains(err.Error(), host) || !strings.Contains(err.Error(), tc.locked) {
				t.Fatalf("crdgo %s while %s is held = %v; want an error naming the folder, %s and host %s", tc.name, tc.locked, err, pid, host)
			}
			ents, _ := os.ReadDir(tc.locked)
			if len(ents) != 1 || ents[0].Name() != runlock.LockFile {
				t.Errorf("%s holds %d entries after the refusal; want only %s", tc.locked, len(ents), runlock.LockFile)
			}
		})
	}
}

func TestTrainRefusesKeepZero(t *testing.T) {
	err := runCLIErr(t, "train", "--keep", "0", "--out", t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "--keep 0") {
		t.Errorf("train --keep 0 = %v; want an error naming --keep", err)
	}
}

func TestEvalRefusesNegativeMaxImages(t *testing.T) {
	err := runCLIErr(t, "eval", "--checkpoint", t.TempDir(), "--max-images", "-1")
	if err == nil || !strings.Contains(err.Error(), "--max-images -1") {
		t.Errorf("eval --max-images -1 = %v; want an error naming --max-images", err)
	}
}
