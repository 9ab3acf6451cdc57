package tensor

// CPUKind selects the GEMM under the CPU backend.
type CPUKind string

const (
	// PureGo uses gonum's pure-Go SGEMM: always built, also with CGO_ENABLED=0.
	PureGo CPUKind = "purego"
	// OpenBLAS calls cblas_sgemm from Debian's libopenblas through cgo.
	OpenBLAS CPUKind = "openblas"
)

// CPUKinds lists the CPU backends compiled into this binary.
func CPUKinds() []CPUKind {
	if haveOpenBLAS {
		return []CPUKind{OpenBLAS, PureGo}
	}
	return []CPUKind{PureGo}
}

// DefaultCPUKind is the fastest CPU backend compiled in.
func DefaultCPUKind() CPUKind { return CPUKinds()[0] }
