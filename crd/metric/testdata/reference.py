#!/usr/bin/python3
"""Independent NumPy/SciPy reference for crd/metric's tests.

Usage: reference.py SPEC.json  (file names in SPEC are relative to its folder;
float arrays are raw little-endian float64 '.f64' or float32 '.f32' files, index
arrays raw int64). Prints one JSON object with the results on stdout.

What each computation mirrors:
  stats     np.mean(axis=0) and np.cov(rowvar=False), as pytorch-fid's
            calculate_activation_statistics.
  fid       pytorch-fid's calculate_frechet_distance (scipy.linalg.sqrtm of the
            product, eps = 1e-6 retry on non-finite entries, the imaginary check
            on the diagonal with atol 1e-3, real part), warnings reported
            instead of raised, as GAN Compression's copy does; and fid_eig, the
            same formula with tr sqrtm replaced by the sum of Re sqrt over the
            eigenvalues of the product (np.linalg.eigvals), which never needs
            the eps retry.
  kid       torch-fidelity's polynomial kernel (x.y/d + 1)^3 and unbiased mmd2,
            on the subsets whose indices the test passes in.
  image     SSIM twice: (a) the 11x11 Gaussian window (sigma 1.5) summed
            directly over every position where it fits, in 2-D, and (b)
            skimage's route (gaussian_filter over the whole image, mode
            reflect, truncate 3.5, then a 5-pixel crop); PSNR as skimage's
            peak_signal_noise_ratio; mean absolute error.
  tensor2im the reference's uint8 conversion on a float32 array.
"""
import json
import os
import sys

import numpy as np
import scipy.linalg
import scipy.ndimage
from numpy.lib.stride_tricks import sliding_window_view


def load(base, name, dtype, shape):
    return np.fromfile(os.path.join(base, name), dtype=dtype).reshape(shape)


def stats_of(feats):
    return np.mean(feats, axis=0), np.cov(feats, rowvar=False)


def frechet(mu1, sigma1, mu2, sigma2, eps=1e-6):
    diff = mu1 - mu2
    retried = False
    covmean, _ = scipy.linalg.sqrtm(sigma1.dot(sigma2), disp=False)
    if not np.isfinite(covmean).all():
        retried = True
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    warned, imag_max = False, 0.0
    if np.iscomplexobj(covmean):
        imag_max = float(np.max(np.abs(np.diagonal(covmean).imag)))
        warned = not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3)
        covmean = covmean.real
    tr = np.trace(covmean)
    fid = diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * tr
    # The same trace without sqrtm: sum of the principal roots' real parts
    # over the eigenvalues of the product (no eps retry needed or taken).
    lam = np.linalg.eigvals(sigma1.dot(sigma2)).astype(np.complex128)
    fid_eig = diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.sqrt(lam).real.sum()
    return dict(fid=float(fid), fid_eig=float(fid_eig), trace=float(tr), warned=warned,
                imag_max=imag_max, retried=retried)


def poly_kernel(x, y):
    return (x @ y.T / x.shape[1] + 1) ** 3


def mmd2_unbiased(kxx, kxy, kyy):
    m = kxx.shape[0]
    sxx = kxx.sum() - np.trace(kxx)
    syy = kyy.sum() - np.trace(kyy)
    return (sxx + syy) / (m * (m - 1)) - 2 * kxy.sum() / (m * m)


def gaussian_1d(sigma=1.5, radius=5):
    d = np.arange(-radius, radius + 1, dtype=np.float64)
    g = np.exp(-(d ** 2) / (2 * sigma ** 2))
    return g / g.sum()


def ssim_direct(a, b):
    """Mean over channels of the mean SSIM map, window summed in 2-D."""
    g = gaussian_1d()
    w2 = np.outer(g, g)
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    out = []
    for x, y in zip(a, b):
        def filt(img):
            return np.einsum("ijkl,kl->ij", sliding_window_view(img, w2.shape), w2)
        mx, my = filt(x), filt(y)
        vx = filt(x * x) - mx * mx
        vy = filt(y * y) - my * my
        cxy = filt(x * y) - mx * my
        s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
        out.append(s.mean())
    return float(np.mean(out))


