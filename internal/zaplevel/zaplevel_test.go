package zaplevel

import (
	"bytes"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

func TestAtLeast(t *testing.T) {
	for _, c := range []struct {
		core, raise zapcore.Level
		warnShown   bool
	}{
		{zapcore.DebugLevel, zapcore.WarnLevel, true},
		{zapcore.InfoLevel, zapcore.ErrorLevel, false},
		{zapcore.ErrorLevel, zapcore.WarnLevel, false}, // already higher: unchanged, no complaint
		{zapcore.WarnLevel, zapcore.WarnLevel, true},
	} {
		var out, errOut bytes.Buffer
		core := zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(&out), c.core)
		log := zap.New(core, zap.ErrorOutput(zapcore.AddSync(&errOut)))
		q := AtLeast(log, c.raise)
		q.Info("info")
		q.Warn("warn")
		if errOut.Len() != 0 {
			t.Errorf("core %v, raise to %v: zap complained: %s", c.core, c.raise, errOut.String())
		}
		if got := bytes.Contains(out.Bytes(), []byte(`"info"`)); got {
			t.Errorf("core %v, raise to %v: info logged", c.core, c.raise)
		}
		if got := bytes.Contains(out.Bytes(), []byte(`"warn"`)); got != c.warnShown {
			t.Errorf("core %v, raise to %v: warn logged %v; want %v", c.core, c.raise, got, c.warnShown)
		}
	}
}
