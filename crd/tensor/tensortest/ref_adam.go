package tensortest

import (
	"fmt"
	"math"

	"github.com/crdgo/crdgo/crd/tensor"
)

// RefAdam is one step of torch.optim.Adam (amsgrad=False, maximize=False) on
// arrays of equal length, returning the new parameters and moments:
//
//	g  = grad + WeightDecay·param          (L2 penalty, not AdamW)
//	m' = β1·m + (1−β1)·g
//	v' = β2·v + (1−β2)·g²
//	param' = param − LR/(1−β1^Step) · m' / (√v' / √(1−β2^Step) + Eps)
//
// Step counts from 1.
func RefAdam(param, grad, m, v Array, p tensor.AdamParams) (newParam, newM, newV Array) {
	n := len(param.Data)
	if len(grad.Data) != n || len(m.Data) != n || len(v.Data) != n || p.Step < 1 {
		panic(fmt.Sprintf("tensortest: RefAdam: lengths %d, %d, %d, %d, step %d", n, len(grad.Data), len(m.Data), len(v.Data), p.Step))
	}
	lr, b1, b2, eps, wd := float64(p.LR), float64(p.Beta1), float64(p.Beta2), float64(p.Eps), float64(p.WeightDecay)
	bc1 := 1 - math.Pow(b1, float64(p.Step))
	bc2 := 1 - math.Pow(b2, float64(p.Step))
	newParam, newM, newV = param.Clone(), m.Clone(), v.Clone()
	for i := range newParam.Data {
		g := grad.Data[i] + wd*param.Data[i]
		newM.Data[i] = b1*m.Data[i] + (1-b1)*g
		newV.Data[i] = b2*v.Data[i] + (1-b2)*g*g
		newParam.Data[i] = param.Data[i] - lr/bc1*newM.Data[i]/(math.Sqrt(newV.Data[i])/math.Sqrt(bc2)+eps)
	}
	return newParam, newM, newV
}
