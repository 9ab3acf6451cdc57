package main

import "fmt"

// check refuses flag values train would otherwise reinterpret.
func (f *trainFlags) check() error {
	if f.keep < 1 {
		return fmt.Errorf("--keep %d: want ≥ 1 (the newest intact checkpoint is always kept)", f.keep)
	}
	return nil
}
