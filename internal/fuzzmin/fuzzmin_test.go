package fuzzmin

import (
	"flag"
	"testing"
)

// TestDefault: without -fuzzminimizetime on the command line, Default sets it to
// Limit; run with -fuzzminimizetime it keeps the given value.
func TestDefault(t *testing.T) {
	f := flag.Lookup("test.fuzzminimizetime")
	if f == nil {
		t.Fatal("the testing package has no -test.fuzzminimizetime flag")
	}
	given := false
	flag.Visit(func(v *flag.Flag) { given = given || v.Name == f.Name })
	before := f.Value.String()
	Default()
	switch got := f.Value.String(); {
	case given && got != before:
		t.Errorf("Default changed a -fuzzminimizetime given on the command line: %s → %s", before, got)
	case !given && got != Limit:
		t.Errorf("after Default, -test.fuzzminimizetime = %s; want %s", got, Limit)
	}
}
