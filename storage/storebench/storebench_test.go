package storebench_test

import (
	"bytes"
	"strings"
	"testing"

	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"

	"github.com/crdgo/crdgo/storage/miniotest"
	"github.com/crdgo/crdgo/storage/storebench"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestRun: a small run goes through every row and prints the table.
func TestRun(t *testing.T) {
	srv := miniotest.New(t)
	c := storebench.DefaultConfig()
	c.Files, c.Side, c.Runs, c.Warmup, c.Workers = 30, 16, 2, 1, 3
	c.Endpoint, c.AccessKey, c.SecretKey = srv.Endpoint(), srv.AccessKey, srv.SecretKey
	c.Dir, c.Log = t.TempDir(), zaptest.NewLogger(t)
	rep, err := storebench.Run(t.Context(), c)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Rows) != 9 {
		t.Fatalf("%d rows; want 9", len(rep.Rows))
	}
	for _, r := range rep.Rows {
		if len(r.Times) != 2 {
			t.Errorf("%s: %d times; want 2", r.Name, len(r.Times))
		}
	}
	var out bytes.Buffer
	rep.Print(&out, "test machine", "test server")
	if !strings.Contains(out.String(), "| read: crdgo cache, second epoch") || !strings.Contains(out.String(), "30 PNGs of 16×16") {
		t.Errorf("table:\n%s", out.String())
	}
	t.Logf("\n%s", out.String())
}