def ssim_filtered(a, b):
    """skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=1, channel_axis=0), re-derived."""
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    pad = 5
    out = []
    for x, y in zip(a, b):
        def filt(img):
            return scipy.ndimage.gaussian_filter(img, sigma=1.5, truncate=3.5, mode="reflect")
        ux, uy = filt(x), filt(y)
        vx = filt(x * x) - ux * ux
        vy = filt(y * y) - uy * uy
        vxy = filt(x * y) - ux * uy
        s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux ** 2 + uy ** 2 + c1) * (vx + vy + c2))
        out.append(s[pad:-pad, pad:-pad].mean())
    return float(np.mean(out))


def tensor2im(x):
    v = (x + 1) / 2.0 * 255.0  # float32 throughout, as in the reference
    assert v.dtype == np.float32
    return np.clip(v, 0, 255).astype(np.uint8)


def main():
    spec_path = sys.argv[1]
    base = os.path.dirname(spec_path)
    with open(spec_path) as f:
        spec = json.load(f)
    res = {"stats": [], "fid": [], "kid": [], "image": [], "tensor2im": []}

    for c in spec.get("stats") or []:
        mu, sigma = stats_of(load(base, c["feats"], "<f8", (c["n"], c["dim"])))
        mu.astype("<f8").tofile(os.path.join(base, c["mu_out"]))
        sigma.astype("<f8").tofile(os.path.join(base, c["sigma_out"]))
        res["stats"].append({})

    for c in spec.get("fid") or []:
        d = c["dim"]
        if c.get("feats1"):
            mu1, s1 = stats_of(load(base, c["feats1"], "<f8", (c["n1"], d)))
            mu2, s2 = stats_of(load(base, c["feats2"], "<f8", (c["n2"], d)))
        else:
            mu1, s1 = load(base, c["mu1"], "<f8", (d,)), load(base, c["sigma1"], "<f8", (d, d))
            mu2, s2 = load(base, c["mu2"], "<f8", (d,)), load(base, c["sigma2"], "<f8", (d, d))
        res["fid"].append(frechet(mu1, s1, mu2, s2))

    for c in spec.get("kid") or []:
        d = c["dim"]
        x = load(base, c["x"], "<f8", (c["nx"], d))
        y = load(base, c["y"], "<f8", (c["ny"], d))
        ix = load(base, c["idx_x"], "<i8", (c["subsets"], c["m"]))
        iy = load(base, c["idx_y"], "<i8", (c["subsets"], c["m"]))
        mmds = []
        for s in range(c["subsets"]):
            xs, ys = x[ix[s]], y[iy[s]]
            mmds.append(float(mmd2_unbiased(poly_kernel(xs, xs), poly_kernel(xs, ys), poly_kernel(ys, ys))))
        res["kid"].append({"mmds": mmds, "mean": float(np.mean(mmds)), "std": float(np.std(mmds))})

    for c in spec.get("image") or []:
        shape = (c["c"], c["h"], c["w"])
        a = load(base, c["a"], "<f4", shape).astype(np.float64)
        b = load(base, c["b"], "<f4", shape).astype(np.float64)
        mse = np.mean((a - b) ** 2)
        psnr = 10 * np.log10(c["data_range"] ** 2 / mse) if mse > 0 else float("inf")
        res["image"].append({
            "ssim": ssim_direct(a, b),
            "ssim_filtered": ssim_filtered(a, b),
            "psnr": float(psnr) if np.isfinite(psnr) else None,
            "psnr_inf": bool(np.isinf(psnr)),
            "mae": float(np.mean(np.abs(a - b))),
        })

    for c in spec.get("tensor2im") or []:
        x = load(base, c["x"], "<f4", (c["n"],))
        res["tensor2im"].append({"u8": tensor2im(x).tolist()})

    json.dump(res, sys.stdout, allow_nan=False)


if __name__ == "__main__":
    main()
