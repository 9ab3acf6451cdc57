package main

import (
	"strings"
	"testing"

	"go.uber.org/zap"
)

// The coordinator's flags become one validated config; mistakes name the flag.
func TestCoordinatorFlags(t *testing.T) {
	parse := func(args ...string) error {
		f := &coordinatorFlags{}
		cmd := coordinatorCmd(&globalFlags{}, f)
		if err := cmd.ParseFlags(args); err != nil {
			return err
		}
		_, err := f.config(cmd, zap.NewNop())
		return err
	}
	for _, tt := range []struct {
		args []string
		want string // "" : valid
	}{
		{[]string{"--id", "c0", "--job", "demo", "--recipe", "demo"}, ""},
		{[]string{"--id", "c0", "--job", "demo", "--join"}, ""},
		{[]string{"--id", "c0", "--job", "demo", "--peers", "c0=127.0.0.1:7000,c1=127.0.0.1:7001"}, ""},
		{[]string{"--id", "c0", "--job", "demo", "--join", "--peers", "c0=127.0.0.1:7000"}, "--join and --peers"},
		{[]string{"--id", "c9", "--job", "demo", "--peers", "c0=127.0.0.1:7000"}, "raft.peers"},
		{[]string{"--id", "c0", "--job", "demo", "--peers", "c0"}, "--peers"},
		{[]string{"--job", "demo"}, "raft.id"},
		{[]string{"--id", "c0", "--job", "no spaces"}, "coordinator.job"},
		{[]string{"--id", "c0", "--job", "demo", "--recipe", "nope"}, "--recipe"},
		{[]string{"--id", "c0", "--job", "other", "--recipe", "demo", "--min-nodes", "9"}, "spec.min_nodes"},
		{[]string{"--id", "c0", "--job", "demo", "--http-token", "a", "--http-token-file", "b"}, "give one"},
	} {
		err := parse(tt.args...)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("crdgo coordinator %s: %v; want valid", strings.Join(tt.args, " "), err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("crdgo coordinator %s: %v; want an error naming %s", strings.Join(tt.args, " "), err, tt.want)
		}
	}
}
