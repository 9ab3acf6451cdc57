//go:build !linux

package main

import "os/exec"

// dieWithParent does nothing where there is no Pdeathsig: workers are stopped
// through their context (SIGTERM, then SIGKILL) when crdgo ends normally or on
// SIGINT/SIGTERM, but not when crdgo itself is killed.
func dieWithParent(*exec.Cmd) {}
