// Command crdgo distils large image-to-image GANs into small ones with Content
// Relationship Distillation and trains them, on one machine or on a cluster.
package main

import (
	"fmt"
	"os"
)

func main() {
	if err := newRootCmd().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "crdgo:", err)
		os.Exit(1)
	}
}
