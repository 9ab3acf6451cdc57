package storage

import (
	"strings"
	"testing"
)

func TestParseCacheName(t *testing.T) {
	id, sha := strings.Repeat("ab", 20), strings.Repeat("0f", 32)
	if gotID, gotSHA, ok := parseCacheName(id + "-" + sha); !ok || gotID != id || gotSHA != sha {
		t.Errorf("parseCacheName(valid) = %q, %q, %v", gotID, gotSHA, ok)
	}
	for _, bad := range []string{"", "-", id, id + "-", id + "-" + sha[1:], "AB" + id[2:] + "-" + sha, id + "x-" + sha, id + "-" + sha + "-x", "fetch-123"} {
		if _, _, ok := parseCacheName(bad); ok {
			t.Errorf("parseCacheName(%q) accepted", bad)
		}
	}
}

// FuzzParseCacheName: what parses names an entry of the right shape, and the
// name it would be written under is the one parsed.
func FuzzParseCacheName(f *testing.F) {
	f.Add(strings.Repeat("ab", 20) + "-" + strings.Repeat("0f", 32))
	f.Add("fetch-1234")
	f.Fuzz(func(t *testing.T, name string) {
		id, sha, ok := parseCacheName(name)
		if !ok {
			return
		}
		if len(id) != 40 || !isHexSHA256(sha) || id+"-"+sha != name {
			t.Fatalf("parseCacheName(%q) = %q, %q", name, id, sha)
		}
	})
}
