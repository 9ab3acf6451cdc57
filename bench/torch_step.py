#!/usr/bin/env python3
"""One training step of the small GAN of `crdgo bench engine`, in PyTorch.

Generator: mobile ResNet (reflect-pad conv7x7 -> IN -> ReLU, two stride-2 convs,
n residual blocks of depthwise-separable convs, two transposed convs, conv7x7,
tanh), as mobile_resnet_generator.py of the CRD/GAN Compression code. D: the
3-layer PatchGAN (NLayerDiscriminator). Loss: LSGAN + 10*L1. Adam(2e-4, 0.5,
0.999). The step is the pix2pix order: G forward, D step, G step through the
updated D.

Prints one JSON line: {"ms": [per-step ms ...], "peak_rss_bytes": N, ...}.
Run with /usr/bin/python3 (Debian python3-torch).
"""
import argparse
import json
import resource
import time

import torch
import torch.nn as nn


class SeparableConv2d(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(c, c, 3, groups=c, bias=True),
            nn.InstanceNorm2d(c),
            nn.Conv2d(c, c, 1, bias=True))

    def forward(self, x):
        return self.conv(x)


class MobileResnetBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1), SeparableConv2d(c), nn.InstanceNorm2d(c), nn.ReLU(True),
            nn.Dropout(0.0), nn.ReflectionPad2d(1), SeparableConv2d(c), nn.InstanceNorm2d(c))

    def forward(self, x):
        return x + self.conv_block(x)


def generator(ngf, blocks):
    f = ngf
    layers = [nn.ReflectionPad2d(3), nn.Conv2d(3, f, 7), nn.InstanceNorm2d(f), nn.ReLU(True),
              nn.Conv2d(f, 2 * f, 3, 2, 1), nn.InstanceNorm2d(2 * f), nn.ReLU(True),
              nn.Conv2d(2 * f, 4 * f, 3, 2, 1), nn.InstanceNorm2d(4 * f), nn.ReLU(True)]
    layers += [MobileResnetBlock(4 * f) for _ in range(blocks)]
    layers += [nn.ConvTranspose2d(4 * f, 2 * f, 3, 2, 1, output_padding=1), nn.InstanceNorm2d(2 * f), nn.ReLU(True),
               nn.ConvTranspose2d(2 * f, f, 3, 2, 1, output_padding=1), nn.InstanceNorm2d(f), nn.ReLU(True),
               nn.ReflectionPad2d(3), nn.Conv2d(f, 3, 7), nn.Tanh()]
    return nn.Sequential(*layers)


def patchgan(in_c, ndf, n_layers=3):
    layers = [nn.Conv2d(in_c, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
    mult = 1
    for n in range(1, n_layers + 1):
        prev, mult = mult, min(2 ** n, 8)
        stride = 2 if n < n_layers else 1
        layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride, 1), nn.InstanceNorm2d(ndf * mult),
                   nn.LeakyReLU(0.2, True)]
    layers += [nn.Conv2d(ndf * mult, 1, 4, 1, 1)]
    return nn.Sequential(*layers)


def init_weights(m):
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(m.weight, 0.0, 0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--size', type=int, default=64)
    ap.add_argument('--batch', type=int, default=1)
    ap.add_argument('--ngf', type=int, default=16)
    ap.add_argument('--ndf', type=int, default=64)
    ap.add_argument('--blocks', type=int, default=3)
    ap.add_argument('--steps', type=int, default=20)
    ap.add_argument('--warmup', type=int, default=5)
    ap.add_argument('--threads', type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    G, D = generator(a.ngf, a.blocks), patchgan(3, a.ndf)
    G.apply(init_weights)
    D.apply(init_weights)
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    x = torch.rand(a.batch, 3, a.size, a.size) * 2 - 1
    y = torch.rand(a.batch, 3, a.size, a.size) * 2 - 1
    mse, l1 = nn.MSELoss(), nn.L1Loss()

    def step():
        fake = G(x)
        opt_d.zero_grad(set_to_none=False)
        for p in D.parameters():
            p.requires_grad_(True)
        pr, pf = D(y), D(fake.detach())
        loss_d = 0.5 * (mse(pr, torch.ones_like(pr)) + mse(pf, torch.zeros_like(pf)))
        loss_d.backward()
        opt_d.step()
        for p in D.parameters():
            p.requires_grad_(False)
        opt_g.zero_grad(set_to_none=False)
        pg = D(fake)
        loss_g = mse(pg, torch.ones_like(pg)) + 10 * l1(fake, y)
        loss_g.backward()
        opt_g.step()
        return float(loss_d), float(loss_g)

    for _ in range(a.warmup):
        step()
    ms = []
    losses = None
    for _ in range(a.steps):
        t0 = time.perf_counter()
        losses = step()
        ms.append((time.perf_counter() - t0) * 1e3)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({'impl': 'pytorch ' + torch.__version__, 'threads': torch.get_num_threads(),
                      'ms': ms, 'peak_rss_bytes': rss, 'loss_d': losses[0], 'loss_g': losses[1]}))


if __name__ == '__main__':
    main()
