// Package zaplevel raises a zap logger's level without complaint when it is
// already as high: zap.IncreaseLevel prints "failed to IncreaseLevel" to the
// logger's error output when asked for a level the core already drops (a
// command run with --log-level error that quiets a part to warn).
package zaplevel

import (
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// AtLeast returns log dropping every entry below lvl: log itself when its core
// already drops them.
func AtLeast(log *zap.Logger, lvl zapcore.Level) *zap.Logger {
	for l := zapcore.DebugLevel; l < lvl; l++ {
		if log.Core().Enabled(l) {
			return log.WithOptions(zap.IncreaseLevel(lvl))
		}
	}
	return log
}
