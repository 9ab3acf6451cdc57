// Command crdgo distils large image-to-image GANs into small ones with Content
// Relationship Distillation and trains them, on one machine or on a cluster.
package main

import (
	"fmt"
	"os"
)

func main() {
	root, g := newRoot()
	err := root.Execute()
	if perr := g.stopProfile(); err == nil { // a failed command's profile is written too
		err = perr
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "crdgo:", err)
		os.Exit(1)
	}
}
