"""Writes the reference files the Go tests of crd/weights read, with PyTorch and NumPy as
the independent oracle:

  sd.pth, sd_legacy.pth   a state dict of a small Conv2d+BatchNorm2d net plus float16,
                          bfloat16, float64, int32, uint8, bool, int64 buffers, a scalar, an
                          empty tensor, a transposed and a sliced view, two views of one storage
                          (zip format and legacy format of the same dict)
  vgg_like_legacy.pth     torchvision-VGG16-style keys (features.N / classifier.N), legacy format
  ckpt.pth                a checkpoint {'epoch', 'state_dict', 'optimizer'}
  module.pth              a whole pickled nn.Module (must be refused)
  sd_expected.safetensors sd's tensors made contiguous, float32 / int64, written with
                          struct+json+numpy; __metadata__ 'dtypes' maps name -> stored dtype
  mixed.safetensors       many dtypes written directly (F16, BF16, F64, I32, U8, BOOL, I8, ...)
  mixed.npz               the same values as float64
  golden_writer.safetensors  the bytes WriteSafetensors must produce for fixed tensors
  stats.npz               mu (32,), sigma (32, 32) float64 (FID statistics, smaller)
  orders.npz              C- and Fortran-ordered float32/float64 arrays, compressed

Usage: /usr/bin/python3 make_fixtures.py OUTDIR   (seeded: the same files every run, except
that legacy files name storages by object id).
"""
import collections
import json
import struct
import sys

import numpy as np
import torch

out = sys.argv[1]
torch.manual_seed(1)
rng = np.random.default_rng(1)


def state_dict():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    net.train()
    net(torch.randn(2, 3, 5, 5))  # running stats and num_batches_tracked move
    sd = net.state_dict()
    sd["half"] = torch.randn(2, 3).half()
    sd["bf16"] = torch.randn(5).bfloat16()
    sd["f64"] = torch.randn(3, 2, dtype=torch.float64)
    sd["i32"] = torch.tensor([-7, 0, 2**31 - 1], dtype=torch.int32)
    sd["u8"] = torch.tensor([0, 200, 255], dtype=torch.uint8)
    sd["mask"] = torch.tensor([[True, False], [False, True]])
    sd["idx"] = torch.tensor([-(2**62), 5, 2**40], dtype=torch.int64)
    sd["scalar"] = torch.tensor(1.5)
    sd["empty"] = torch.zeros(0, 3)
    sd["transposed"] = torch.randn(4, 5).t()  # stride (1, 5)
    sd["sliced"] = torch.randn(6, 8)[1:5:2, 2:7]  # offset 10, stride (16, 1)
    base = torch.randn(10)
    sd["shared_a"] = base[:4]
    sd["shared_b"] = base[4:].view(2, 3)  # offset 4 into the same storage
    sd["half_t"] = torch.randn(3, 2).half().t()  # strided float16
    return sd


def write_safetensors(path, tensors, meta=None, order=None):
    """tensors: name -> (dtype string, shape, raw bytes); data in `order` (default: sorted)."""
    names = order or sorted(tensors)
    header = collections.OrderedDict()
    if meta:
        header["__metadata__"] = collections.OrderedDict(sorted(meta.items()))
    offsets, off = {}, 0
    for n in names:
        offsets[n] = (off, off + len(tensors[n][2]))
        off += len(tensors[n][2])
    for n in sorted(tensors):
        dt, shape, _ = tensors[n]
        header[n] = collections.OrderedDict(
            [("dtype", dt), ("shape", list(shape)), ("data_offsets", list(offsets[n]))])
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for n in names:
            f.write(tensors[n][2])


ST_DTYPE = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
            torch.float64: "F64", torch.int64: "I64", torch.int32: "I32", torch.uint8: "U8",
            torch.bool: "BOOL"}

sd = state_dict()
torch.save(sd, f"{out}/sd.pth")
torch.save(sd, f"{out}/sd_legacy.pth", _use_new_zipfile_serialization=False)

expected, dtypes = {}, {}
for name, t in sd.items():
    dtypes[name] = ST_DTYPE[t.dtype]
    if t.is_floating_point():
        a = t.float().contiguous().numpy().astype("<f4")
        expected[name] = ("F32", t.shape, a.tobytes())
    else:
        a = t.long().contiguous().numpy().astype("<i8")
        expected[name] = ("I64", t.shape, a.tobytes())
write_safetensors(f"{out}/sd_expected.safetensors", expected,
                  {"dtypes": json.dumps(dtypes, sort_keys=True), "order": ",".join(sd.keys())})

# torchvision VGG16 key layout, tiny widths, legacy format like the published file.
vgg = collections.OrderedDict()
for i, (cin, cout) in zip([0, 2, 5], [(3, 4), (4, 4), (4, 8)]):
    vgg[f"features.{i}.weight"] = torch.randn(cout, cin, 3, 3)
    vgg[f"features.{i}.bias"] = torch.randn(cout)
