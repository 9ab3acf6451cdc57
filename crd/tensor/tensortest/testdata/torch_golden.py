#!/usr/bin/python3
"""Writes torch_golden.json: PyTorch's own outputs (float64) for the ops that
package tensortest's Ref* functions define, so that TestRefsMatchPyTorch holds
the references to PyTorch semantics. The oracle is PyTorch, never crdgo.

Regenerate (Debian's python3-torch, 1.13) from this directory:

    /usr/bin/python3 torch_golden.py > torch_golden.json

Every case names its op and parameters as the Go test reads them; shapes and
values are small so the file stays reviewable.
"""
import json
import sys

import torch
import torch.nn.functional as F

torch.manual_seed(20240601)
DT = torch.float64
cases = []


def f32(v):
    """v rounded to float32: the engine's hyper-parameters are float32, so
    PyTorch gets the same numbers."""
    return torch.tensor(v, dtype=torch.float32).item()


SLOPE = f32(0.2)


def rand(*shape, lo=-1.0, hi=1.0):
    # Values representable in float32, as the engine's inputs are.
    return (lo + (hi - lo) * torch.rand(*shape, dtype=DT)).float().double()


class Raw(str):
    """JSON text inserted as it is (a number array formatted to a precision)."""


def arr(t, fmt):
    t = t.detach().contiguous()
    data = "[" + ",".join(fmt % v for v in t.reshape(-1).tolist()) + "]"
    return {"shape": list(t.shape), "data": Raw(data)}


def dumps(v):
    if isinstance(v, Raw):
        return str(v)
    if isinstance(v, dict):
        return "{" + ",".join(json.dumps(k) + ":" + dumps(x) for k, x in v.items()) + "}"
    return json.dumps(v, separators=(",", ":"))


def add(op, params, inputs, outputs):
    cases.append({
        "op": op,
        "params": params,
        # Inputs are float32 values: 9 digits identify one. Outputs are
        # float64 results: 12 digits are far below any tolerance.
        "inputs": {k: arr(v, "%.9g") for k, v in inputs.items()},
        "outputs": {k: arr(v, "%.12g") for k, v in outputs.items()},
    })


def act(y, a):
    if a == "relu":
        return F.relu(y)
    if a == "leaky":
        return F.leaky_relu(y, SLOPE)
    return y


# conv2d: stride, padding, dilation per axis; groups incl. depthwise.
for xs, ws, p, bias in [
    ((1, 3, 5, 6), (4, 3, 3, 3), dict(stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=1), True),
    ((1, 3, 7, 6), (3, 3, 3, 3), dict(stride=(2, 2), padding=(1, 1), dilation=(1, 1), groups=1), False),
    ((1, 2, 6, 7), (3, 2, 3, 2), dict(stride=(1, 2), padding=(1, 2), dilation=(2, 1), groups=1), True),
    ((1, 4, 5, 5), (4, 2, 3, 3), dict(stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=2), True),
    ((1, 3, 7, 7), (3, 1, 3, 3), dict(stride=(2, 2), padding=(2, 2), dilation=(2, 2), groups=3), True),
    ((1, 2, 4, 9), (2, 2, 1, 7), dict(stride=(1, 1), padding=(0, 3), dilation=(1, 1), groups=1), False),
]:
    x, w = rand(*xs), rand(*ws)
    b = rand(ws[0]) if bias else None
    inp = {"x": x, "w": w}
    if bias:
        inp["b"] = b
    add("conv2d", p, inp, {"y": F.conv2d(x, w, b, **p)})

# conv_transpose2d: output_padding below the stride or the dilation, groups.
for xs, ws, p, bias in [
    ((1, 2, 4, 5), (2, 3, 3, 3), dict(stride=(2, 2), padding=(1, 1), output_padding=(1, 1), dilation=(1, 1), groups=1), True),
    ((1, 3, 3, 4), (3, 2, 4, 4), dict(stride=(2, 2), padding=(1, 1), output_padding=(0, 0), dilation=(1, 1), groups=1), False),
    ((1, 4, 5, 5), (4, 3, 3, 3), dict(stride=(1, 1), padding=(1, 1), output_padding=(0, 0), dilation=(1, 1), groups=2), True),
    ((1, 2, 5, 5), (2, 3, 3, 3), dict(stride=(1, 1), padding=(0, 0), output_padding=(1, 1), dilation=(2, 2), groups=1), True),
    ((1, 2, 4, 5), (2, 2, 3, 2), dict(stride=(3, 2), padding=(1, 0), output_padding=(2, 1), dilation=(1, 1), groups=1), True),
]:
    x, w = rand(*xs), rand(*ws)
    b = rand(ws[1] * p["groups"]) if bias else None
    inp = {"x": x, "w": w}
    if bias:
        inp["b"] = b
    add("conv_transpose2d", p, inp, {"y": F.conv_transpose2d(x, w, b, **p)})

