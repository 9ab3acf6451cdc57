package main

import (
	"fmt"
	"os"
	"runtime/pprof"

	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// globalFlags are the flags every subcommand understands.
type globalFlags struct {
	logFormat  string
	logLevel   string
	cpuProfile string
	prof       *os.File // the running CPU profile, if any
}

func newRootCmd() *cobra.Command {
	root, _ := newRoot()
	return root
}

// stopProfile ends the CPU profile, if one runs, and closes its file. main
// calls it after the command, whether the command failed or not.
func (g *globalFlags) stopProfile() error {
	if g.prof == nil {
		return nil
	}
	pprof.StopCPUProfile()
	err := g.prof.Close()
	g.prof = nil
	if err != nil {
		return fmt.Errorf("--cpuprofile: %w", err)
	}
	return nil
}

func newRoot() (*cobra.Command, *globalFlags) {
	g := &globalFlags{}
	root := &cobra.Command{
		Use:   "crdgo",
		Short: "Distil image-to-image GANs with Content Relationship Distillation",
		Long: `crdgo distils a large image-to-image GAN generator (CycleGAN or pix2pix, the
teacher) into a student with ~40x fewer MACs using Content Relationship
Distillation (CRD), and trains it on one machine or data-parallel on a cluster.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&g.logFormat, "log-format", "console", "log format: console or json")
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	root.PersistentFlags().StringVar(&g.cpuProfile, "cpuprofile", "", "write a CPU profile of the command to this file (go tool pprof)")
	root.PersistentPreRunE = func(*cobra.Command, []string) error {
		if g.cpuProfile == "" {
			return nil
		}
		f, err := os.Create(g.cpuProfile)
		if err != nil {
			return fmt.Errorf("--cpuprofile: %w", err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			return fmt.Errorf("--cpuprofile: %w", err)
		}
		g.prof = f
		return nil
	}
	root.AddCommand(
		newVersionCmd(),
		newBenchCmd(g),
		newLossCmd(g),
		newDataCmd(g),
		newTrainCmd(g),
		newAblateCmd(g),
		newReportCmd(),
		newEvalCmd(g),
		newTranslateCmd(g),
		newModelCmd(g),
		newCoordinatorCmd(g), newNodeCmd(g), newClusterCmd(g), newNATSCmd(g),
	)
	return root, g
}

// newLogger builds the process logger from the global flags. Only main-side code
// calls it; packages receive the logger as a constructor argument.
func (g *globalFlags) newLogger() (*zap.Logger, error) {
	var lvl zapcore.Level
	if err := lvl.UnmarshalText([]byte(g.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", g.logLevel)
	}
	var cfg zap.Config
	switch g.logFormat {
	case "console":
		cfg = zap.NewDevelopmentConfig()
		cfg.DisableStacktrace = true
		cfg.EncoderConfig.EncodeLevel = zapcore.CapitalColorLevelEncoder
	case "json":
		cfg = zap.NewProductionConfig()
	default:
		return nil, fmt.Errorf("--log-format %q: want console or json", g.logFormat)
	}
	cfg.Level = zap.NewAtomicLevelAt(lvl)
	cfg.OutputPaths = []string{"stderr"}
	return cfg.Build()
}
