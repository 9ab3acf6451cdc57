package coordinator

import (
	"bytes"
	"fmt"
	"io"
	"log"
	"strings"

	"github.com/hashicorp/go-hclog"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// hclogZap routes raft's hclog.Logger into zap: raft's message stays the
// constant zap message, its key/value pairs become fields, and the levels map
// one to one (trace to debug). The level is zap's; SetLevel is ignored.
type hclogZap struct {
	z       *zap.Logger
	name    string
	implied []any
}

func newHCLog(z *zap.Logger) hclog.Logger { return &hclogZap{z: z.WithOptions(zap.AddCallerSkip(2))} }

func zapLevel(l hclog.Level) zapcore.Level {
	switch l {
	case hclog.Trace, hclog.Debug:
		return zapcore.DebugLevel
	case hclog.Warn:
		return zapcore.WarnLevel
	case hclog.Error:
		return zapcore.ErrorLevel
	}
	return zapcore.InfoLevel
}

func fields(args []any) []zap.Field {
	out := make([]zap.Field, 0, len(args)/2+1)
	for i := 0; i < len(args); i += 2 {
		if i+1 == len(args) {
			out = append(out, zap.Any("extra", args[i]))
			break
		}
		k, ok := args[i].(string)
		if !ok {
			k = fmt.Sprint(args[i])
		}
		v := args[i+1]
		if f, ok := v.(hclog.Format); ok && len(f) > 0 {
			if format, ok := f[0].(string); ok {
				v = fmt.Sprintf(format, f[1:]...)
			}
		}
		out = append(out, zap.Any(k, v))
	}
	return out
}

func (h *hclogZap) Log(level hclog.Level, msg string, args ...any) { h.log(level, msg, args) }
func (h *hclogZap) Trace(msg string, args ...any)                  { h.log(hclog.Trace, msg, args) }
func (h *hclogZap) Debug(msg string, args ...any)                  { h.log(hclog.Debug, msg, args) }
func (h *hclogZap) Info(msg string, args ...any)                   { h.log(hclog.Info, msg, args) }
func (h *hclogZap) Warn(msg string, args ...any)                   { h.log(hclog.Warn, msg, args) }
func (h *hclogZap) Error(msg string, args ...any)                  { h.log(hclog.Error, msg, args) }

func (h *hclogZap) log(level hclog.Level, msg string, args []any) {
	if ce := h.z.Check(zapLevel(level), msg); ce != nil {
		ce.Write(fields(args)...)
	}
}

func (h *hclogZap) IsTrace() bool { return h.z.Core().Enabled(zapcore.DebugLevel) }
func (h *hclogZap) IsDebug() bool { return h.z.Core().Enabled(zapcore.DebugLevel) }
func (h *hclogZap) IsInfo() bool  { return h.z.Core().Enabled(zapcore.InfoLevel) }
func (h *hclogZap) IsWarn() bool  { return h.z.Core().Enabled(zapcore.WarnLevel) }
func (h *hclogZap) IsError() bool { return h.z.Core().Enabled(zapcore.ErrorLevel) }

func (h *hclogZap) ImpliedArgs() []any { return h.implied }

func (h *hclogZap) With(args ...any) hclog.Logger {
	return &hclogZap{z: h.z.With(fields(args)...), name: h.name, implied: append(append([]any(nil), h.implied...), args...)}
}

func (h *hclogZap) Name() string { return h.name }

func (h *hclogZap) Named(name string) hclog.Logger {
	n := name
	if h.name != "" {
		n = h.name + "." + name
	}
	return &hclogZap{z: h.z.Named(name), name: n, implied: h.implied}
}

func (h *hclogZap) ResetNamed(name string) hclog.Logger {
	return &hclogZap{z: h.z.Named(name), name: name, implied: h.implied}
}

func (h *hclogZap) SetLevel(hclog.Level) {}

func (h *hclogZap) GetLevel() hclog.Level {
	switch {
	case h.IsDebug():
		return hclog.Debug
	case h.IsInfo():
		return hclog.Info
	case h.IsWarn():
		return hclog.Warn
	}
	return hclog.Error
}

func (h *hclogZap) StandardLogger(opts *hclog.StandardLoggerOptions) *log.Logger {
	return log.New(h.StandardWriter(opts), "", 0)
}

// StandardWriter logs each line written to it at info (or, when it starts with
// "[WARN]" and the like, at that level), as hclog's own does.
func (h *hclogZap) StandardWriter(*hclog.StandardLoggerOptions) io.Writer { return lineWriter{h} }

type lineWriter struct{ h *hclogZap }

func (w lineWriter) Write(p []byte) (int, error) {
	for _, line := range bytes.Split(bytes.TrimRight(p, "\n"), []byte("\n")) {
		s := string(line)
		level := hclog.Info
		for _, l := range []struct {
			prefix string
			level  hclog.Level
		}{{"[TRACE]", hclog.Trace}, {"[DEBUG]", hclog.Debug}, {"[WARN]", hclog.Warn}, {"[ERR]", hclog.Error}, {"[ERROR]", hclog.Error}, {"[INFO]", hclog.Info}} {
			if strings.HasPrefix(s, l.prefix) {
				level, s = l.level, strings.TrimSpace(strings.TrimPrefix(s, l.prefix))
				break
			}
		}
		w.h.log(level, "raft", []any{"text", s})
	}
	return len(p), nil
}
