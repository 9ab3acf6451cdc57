//go:build !linux

package launch

import "os/exec"

// childAttrs: outside Linux there is no parent-death signal; the children
// stop when crdgo stops them.
func childAttrs(c *exec.Cmd) {}
