package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// TestCPUProfileOnFailure: a command that fails still leaves a complete CPU
// profile (a gzip stream, as pprof writes it) once main stops it.
func TestCPUProfileOnFailure(t *testing.T) {
	p := filepath.Join(t.TempDir(), "cpu.prof")
	root, g := newRoot()
	root.SetOut(&bytes.Buffer{})
	root.SetErr(&bytes.Buffer{})
	root.SetArgs([]string{"--cpuprofile", p, "--log-level", "error", "train", "--recipe", "no-such-recipe"})
	if err := root.Execute(); err == nil {
		t.Fatal("train --recipe no-such-recipe succeeded; want an error")
	}
	if err := g.stopProfile(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) < 2 || b[0] != 0x1f || b[1] != 0x8b {
		t.Fatalf("profile of a failed command: %d bytes, starting %x; want a gzip stream", len(b), b[:min(len(b), 2)])
	}
}
