#!/usr/bin/env python3
"""Oracle for crd's tests: evaluates the cases read as JSON on stdin with crd_reference.py
(a copy of /work/shared/crd_reference.py, the float64 reference of CRD.md) and writes the
results as JSON on stdout.

Input:  {"cases": [case, ...]}, each case one of
  {"kind": "rkd", "x": [[...]], "y": [[...]]}                      -> loss parts and d RKD/dx
  {"kind": "cyclegan", "s": img, "t": img, "p": P}                  -> total and d total/ds
  {"kind": "pix2pix", "s": [img], "t": [img], "p": P, "official": b} -> total
where img is a [C][H][W] nested list.
Output: {"results": [{"rkd", "dist", "angle", "mu_s", "mu_t", "grad"} or {"total", "grad"}]}
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import crd_reference as ref  # noqa: E402


def run(case):
    k = case["kind"]
    if k == "rkd":
        p = ref.rkd(case["x"], case["y"], want_parts=True)
        return {"rkd": p["total"], "dist": p["loss_d"], "angle": p["loss_a"],
                "mu_s": p["mu_s"], "mu_t": p["mu_t"], "grad": ref.rkd_grad(case["x"], case["y"])}
    if k == "cyclegan":
        tot, _ = ref.crd_cyclegan(case["s"], case["t"], case["p"])
        return {"total": tot, "grad": ref.crd_cyclegan_grad(case["s"], case["t"], case["p"])}
    if k == "pix2pix":
        f = ref.crd_pix2pix_official if case["official"] else ref.crd_pix2pix_intended
        return {"total": f(case["s"], case["t"], case["p"])}
    raise ValueError("unknown case kind %r" % k)


def main():
    cases = json.load(sys.stdin)["cases"]
    json.dump({"results": [run(c) for c in cases]}, sys.stdout)


if __name__ == "__main__":
    main()
