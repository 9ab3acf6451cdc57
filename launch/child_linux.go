//go:build linux

package launch

import (
	"os/exec"
	"syscall"
)

// childAttrs puts a child in a process group of its own, so that Ctrl-C in
// the terminal reaches only crdgo cluster up, which stops the children in
// order; and asks the kernel to SIGKILL the child when crdgo dies, however it
// dies, so that no child outlives it. (Pdeathsig fires when the thread that
// started the child exits; the Go runtime keeps its threads for the life of
// the process unless a goroutine that locked one exits, which this package
// never does.)
func childAttrs(c *exec.Cmd) {
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
