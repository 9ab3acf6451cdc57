package tensor

import "fmt"

// BroadcastShape is the NumPy broadcast of a and b (trailing dimensions aligned,
// each pair equal or one of them 1). ok is false when they do not broadcast.
func BroadcastShape(a, b Shape) (Shape, bool) {
	r := max(len(a), len(b))
	out := make(Shape, r)
	for i := 0; i < r; i++ {
		da, db := 1, 1
		if j := len(a) - r + i; j >= 0 {
			da = a[j]
		}
		if j := len(b) - r + i; j >= 0 {
			db = b[j]
		}
		switch {
		case da == db, db == 1:
			out[i] = da
		case da == 1:
			out[i] = db
		default:
			return nil, false
		}
	}
	return out, true
}

// bcastPlan iterates over a contiguous output of shape out together with
// operands that broadcast to it. Adjacent dimensions that every operand treats
// alike are merged, so the innermost loop is as long as possible.
type bcastPlan struct {
	dims []int   // merged output dimensions
	st   [][]int // st[k][d]: element stride of operand k along dims[d] (0 = broadcast)
}

func newBcastPlan(op string, out Shape, ins ...Shape) bcastPlan {
	r := len(out)
	st := make([][]int, len(ins))
	for k, in := range ins {
		if len(in) > r {
			panic(fmt.Sprintf("tensor: %s: operand %v has more dimensions than %v", op, in, out))
		}
		s := make([]int, r)
		acc := 1
		for d := r - 1; d >= 0; d-- {
			j := len(in) - r + d
			dim := 1
			if j >= 0 {
				dim = in[j]
			}
			switch {
			case dim == out[d]:
				s[d] = acc
				if dim == 1 {
					s[d] = 0
				}
			case dim == 1:
				s[d] = 0
			default:
				panic(fmt.Sprintf("tensor: %s: %v does not broadcast to %v", op, in, out))
			}
			acc *= dim
		}
		st[k] = s
	}
	// Drop size-1 output dimensions, then merge d into d+1 when, for every
	// operand, stride[d] == stride[d+1]·dims[d+1] (both 0 counts too).
	var dims []int
	mst := make([][]int, len(ins))
	for d := 0; d < r; d++ {
		if out[d] == 1 {
			continue
		}
		dims = append(dims, out[d])
		for k := range ins {
			mst[k] = append(mst[k], st[k][d])
		}
	}
	if len(dims) == 0 {
		dims = []int{1}
		for k := range ins {
			mst[k] = []int{0}
		}
	}
	for d := len(dims) - 2; d >= 0; d-- {
		ok := true
		for k := range ins {
			if mst[k][d] != mst[k][d+1]*dims[d+1] {
				ok = false
				break
			}
		}
		if !ok {
			continue
		}
		dims[d] *= dims[d+1]
		dims = append(dims[:d+1], dims[d+2:]...)
		for k := range ins {
			mst[k][d] = mst[k][d+1]
			mst[k] = append(mst[k][:d+1], mst[k][d+2:]...)
		}
	}
	return bcastPlan{dims: dims, st: mst}
}

// inner is the length of the innermost loop, rows the number of inner loops.
func (p bcastPlan) inner() int { return p.dims[len(p.dims)-1] }
func (p bcastPlan) rows() int {
	r := 1
	for _, d := range p.dims[:len(p.dims)-1] {
		r *= d
	}
	return r
}

// rowOffsets writes into offs the starting element offset of every operand for
// inner loop number row.
func (p bcastPlan) rowOffsets(row int, offs []int) {
	clear(offs)
	for d := len(p.dims) - 2; d >= 0; d-- {
		i := row % p.dims[d]
		row /= p.dims[d]
		for k := range offs {
			offs[k] += i * p.st[k][d]
		}
	}
}

// innerStride is operand k's stride along the innermost loop.
func (p bcastPlan) innerStride(k int) int { return p.st[k][len(p.dims)-1] }
