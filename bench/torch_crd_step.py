#!/usr/bin/env python3
"""One pix2pix CRD distillation step in PyTorch, as `crdgo bench step` times it.

The step of CRD.md section 4.1: T = G_T(a), S = G_S(a); discriminator loss (hinge) on
(a, T detached) and (a, b); teacher loss through the pre-update D (hinge + 100 L1);
student loss = the pix2pix CRD term 2.5 * sum_b (rows + cols + patches) against T
detached (no VGG, no student GAN term); Adam steps of D, G_T and G_S.

--angle naive is the released code's RKDLoss (relation_kd.py): pairwise distances by
the expansion form and angles from the n x n x d tensor of normalised differences,
O(n^3 d) -- what users of the released code run (with reshape instead of the crashing
view, CRD.md section 9 D1). --angle gram computes the same loss the way crdgo does:
the Gram matrix of the centred vectors (one GEMM), squared distances from it and angle
numerators by polarisation,
<x_j - x_i, x_k - x_i> = (D_ij + D_ik - D_jk)/2, O(n^2 d + n^3): engine against engine.

Prints one JSON line: {"ms": [...], "peak_rss_bytes": N, ...}. Run with /usr/bin/python3.
"""
import argparse
import json
import resource
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from torch_step import generator, init_weights


def patchgan(in_c, ndf, n_layers=3):
    layers = [nn.Conv2d(in_c, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
    mult = 1
    for n in range(1, n_layers + 1):
        prev, mult = mult, min(2 ** n, 8)
        layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, 2 if n < n_layers else 1, 1),
                   nn.InstanceNorm2d(ndf * mult), nn.LeakyReLU(0.2, True)]
    layers += [nn.Conv2d(ndf * mult, 1, 4, 1, 1)]
    return nn.Sequential(*layers)


def pdist(e, eps=1e-12):
    e_square = e.pow(2).sum(dim=1)
    prod = e @ e.t()
    res = (e_square.unsqueeze(1) + e_square.unsqueeze(0) - 2 * prod).clamp(min=eps).sqrt()
    res = res.clone()
    res[range(len(e)), range(len(e))] = 0
    return res


def rkd_naive(s, t):
    """The released RKDLoss (w_d = 1, w_a = 2)."""
    s, t = s.reshape(s.shape[0], -1), t.reshape(t.shape[0], -1)
    with torch.no_grad():
        t_d = pdist(t)
        t_d = t_d / t_d[t_d > 0].mean()
    d = pdist(s)
    d = d / d[d > 0].mean()
    loss_d = F.smooth_l1_loss(d, t_d)
    with torch.no_grad():
        td = t.unsqueeze(0) - t.unsqueeze(1)
        norm_td = F.normalize(td, p=2, dim=2)
        t_angle = torch.bmm(norm_td, norm_td.transpose(1, 2)).view(-1)
    sd = s.unsqueeze(0) - s.unsqueeze(1)
    norm_sd = F.normalize(sd, p=2, dim=2)
    s_angle = torch.bmm(norm_sd, norm_sd.transpose(1, 2)).view(-1)
    loss_a = F.smooth_l1_loss(s_angle, t_angle)
    return loss_d + 2 * loss_a


def relations_gram(x):
    """Normalised distances and angles of the rows of x, CRD.md section 1.4's Gram form:
    one GEMM for the Gram matrix of the centred rows, O(n^3) elementwise for the angles."""
    n = x.shape[0]
    x = x - x.mean(dim=0, keepdim=True)
    G = x @ x.t()
    g = torch.diagonal(G)
    D = (g.unsqueeze(1) + g.unsqueeze(0) - 2 * G).clamp(min=0)
    eye = torch.eye(n, dtype=torch.bool)
    d = torch.where(eye, torch.zeros_like(D), D.clamp(min=1e-12).sqrt())
    psi = d / d[~eye].mean()
    # |x_j - x_i| floored at 1e-12 as F.normalize does; the inner clamp keeps sqrt's
    # derivative finite on the diagonal.
    rho = D.clamp(min=1e-24).sqrt().clamp(min=1e-12)
    num = 0.5 * (D.unsqueeze(2) + D.unsqueeze(1) - D.unsqueeze(0))  # num[i,j,k] by polarisation
    deg = eye.unsqueeze(2) | eye.unsqueeze(1)        # degenerate triplets: j == i or k == i
    num = num.masked_fill(deg, 0)
    A = num / (rho.unsqueeze(2) * rho.unsqueeze(1))
    return psi, A