# instance norm, affine or not, with a fused activation.
for xs, affine, a, eps in [((2, 3, 5, 7), True, "none", 1e-5), ((2, 3, 5, 7), True, "relu", 1e-5),
                           ((1, 2, 4, 6), False, "leaky", 1e-3)]:
    x = rand(*xs)
    inp = {"x": x}
    g = b = None
    if affine:
        g, b = rand(xs[1], lo=0.5, hi=1.5), rand(xs[1], lo=-0.5, hi=0.5)
        inp.update(gamma=g, beta=b)
    y = act(F.instance_norm(x, weight=g, bias=b, eps=eps), a)
    add("instance_norm", {"eps": eps, "act": a}, inp, {"y": y})

# batch norm in training mode (batch statistics) and evaluation mode.
for xs, affine, a in [((3, 4, 5, 6), True, "none"), ((2, 3, 4, 5), False, "relu"), ((2, 3, 1, 1), True, "leaky")]:
    x = rand(*xs)
    inp = {"x": x}
    g = b = None
    if affine:
        g, b = rand(xs[1], lo=0.5, hi=1.5), rand(xs[1], lo=-0.5, hi=0.5)
        inp.update(gamma=g, beta=b)
    y, mean, invstd = torch.ops.aten.native_batch_norm(x, g, b, None, None, True, 0.1, 1e-5)
    add("batch_norm_train", {"eps": 1e-5, "act": a}, inp,
        {"y": act(y, a), "mean": mean, "var": 1 / invstd**2 - 1e-5})
for xs, affine, a in [((2, 5, 4, 3), True, "relu"), ((1, 3, 5, 5), False, "none")]:
    x, m, v = rand(*xs), rand(xs[1], lo=-0.3, hi=0.3), rand(xs[1], lo=0.2, hi=2)
    inp = {"x": x, "mean": m, "var": v}
    g = b = None
    if affine:
        g, b = rand(xs[1], lo=0.5, hi=1.5), rand(xs[1], lo=-0.5, hi=0.5)
        inp.update(gamma=g, beta=b)
    y = F.batch_norm(x, m, v, g, b, training=False, eps=1e-5)
    add("batch_norm_eval", {"eps": 1e-5, "act": a}, inp, {"y": act(y, a)})

# pad: zero and reflect, up to the widest reflection allowed.
for xs, (l, r, t, b), mode in [((1, 2, 4, 5), (0, 3, 1, 2), "constant"), ((1, 1, 7, 7), (3, 3, 3, 3), "reflect"),
                               ((1, 2, 4, 5), (4, 4, 3, 3), "reflect"), ((1, 1, 6, 5), (2, 4, 1, 0), "reflect")]:
    x = rand(*xs)
    add("pad", {"left": l, "right": r, "top": t, "bottom": b, "mode": mode}, {"x": x},
        {"y": F.pad(x, (l, r, t, b), mode=mode)})

# unary ops.
x = rand(5, 7, lo=-3, hi=3)
xp = rand(5, 7, lo=0.1, hi=3)
for name, a, b, inp, f in [
    ("relu", 0, 0, x, F.relu),
    ("leakyrelu", SLOPE, 0, x, lambda v: F.leaky_relu(v, SLOPE)),
    ("tanh", 0, 0, x, torch.tanh),
    ("sigmoid", 0, 0, x, torch.sigmoid),
    ("sqrt", 0, 0, xp, torch.sqrt),
    ("abs", 0, 0, x, torch.abs),
    ("square", 0, 0, x, torch.square),
    ("clamp", -0.5, 0.5, x, lambda v: torch.clamp(v, -0.5, 0.5)),
    ("affine", 1.5, -0.25, x, lambda v: 1.5 * v - 0.25),
    ("smoothl1", 0.5, 0, x, lambda v: F.smooth_l1_loss(v, torch.zeros_like(v), reduction="none", beta=0.5)),
    ("softplus", 0, 0, x, lambda v: F.softplus(v, beta=1, threshold=1000)),
    ("exp", 0, 0, x, torch.exp),
    ("log", 0, 0, xp, torch.log),
]:
    add("unary", {"kind": name, "a": a, "b": b}, {"x": inp}, {"y": f(inp)})

# binary ops with broadcasting.
for op, f in [("add", torch.add), ("sub", torch.sub), ("mul", torch.mul), ("div", torch.div)]:
    for sa, sb in [((2, 3, 2, 3), (1, 3, 1, 1)), ((2, 3, 2, 3), (3, 1, 1)), ((2, 1, 2, 3), (2, 3, 2, 3)), ((3, 1), (1, 4)),
                   ((2, 3, 2, 3), (1,))]:
        a, b = rand(*sa), rand(*sb, lo=0.5, hi=1.5)
        add("binary", {"op": op}, {"a": a, "b": b}, {"y": f(a, b)})

