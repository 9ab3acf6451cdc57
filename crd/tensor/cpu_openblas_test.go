//go:build cgo && !noopenblas

package tensor_test

import (
	"testing"

	"github.com/crdgo/crdgo/crd/tensor"
	"github.com/crdgo/crdgo/crd/tensor/tensortest"
)

func TestCPUOpenBLAS(t *testing.T) { tensortest.RunBackend(t, tensor.NewCPU(tensor.OpenBLAS, 0)) }