def rkd_gram(s, t):
    s, t = s.reshape(s.shape[0], -1), t.reshape(t.shape[0], -1)
    with torch.no_grad():
        psi_t, a_t = relations_gram(t)
    psi_s, a_s = relations_gram(s)
    return F.smooth_l1_loss(psi_s, psi_t) + 2 * F.smooth_l1_loss(a_s, a_t)


def slices(x, p):
    """rows (H, C*W), columns (W, H*C), patches (L, C*P*P) of one C x H x W image."""
    rows = x.transpose(0, 1).reshape(x.shape[1], -1)
    cols = x.permute(2, 1, 0).reshape(x.shape[2], -1)
    patches = F.unfold(x.unsqueeze(0), kernel_size=p, stride=p)[0].t()
    return rows, cols, patches


def crd_pix2pix(S, T, p, rkd):
    total = 0
    for b in range(S.shape[0]):
        for s, t in zip(slices(S[b], p), slices(T[b], p)):
            total = total + 2.5 * rkd(s, t)
    return total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--size', type=int, default=64)
    ap.add_argument('--batch', type=int, default=1)
    ap.add_argument('--ngf', type=int, default=16, help='teacher width; the student has ngf/4')
    ap.add_argument('--ndf', type=int, default=64)
    ap.add_argument('--blocks', type=int, default=9)
    ap.add_argument('--patch', type=int, default=32)
    ap.add_argument('--angle', choices=['naive', 'gram'], default='naive')
    ap.add_argument('--steps', type=int, default=10)
    ap.add_argument('--warmup', type=int, default=3)
    ap.add_argument('--threads', type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    GT, GS, D = generator(a.ngf, a.blocks), generator(max(1, a.ngf // 4), a.blocks), patchgan(6, a.ndf)
    for m in (GT, GS, D):
        m.apply(init_weights)
    opt = lambda m: torch.optim.Adam(m.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_t, opt_s, opt_d = opt(GT), opt(GS), opt(D)
    x = torch.rand(a.batch, 3, a.size, a.size) * 2 - 1
    y = torch.rand(a.batch, 3, a.size, a.size) * 2 - 1
    rkd = rkd_naive if a.angle == 'naive' else rkd_gram

    def step():
        for o in (opt_t, opt_s, opt_d):
            o.zero_grad(set_to_none=False)
        T, S = GT(x), GS(x)
        for p in D.parameters():
            p.requires_grad_(True)
        pf = D(torch.cat([x, T.detach()], 1))
        pr = D(torch.cat([x, y], 1))
        loss_d = 0.5 * (F.relu(1 + pf).mean() + F.relu(1 - pr).mean())
        loss_d.backward()
        for p in D.parameters():
            p.requires_grad_(False)
        loss_t = -D(torch.cat([x, T], 1)).mean() + 100 * F.l1_loss(T, y)
        loss_t.backward()
        opt_d.step()
        opt_t.step()
        loss_s = crd_pix2pix(S, T.detach(), a.patch, rkd)
        loss_s.backward()
        opt_s.step()
        return float(loss_d), float(loss_t), float(loss_s)

    for _ in range(a.warmup):
        step()
    ms, losses = [], None
    for _ in range(a.steps):
        t0 = time.perf_counter()
        losses = step()
        ms.append((time.perf_counter() - t0) * 1e3)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({'impl': 'pytorch %s (%s angle)' % (torch.__version__, a.angle), 'threads': torch.get_num_threads(),
                      'ms': ms, 'peak_rss_bytes': rss, 'loss_d': losses[0], 'loss_g': losses[1], 'loss_s': losses[2]}))


if __name__ == '__main__':
    main()
