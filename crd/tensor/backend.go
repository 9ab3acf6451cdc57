package tensor

// Backend owns tensor memory and the kernels that compute on it. The CPU backend
// (NewCPU) implements it for host memory; a device backend implements the same
// methods on device memory. Ops in package nn call only these methods, so a new
// backend needs no change to layers or models. Package tensortest is the shared
// conformance suite every Backend must pass.
//
// Conventions shared by all kernels:
//   - Output tensors are allocated by the caller with the right shape; a kernel
//     panics with the op name and the shapes when they do not fit (a bug, never
//     outside input).
//   - Forward kernels overwrite their outputs. Backward kernels ADD into the input
//     gradients they are given (dx += …), because one tensor may feed several ops.
//     Kernels with several gradient outputs (Conv2DBackward, InstanceNormBackward,
//     BinaryBackward, …) skip the work of a nil one ("not wanted"); kernels with
//     one gradient output require it.
//   - Tensors passed to one call do not overlap, except where a kernel says so.
//   - Images are NCHW; per-channel vectors (bias, γ, β) have shape (C).
type Backend interface {
	// Name identifies the backend and its GEMM, e.g. "cpu/openblas".
	Name() string

	// New returns a zeroed tensor of the given shape.
	New(shape Shape) *Tensor
	// View returns a tensor sharing n = shape.Numel() elements of t's storage
	// starting at element offset.
	View(t *Tensor, offset int, shape Shape) *Tensor
	// Upload copies host data into t (len(src) == t.Numel()).
	Upload(t *Tensor, src []float32)
	// Download copies t into host memory (len(dst) == t.Numel()).
	Download(dst []float32, t *Tensor)
	// Copy sets dst = src (same number of elements).
	Copy(dst, src *Tensor)
	// Fill sets every element of t to v.
	Fill(t *Tensor, v float32)

	// MatMul computes c = alpha·op(a)·op(b) + beta·c for 2-D (m×k)·(k×n) operands,
	// or batched over the leading dimension of 3-D operands; op transposes when
	// the flag is set.
	MatMul(c, a, b *Tensor, transA, transB bool, alpha, beta float32)

	// Conv2D computes y = conv(x, w) + b, x (N,Cin,H,W), w (Cout,Cin/groups,kh,kw),
	// b (Cout) or nil, y (N,Cout,OH,OW).
	Conv2D(y, x, w, b *Tensor, p ConvParams)
	// Conv2DBackward adds ∂/∂x, ∂/∂w, ∂/∂b of ⟨dy, y⟩ into dx, dw, db (each may be nil).
	Conv2DBackward(dx, dw, db, dy, x, w *Tensor, p ConvParams)
	// ConvTranspose2D computes the transposed convolution, w (Cin,Cout/groups,kh,kw)
	// as PyTorch stores it, y (N,Cout,OH,OW) with OH = (H−1)·s − 2p + d(k−1) + op + 1.
	ConvTranspose2D(y, x, w, b *Tensor, p ConvParams)
	// ConvTranspose2DBackward adds the gradients of ConvTranspose2D.
	ConvTranspose2DBackward(dx, dw, db, dy, x, w *Tensor, p ConvParams)

	// InstanceNorm normalises every (n,c) plane of x over H×W with biased variance:
	// y = act(γ_c·(x − mean)·rstd + β_c), γ and β optional (nil: 1 and 0).
	// mean and rstd (N·C) receive the statistics for the backward pass.
	InstanceNorm(y, mean, rstd, x, gamma, beta *Tensor, eps float32, act Activation)
	// InstanceNormBackward adds the gradients; y is the forward output (for act).
	InstanceNormBackward(dx, dgamma, dbeta, dy, x, y, mean, rstd, gamma *Tensor, act Activation)

	// ChannelSums computes, per channel c of x (N,C,H,W),
	// s1[c] = Σ (x − shift_c) and s2[c] = Σ (x − shift_c)², accumulated in float64;
	// shift nil means 0; s2 may be nil. Batch norm builds its statistics from these
	// so that data-parallel ranks can sum them (synchronised batch norm).
	ChannelSums(s1, s2, x, shift *Tensor)
	// BatchNormApply sets y = act(γ_c·(x − mean_c)·rstd_c + β_c).
	BatchNormApply(y, x, mean, rstd, gamma, beta *Tensor, act Activation)
	// BatchNormBackwardSums computes, per channel, sdy[c] = Σ g and sdyx[c] = Σ g·x̂
	// where g = dy·act′(y) and x̂ = (x − mean)·rstd.
	BatchNormBackwardSums(sdy, sdyx, dy, x, y, mean, rstd *Tensor, act Activation)
	// BatchNormBackward adds dx += γ·rstd·(g − sdy/count − x̂·sdyx/count); with
	// count 0 (evaluation statistics) it adds γ·rstd·g.
	BatchNormBackward(dx, dy, x, y, mean, rstd, gamma, sdy, sdyx *Tensor, count float32, act Activation)

	// Pad2D pads the last two dimensions of x into y.
	Pad2D(y, x *Tensor, p Padding)
	// Pad2DBackward adds the gradient of Pad2D into dx.
	Pad2DBackward(dx, dy *Tensor, p Padding)

	// Unary sets y = f(x) elementwise (y may be x).
	Unary(op UnaryOp, y, x *Tensor)
	// UnaryBackward adds dx += dy·f′ evaluated from x or y (whichever the op needs).
	UnaryBackward(op UnaryOp, dx, dy, x, y *Tensor)
	// Binary sets y = a ∘ b with NumPy broadcasting (trailing dimensions aligned);
	// y has the broadcast shape and may be a or b when that one has it.
	Binary(op BinaryOp, y, a, b *Tensor)
	// BinaryBackward adds the gradients of Binary into da and db (each may be nil),
	// summing over broadcast dimensions.
	BinaryBackward(op BinaryOp, da, db, dy, a, b *Tensor)
	// ReduceSum sets (or, with accumulate, adds to) y = alpha·Σ x over every
	// dimension where y is 1 and x is not; y has x's rank, or fewer dimensions
	// aligned to the right as in broadcasting. Summation is in float64.
	ReduceSum(y, x *Tensor, alpha float32, accumulate bool)
	// BroadcastAdd adds dst += alpha·src broadcast to dst's shape.
	BroadcastAdd(dst, src *Tensor, alpha float32)

	// CopyAxis copies the slab [srcStart, srcStart+n) of src along axis into
	// [dstStart, dstStart+n) of dst (adding with accumulate). dst and src agree on
	// every other dimension. Slice, concatenation and their gradients use it.
	CopyAxis(dst, src *Tensor, axis, dstStart, srcStart, n int, accumulate bool)
	// Permute sets (or adds to) y = x with dimensions reordered: y.Shape[i] = x.Shape[perm[i]].
	Permute(y, x *Tensor, perm []int, accumulate bool)

	// MaxPool2D and AvgPool2D pool the last two dimensions; their backward kernels
	// add into dx. MaxPool's gradient goes to the first maximum of each window.
	MaxPool2D(y, x *Tensor, p PoolParams)
	MaxPool2DBackward(dx, dy, x *Tensor, p PoolParams)
	AvgPool2D(y, x *Tensor, p PoolParams)
	AvgPool2DBackward(dx, dy *Tensor, p PoolParams)
	// AdaptiveAvgPool2D averages x into y's spatial size with PyTorch's bin edges.
	AdaptiveAvgPool2D(y, x *Tensor)
	AdaptiveAvgPool2DBackward(dx, dy *Tensor)
	// ResizeBilinear resizes the last two dimensions of x to y's (PyTorch's
	// interpolate(mode="bilinear") semantics for the given alignCorners).
	ResizeBilinear(y, x *Tensor, alignCorners bool)
	ResizeBilinearBackward(dx, dy *Tensor, alignCorners bool)

	// Adam applies one Adam step to param from grad, updating the moments m and v
	// (all of the same size, usually whole flat parameter buffers).
	Adam(param, grad, m, v *Tensor, p AdamParams)
}