# sums to a broadcastable shape (keepdim, then the target's rank).
x = rand(2, 3, 4, 5)
for shape, dims in [((1,), (0, 1, 2, 3)), ((1, 3, 1, 1), (0, 2, 3)), ((3, 1, 1), (0, 2, 3)), ((1, 3, 4, 5), (0,)),
                    ((2, 1, 4, 1), (1, 3)), ((5,), (0, 1, 2))]:
    y = x.sum(dim=dims, keepdim=True).reshape(shape)
    add("sum", {"shape": list(shape)}, {"x": x}, {"y": y})

for perm in [(0, 2, 3, 1), (3, 2, 1, 0), (1, 0, 2, 3)]:
    add("permute", {"perm": list(perm)}, {"x": x}, {"y": x.permute(*perm)})
for axis, start, n in [(1, 1, 2), (3, 0, 5), (0, 1, 1)]:
    add("narrow", {"axis": axis, "start": start, "n": n}, {"x": x}, {"y": x.narrow(axis, start, n)})
a, b = rand(2, 3, 4), rand(2, 2, 4)
add("cat", {"axis": 1}, {"a": a, "b": b}, {"y": torch.cat([a, b], 1)})

# pooling.
for xs, k, s, p in [((2, 3, 8, 9), (2, 2), (2, 2), (0, 0)), ((1, 3, 9, 9), (3, 3), (2, 2), (1, 1)),
                    ((1, 2, 7, 10), (2, 3), (1, 2), (1, 1))]:
    x = rand(*xs)
    add("max_pool2d", {"k": list(k), "s": list(s), "p": list(p)}, {"x": x}, {"y": F.max_pool2d(x, k, s, p)})
for xs, k, s, p in [((1, 3, 8, 9), (3, 3), (1, 1), (1, 1)), ((1, 2, 9, 8), (3, 3), (2, 2), (1, 1)),
                    ((1, 2, 7, 9), (3, 2), (2, 1), (1, 1))]:
    x = rand(*xs)
    for inc in (False, True):
        add("avg_pool2d", {"k": list(k), "s": list(s), "p": list(p), "count_include_pad": inc}, {"x": x},
            {"y": F.avg_pool2d(x, k, s, p, count_include_pad=inc)})
for xs, o in [((2, 3, 7, 9), (3, 4)), ((1, 2, 4, 4), (6, 7)), ((2, 2, 13, 13), (5, 5))]:
    x = rand(*xs)
    add("adaptive_avg_pool2d", {"out": list(o)}, {"x": x}, {"y": F.adaptive_avg_pool2d(x, o)})
for xs, o in [((1, 2, 5, 7), (9, 11)), ((1, 2, 9, 9), (4, 5)), ((1, 1, 8, 8), (1, 1)), ((1, 2, 1, 1), (3, 3)),
              ((1, 1, 11, 11), (17, 17))]:
    x = rand(*xs)
    for ac in (False, True):
        add("interpolate_bilinear", {"out": list(o), "align_corners": ac}, {"x": x},
            {"y": F.interpolate(x, size=o, mode="bilinear", align_corners=ac)})

# matrix products, plain and batched, with transposes.
for sa, sb, ta, tb in [((7, 5), (5, 9), False, False), ((5, 7), (5, 9), True, False), ((7, 5), (9, 5), False, True),
                       ((3, 5, 7), (3, 9, 5), True, True)]:
    a, b = rand(*sa), rand(*sb)
    oa = a.transpose(-1, -2) if ta else a
    ob = b.transpose(-1, -2) if tb else b
    add("matmul", {"trans_a": ta, "trans_b": tb}, {"a": a, "b": b}, {"y": torch.matmul(oa, ob)})

# Adam: three steps of torch.optim.Adam with given gradients.
lr, b1, b2, eps = f32(0.01), 0.5, f32(0.999), f32(1e-8)
for wd in (0.0, f32(0.01)):
    p0 = rand(50)
    grads = [rand(50) for _ in range(3)]
    p = p0.clone().requires_grad_(True)
    opt = torch.optim.Adam([p], lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd)
    for g in grads:
        p.grad = g.clone()
        opt.step()
    st = opt.state[p]
    add("adam", {"lr": lr, "beta1": b1, "beta2": b2, "eps": eps, "weight_decay": wd, "steps": 3},
        {"param": p0, "grad0": grads[0], "grad1": grads[1], "grad2": grads[2]},
        {"param": p, "m": st["exp_avg"], "v": st["exp_avg_sq"]})

# One case per line, so that a regenerated file reviews as a diff.
out = sys.stdout
out.write('{"torch":%s,"cases":[\n' % json.dumps(torch.__version__))
for i, c in enumerate(cases):
    out.write(dumps(c) + (",\n" if i + 1 < len(cases) else "\n"))
out.write("]}\n")
