package main

import (
	"strings"
	"testing"

	"go.uber.org/zap"
)

// The node's flags become one validated config; mistakes name the flag.
func TestNodeFlags(t *testing.T) {
	parse := func(args ...string) error {
		f := &nodeFlags{}
		cmd := nodeCmd(&globalFlags{}, f)
		if err := cmd.ParseFlags(args); err != nil {
			return err
		}
		_, err := f.config(cmd, zap.NewNop())
		return err
	}
	for _, tt := range []struct {
		args []string
		want string // "": valid
	}{
		{[]string{"--job", "demo", "--id", "n0"}, ""},
		{[]string{"--job", "demo", "--id", "n0", "--metrics-addr", "", "--lanes", "2"}, ""},
		{[]string{"--id", "n0"}, "--job"},
		{[]string{"--job", "demo"}, "--id"},
		{[]string{"--job", "demo", "--id", "n 0"}, "node.id"},
		{[]string{"--job", "demo", "--id", "n0", "--recipe", "nope"}, "--recipe"},
		{[]string{"--job", "demo", "--id", "n0", "--data-root", "s3://b/datasets"}, "--data-root"},
		{[]string{"--job", "demo", "--id", "n0", "--lanes", "0"}, "--lanes"},
		{[]string{"--job", "demo", "--id", "n0", "--keep", "0"}, "--keep"},
		{[]string{"--job", "demo", "--id", "n0", "--threads", "-1"}, "--threads"},
		{[]string{"--job", "demo", "--id", "n0", "--nats-user", "u"}, "nats.user and nats.password"},
	} {
		err := parse(tt.args...)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("crdgo node %s: %v; want valid", strings.Join(tt.args, " "), err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("crdgo node %s: %v; want an error naming %s", strings.Join(tt.args, " "), err, tt.want)
		}
	}
}
