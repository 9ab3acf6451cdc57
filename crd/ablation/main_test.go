package ablation

import (
	"testing"

	"go.uber.org/goleak"
)

// Execute starts a goroutine per job; none may outlive it.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
