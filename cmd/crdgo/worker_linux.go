//go:build linux

package main

import (
	"os/exec"
	"syscall"
)

// dieWithParent asks the kernel to SIGKILL c's process when crdgo dies, however
// it dies (a SIGKILL included), so that no worker outlives its parent.
// Pdeathsig fires when the thread that started the child exits; the Go runtime
// keeps its threads for the life of the process unless a goroutine that locked
// one exits, which crdgo never does around a Start.
func dieWithParent(c *exec.Cmd) {
	if c.SysProcAttr == nil {
		c.SysProcAttr = &syscall.SysProcAttr{}
	}
	c.SysProcAttr.Pdeathsig = syscall.SIGKILL
}
