package bench

import (
	"strings"
	"testing"
)

func TestParseConfigs(t *testing.T) {
	got, err := ParseConfigs("64x1, 128x4")
	if err != nil || len(got) != 2 || got[0] != (Config{"64×64 b1", 64, 1}) || got[1] != (Config{"128×128 b4", 128, 4}) {
		t.Fatalf("ParseConfigs(64x1, 128x4) = %v, %v", got, err)
	}
	for _, bad := range []string{"64", "64x0", "63x1", "64x1x2", "x4", "2048x1", "64x65", "64x1junk"} {
		if _, err := ParseConfigs(bad); err == nil || !strings.Contains(err.Error(), "--configs") {
			t.Errorf("ParseConfigs(%q) = %v; want an error naming --configs", bad, err)
		}
	}
}