// ConvParams are a convolution's hyper-parameters. Zero strides or dilations mean 1,
// zero Groups means 1. OutPad is the output_padding of a transposed convolution.
type ConvParams struct {
	StrideH, StrideW     int
	PadH, PadW           int
	DilationH, DilationW int
	Groups               int
	OutPadH, OutPadW     int
}

// Norm returns p with zero fields replaced by their defaults.
func (p ConvParams) Norm() ConvParams {
	if p.StrideH == 0 {
		p.StrideH = 1
	}
	if p.StrideW == 0 {
		p.StrideW = 1
	}
	if p.DilationH == 0 {
		p.DilationH = 1
	}
	if p.DilationW == 0 {
		p.DilationW = 1
	}
	if p.Groups == 0 {
		p.Groups = 1
	}
	return p
}

// ConvOut is the output size of a convolution along one axis.
func ConvOut(in, k, stride, pad, dil int) int {
	return (in+2*pad-dil*(k-1)-1)/stride + 1
}

// ConvTransposeOut is the output size of a transposed convolution along one axis.
func ConvTransposeOut(in, k, stride, pad, dil, outPad int) int {
	return (in-1)*stride - 2*pad + dil*(k-1) + outPad + 1
}

// ActKind is an activation fused into a norm kernel.
type ActKind int

