package main

import "github.com/spf13/cobra"

// newBenchCmd groups the side-by-side benchmarks. Each subcommand prints its table
// with the machine it ran on, so numbers can go into README or docs/ as printed.
func newBenchCmd(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Benchmarks that print crdgo beside its baseline (PyTorch, raw TCP) in one run",
	}
	cmd.AddCommand(
		newBenchEngineCmd(g),
		newBenchAllreduceCmd(g),
		newBenchStepCmd(g),
		newBenchDataParallelCmd(g),
		newBenchStorageCmd(g),
	)
	return cmd
}