for i, (fin, fout) in zip([0, 3, 6], [(8, 6), (6, 6), (6, 5)]):
    vgg[f"classifier.{i}.weight"] = torch.randn(fout, fin)
    vgg[f"classifier.{i}.bias"] = torch.randn(fout)
torch.save(vgg, f"{out}/vgg_like_legacy.pth", _use_new_zipfile_serialization=False)
write_safetensors(f"{out}/vgg_like_expected.safetensors",
                  {k: ("F32", v.shape, v.numpy().astype("<f4").tobytes()) for k, v in vgg.items()},
                  {"order": ",".join(vgg.keys())})

net = torch.nn.Sequential(torch.nn.Linear(3, 2))
opt = torch.optim.Adam(net.parameters())
net(torch.randn(4, 3)).sum().backward()
opt.step()
torch.save({"epoch": 3, "state_dict": net.state_dict(), "optimizer": opt.state_dict(),
            "note": "checkpoint"}, f"{out}/ckpt.pth")
write_safetensors(f"{out}/ckpt_expected.safetensors",
                  {k: ("F32", v.shape, v.numpy().astype("<f4").tobytes())
                   for k, v in net.state_dict().items()},
                  {"order": ",".join(net.state_dict().keys())})
torch.save(net, f"{out}/module.pth")

# Many dtypes, written straight from numpy bytes, data in non-sorted order.
f32 = rng.standard_normal(6).astype("<f4")
bf16_bits = (f32.view("<u4") >> 16).astype("<u2")  # truncation: exact bfloat16 values
mixed = {
    "f16": ("F16", (2, 3), rng.standard_normal(6).astype("<f2")),
    "bf16": ("BF16", (6,), bf16_bits),
    "f64": ("F64", (3,), np.array([1e-300, -2.5, 1e300], "<f8")),
    "f32": ("F32", (1, 2, 3), f32),
    "i64": ("I64", (2,), np.array([-(2**63), 2**63 - 1], "<i8")),
    "i32": ("I32", (3,), np.array([-5, 0, 7], "<i4")),
    "i16": ("I16", (2,), np.array([-300, 300], "<i2")),
    "i8": ("I8", (2,), np.array([-128, 127], "i1")),
    "u8": ("U8", (2,), np.array([0, 255], "u1")),
    "u16": ("U16", (1,), np.array([65535], "<u2")),
    "u32": ("U32", (1,), np.array([2**32 - 1], "<u4")),
    "u64": ("U64", (1,), np.array([2**62], "<u8")),
    "bool": ("BOOL", (3,), np.array([True, False, True])),
    "scalar": ("F32", (), np.array(2.0, "<f4")),
    "empty": ("F32", (2, 0), np.zeros((2, 0), "<f4")),
}
write_safetensors(f"{out}/mixed.safetensors",
                  {k: (d, s, a.tobytes()) for k, (d, s, a) in mixed.items()},
                  {"format": "np", "writer": "make_fixtures.py"},
                  order=["u8", "f64", "bool", "i8", "f32", "i64", "f16", "bf16", "u64", "i32",
                         "i16", "scalar", "u16", "u32", "empty"])


def exact64(name, dt, a):
    if dt == "BF16":
        return (a.astype("<u4") << 16).view("<f4").astype("<f8")
    return a.astype("<f8")


np.savez(f"{out}/mixed.npz", **{k: exact64(k, d, a).reshape(s)
                                for k, (d, s, a) in mixed.items() if k not in ("i64", "u64")})

# The exact bytes WriteSafetensors must write (data in the given order, keys sorted).
golden = {
    "zeta": ("F32", (2, 3), (np.arange(6, dtype="<f4") * 0.5).tobytes()),
    "alpha": ("I64", (1, 2), np.array([-1, 2**40], "<i8").tobytes()),
    "mid": ("F32", (), np.array(3.25, "<f4").tobytes()),
    "empty": ("F32", (0, 2), b""),
}
write_safetensors(f"{out}/golden_writer.safetensors", golden, {"b": "2", "a": "x/y"},
                  order=["zeta", "alpha", "mid", "empty"])

np.savez(f"{out}/stats.npz", mu=rng.standard_normal(32),
         sigma=np.cov(rng.standard_normal((32, 100))))
x2 = rng.standard_normal((3, 5)).astype("<f4")
x3 = rng.standard_normal((2, 3, 4))
np.savez_compressed(f"{out}/orders.npz", c2=x2, f2=np.asfortranarray(x2),
                    c3=x3, f3=np.asfortranarray(x3), t=x3.T, ct=np.ascontiguousarray(x3.T))