const (
	ActNone ActKind = iota
	ActReLU
	ActLeakyReLU
)

// Activation is a fused activation: none, ReLU, or LeakyReLU with Slope (> 0).
type Activation struct {
	Kind  ActKind
	Slope float32
}

// PadMode is how Pad2D fills the border.
type PadMode int

const (
	PadZero PadMode = iota
	PadReflect
)

// Padding is a 2-D padding of the last two dimensions.
type Padding struct {
	Top, Bottom, Left, Right int
	Mode                     PadMode
}

// PoolParams are a 2-D pooling window. Zero stride means the kernel size.
// CountIncludePad applies to average pooling only.
type PoolParams struct {
	KH, KW           int
	StrideH, StrideW int
	PadH, PadW       int
	CountIncludePad  bool
}

// Norm returns p with zero strides replaced by the kernel size.
func (p PoolParams) Norm() PoolParams {
	if p.StrideH == 0 {
		p.StrideH = p.KH
	}
	if p.StrideW == 0 {
		p.StrideW = p.KW
	}
	return p
}

// UnaryKind names an elementwise function.
type UnaryKind int

const (
	UReLU      UnaryKind = iota // max(x, 0)
	ULeakyReLU                  // x if x > 0 else A·x
	UTanh
	USigmoid
	USqrt
	UAbs
	USquare
	UClamp    // min(max(x, A), B); gradient passes where A ≤ x ≤ B
	UAffine   // A·x + B
	USmoothL1 // z²/(2A) if |z| < A else |z| − A/2 (A = β > 0)
	USoftplus // log(1 + eˣ), numerically stable
	UExp
	ULog
)

// UnaryOp is an elementwise function with its parameters.
type UnaryOp struct {
	Kind UnaryKind
	A, B float32
}

// BinaryOp names an elementwise binary operation.
type BinaryOp int

const (
	BAdd BinaryOp = iota
	BSub
	BMul
	BDiv
)

// AdamParams are one Adam step's hyper-parameters. Step counts from 1 and sets the
// bias corrections 1 − β1^Step and 1 − β2^Step.
type AdamParams struct {
	LR, Beta1, Beta2, Eps float32
	WeightDecay           float32
	Step                  int
}
