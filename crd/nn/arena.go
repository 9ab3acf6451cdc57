package nn

import "github.com/crdgo/crdgo/crd/tensor"

// Arena hands out tensors for one step and takes them all back at Reset. A
// training step requests the same sequence of sizes every time, so after the
// first step every request is served from the free lists: memory stays flat.
type Arena struct {
	be   tensor.Backend
	free map[int][]*tensor.Tensor // by number of elements
	used []*tensor.Tensor
	news int // tensors allocated from the backend so far
}

// NewArena returns an empty arena allocating from be.
func NewArena(be tensor.Backend) *Arena {
	return &Arena{be: be, free: map[int][]*tensor.Tensor{}}
}

// Get returns a tensor of the given shape whose contents are undefined.
func (a *Arena) Get(shape tensor.Shape) *tensor.Tensor {
	n := shape.Numel()
	var t *tensor.Tensor
	if l := a.free[n]; len(l) > 0 {
		t = l[len(l)-1]
		l[len(l)-1] = nil
		a.free[n] = l[:len(l)-1]
		t.Shape = append(t.Shape[:0], shape...)
	} else {
		t = a.be.New(shape)
		a.news++
	}
	a.used = append(a.used, t)
	return t
}

// Zeros returns a zeroed tensor of the given shape.
func (a *Arena) Zeros(shape tensor.Shape) *tensor.Tensor {
	t := a.Get(shape)
	a.be.Fill(t, 0)
	return t
}

// Reset returns every tensor handed out since the last Reset.
func (a *Arena) Reset() {
	for i, t := range a.used {
		n := t.Numel()
		a.free[n] = append(a.free[n], t)
		a.used[i] = nil
	}
	a.used = a.used[:0]
}

// Bytes is the size of all tensors the arena owns (handed out or free).
func (a *Arena) Bytes() int64 {
	var n int64
	for _, t := range a.used {
		n += int64(t.Numel()) * 4
	}
	for _, l := range a.free {
		for _, t := range l {
			n += int64(t.Numel()) * 4
		}
	}
	return n
}

// Allocations is the number of tensors the arena has allocated from its
// backend; in a steady-state training loop it stops growing after the first step.
func (a *Arena) Allocations() int { return a.news }
