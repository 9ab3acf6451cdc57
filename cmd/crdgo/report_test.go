package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestAblateAndReportFlags: the commands reach their packages' checks and
// return what those say.
func TestAblateAndReportFlags(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"report", dir}, "no run folder"},
		{[]string{"report"}, "requires at least 1 arg"},
		{[]string{"ablate", "--variants", "crd,nope", "--out", dir, "--data-root", dir}, `variants: "nope"`},
		{[]string{"ablate", "--jobs", "0", "--out", dir}, "--jobs 0"},
		{[]string{"ablate", "--seeds", "0", "--out", dir, "--data-root", dir}, "seeds: 0"},
	} {
		root, _ := newRoot()
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetErr(&out)
		root.SetArgs(append([]string{"--log-level", "error"}, c.args...))
		err := root.Execute()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("crdgo %s: err = %v; want it to contain %q", strings.Join(c.args, " "), err, c.want)
		}
	}
}
