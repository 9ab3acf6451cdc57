package launch

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Mistakes in a cluster's configuration are refused before anything starts,
// naming the flag.
func TestConfigValidate(t *testing.T) {
	ok := Config{Binary: "crdgo", Out: "runs/x", Coordinators: 3, Nodes: 2, Recipe: "demo", DataRoot: "data", MaxSteps: 10}
	for _, tt := range []struct {
		edit func(*Config)
		want string // "": valid
	}{
		{func(*Config) {}, ""},
		{func(c *Config) { c.Coordinators = 1 }, ""},
		{func(c *Config) { c.Coordinators = 2 }, "--coordinators 2"},
		{func(c *Config) { c.Nodes = 0 }, "--nodes 0"},
		{func(c *Config) { c.MaxSteps = 0 }, "--max-steps 0"},
		{func(c *Config) { c.Job = "a b" }, "--job"},
		{func(c *Config) { c.Out = "" }, "--out"},
		{func(c *Config) { c.Recipe, c.DataRoot = "", "" }, "--data-root"},
		{func(c *Config) { c.CheckpointEvery = -1 }, "--checkpoint-every -1"},
		{func(c *Config) { c.Batch = -2 }, "--batch -2"},
	} {
		c := ok
		tt.edit(&c)
		err := c.Validate()
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%+v: %v; want valid", c, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%+v: %v; want an error naming %s", c, err, tt.want)
		}
	}
}

func TestJobName(t *testing.T) {
	for in, want := range map[string]string{
		"demo": "demo", "recipes/my recipe.yaml": "my_recipe", "horse2zebra": "horse2zebra", ".yaml": "job",
	} {
		if got := JobName(in); got != want {
			t.Errorf("JobName(%q) = %q; want %q", in, got, want)
		}
	}
}

// A run folder that holds an earlier run's checkpoints or raft state is
// refused; one with only other files is not.
func TestFreshOut(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := freshOut(dir); err != nil {
		t.Errorf("freshOut(a folder with a note) = %v; want nil", err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "coordinators", "c0"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := freshOut(dir); err == nil || !strings.Contains(err.Error(), "coordinators/") {
		t.Errorf("freshOut(a folder with raft state) = %v; want refused naming coordinators/", err)
	}
}
