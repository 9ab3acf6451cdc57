// Package fuzzmin gives the packages that hold fuzz targets a bounded default
// for the fuzzer's minimisation, so that `go test -fuzz X` explores instead of
// minimising.
//
// Go's fuzzer minimises every input that finds new coverage, for up to
// -fuzzminimizetime, 60 s by default, and a worker that minimises reports
// nothing: the progress line stays at the same count. The minimiser tries the
// removal of every byte range, O(n²) candidates for an n-byte input, and only
// the tail cuts of its first pass shrink a file whose structure sits at its end
// (a zip's central directory, a PNG's IEND): on the kilobyte seeds of the
// weights and image decoders nearly every new input took the full 60 s, and
// `go test -fuzz '^FuzzPyTorch$' -fuzztime 60s ./crd/weights` made about 12
// executions a minute, where its fuzz function takes about 30 µs.
//
// A shorter time does not cure it: the coordinator gives the worker's
// minimisation call a deadline of that same duration, the worker stops at its
// own deadline a moment later, and the coordinator kills and restarts the
// worker process every time (100 ms: 72 executions a second for FuzzExample).
// A count ends the call in the worker, which returns normally.
package fuzzmin

import (
	"flag"
	"testing"
)

// Limit is the default minimisation set by Default: at most 1000 executions of
// the fuzz function per input (tens of milliseconds for these targets).
const Limit = "1000x"

// Default sets -test.fuzzminimizetime to Limit unless the command line set it
// (pass -fuzzminimizetime 60s to minimise a crasher thoroughly). Call it from
// TestMain before m.Run.
func Default() {
	testing.Init() // registers the test flags; a no-op when they are
	if !flag.Parsed() {
		flag.Parse()
	}
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == "test.fuzzminimizetime" })
	if !set {
		if err := flag.Set("test.fuzzminimizetime", Limit); err != nil {
			panic("fuzzmin: " + err.Error()) // the testing package renamed its flag
		}
	}
}
