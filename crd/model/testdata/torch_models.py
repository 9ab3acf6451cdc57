#!/usr/bin/env python3
"""PyTorch side of crd/model's conformance test (TestTorchConformance).

Builds every architecture of CRD.md section 5 exactly as the reference code does
(ResnetGenerator, MobileResnetGenerator with SeparableConv2d, UnetGenerator with
UnetSkipConnectionBlock, NLayerDiscriminator, torchvision's vgg16().features[:23],
torchvision's Inception3 with pytorch-fid's FID patches), with seeded random
weights and non-trivial batch-norm statistics, and writes for each case:

  <case>.safetensors or <case>.pth   the state_dict (both torch.save formats are used)
  <case>_io.safetensors               input, output(s), the output cotangent r, the
                                      gradients of <r, output> w.r.t. the input and every
                                      parameter ("grad.input", "grad.<name>"), and the
                                      running statistics after a training-mode forward
                                      ("after.<name>")
  manifest.json                       the cases, their crdgo model.Spec and parameter count

The modules are written out here (torchvision is not a dependency); when torchvision is
importable, their state_dict names and shapes are checked against it.

Usage: torch_models.py OUTDIR
"""
import functools
import json
import os
import struct
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


# ------------------------------------------------------------------ generators (GAN Compression)
class ResnetBlock(nn.Module):
    def __init__(self, dim, norm_layer, dropout_rate, use_bias):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(dim, dim, kernel_size=3, padding=0, bias=use_bias), norm_layer(dim), nn.ReLU(True),
            nn.Dropout(dropout_rate),
            nn.ReflectionPad2d(1),
            nn.Conv2d(dim, dim, kernel_size=3, padding=0, bias=use_bias), norm_layer(dim))

    def forward(self, x):
        return x + self.conv_block(x)


class SeparableConv2d(nn.Module):
    def __init__(self, in_channels, out_channels, kernel_size=1, stride=1, padding=0,
                 norm_layer=nn.InstanceNorm2d, use_bias=True, scale_factor=1):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, in_channels * scale_factor, kernel_size=kernel_size, stride=stride,
                      padding=padding, groups=in_channels, bias=use_bias),
            norm_layer(num_features=in_channels * scale_factor),
            nn.Conv2d(in_channels * scale_factor, out_channels, kernel_size=1, stride=1, bias=use_bias))

    def forward(self, x):
        return self.conv(x)


class MobileResnetBlock(nn.Module):
    def __init__(self, dim, norm_layer, dropout_rate, use_bias):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1),
            SeparableConv2d(dim, dim, kernel_size=3, padding=0, stride=1), norm_layer(dim), nn.ReLU(True),
            nn.Dropout(dropout_rate),
            nn.ReflectionPad2d(1),
            SeparableConv2d(dim, dim, kernel_size=3, padding=0, stride=1), norm_layer(dim))

    def forward(self, x):
        return x + self.conv_block(x)


def use_bias_of(norm_layer):
    return norm_layer.func == nn.InstanceNorm2d


class ResnetGenerator(nn.Module):
    """resnet_generator.py (clamps its input) or, mobile=True, mobile_resnet_generator.py."""

    def __init__(self, input_nc, output_nc, ngf, norm_layer, dropout_rate=0, n_blocks=9, mobile=False):
        super().__init__()
        self.mobile = mobile
        use_bias = use_bias_of(norm_layer)
        block = MobileResnetBlock if mobile else ResnetBlock
        model = [nn.ReflectionPad2d(3), nn.Conv2d(input_nc, ngf, kernel_size=7, padding=0, bias=use_bias),
                 norm_layer(ngf), nn.ReLU(True)]
        for i in range(2):
            mult = 2 ** i
            model += [nn.Conv2d(ngf * mult, ngf * mult * 2, kernel_size=3, stride=2, padding=1, bias=use_bias),
                      norm_layer(ngf * mult * 2), nn.ReLU(True)]
        for _ in range(n_blocks):
            model += [block(ngf * 4, norm_layer=norm_layer, dropout_rate=dropout_rate, use_bias=use_bias)]
        for i in range(2):
            mult = 2 ** (2 - i)
            model += [nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, kernel_size=3, stride=2, padding=1,
                                         output_padding=1, bias=use_bias),
                      norm_layer(ngf * mult // 2), nn.ReLU(True)]
        model += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, kernel_size=7, padding=0), nn.Tanh()]
        self.model = nn.Sequential(*model)

    def forward(self, x):
        if not self.mobile:
            x = x.clamp(-1, 1)
        return self.model(x)


class UnetSkipConnectionBlock(nn.Module):
    def __init__(self, outer_nc, inner_nc, input_nc=None, submodule=None, outermost=False, innermost=False,
                 norm_layer=nn.BatchNorm2d):
        super().__init__()
        self.outermost = outermost
        use_bias = use_bias_of(norm_layer)
        if input_nc is None:
            input_nc = outer_nc
        downconv = nn.Conv2d(input_nc, inner_nc, kernel_size=4, stride=2, padding=1, bias=use_bias)
        downrelu = nn.LeakyReLU(0.2, True)
        downnorm = norm_layer(inner_nc)
        uprelu = nn.ReLU(True)
        upnorm = norm_layer(outer_nc)
        if outermost:
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1)
            model = [downconv] + [submodule] + [uprelu, upconv, nn.Tanh()]
        elif innermost:
            upconv = nn.ConvTranspose2d(inner_nc, outer_nc, kernel_size=4, stride=2, padding=1, bias=use_bias)
            model = [downrelu, downconv] + [uprelu, upconv, upnorm]
        else:
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1, bias=use_bias)
            model = [downrelu, downconv, downnorm] + [submodule] + [uprelu, upconv, upnorm]
        self.model = nn.Sequential(*model)

    def forward(self, x):
        if self.outermost:
            return self.model(x)
        return torch.cat([x, self.model(x)], 1)


class UnetGenerator(nn.Module):
    def __init__(self, input_nc, output_nc, num_downs, ngf, norm_layer):
        super().__init__()
        block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, submodule=None, norm_layer=norm_layer, innermost=True)
        for _ in range(num_downs - 5):
            block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, submodule=block, norm_layer=norm_layer)
        block = UnetSkipConnectionBlock(ngf * 4, ngf * 8, submodule=block, norm_layer=norm_layer)
        block = UnetSkipConnectionBlock(ngf * 2, ngf * 4, submodule=block, norm_layer=norm_layer)
        block = UnetSkipConnectionBlock(ngf, ngf * 2, submodule=block, norm_layer=norm_layer)
        self.model = UnetSkipConnectionBlock(output_nc, ngf, input_nc=input_nc, submodule=block, outermost=True,
                                             norm_layer=norm_layer)

    def forward(self, x):
        return self.model(x)


class NLayerDiscriminator(nn.Module):
    def __init__(self, input_nc, ndf, n_layers, norm_layer):
        super().__init__()
        use_bias = use_bias_of(norm_layer)
        kw, padw = 4, 1
        seq = [nn.Conv2d(input_nc, ndf, kernel_size=kw, stride=2, padding=padw), nn.LeakyReLU(0.2, True)]
        nf_mult = 1
        for n in range(1, n_layers):
            prev, nf_mult = nf_mult, min(2 ** n, 8)
            seq += [nn.Conv2d(ndf * prev, ndf * nf_mult, kernel_size=kw, stride=2, padding=padw, bias=use_bias),
                    norm_layer(ndf * nf_mult), nn.LeakyReLU(0.2, True)]
        prev, nf_mult = nf_mult, min(2 ** n_layers, 8)
        seq += [nn.Conv2d(ndf * prev, ndf * nf_mult, kernel_size=kw, stride=1, padding=padw, bias=use_bias),
                norm_layer(ndf * nf_mult), nn.LeakyReLU(0.2, True)]
        seq += [nn.Conv2d(ndf * nf_mult, 1, kernel_size=kw, stride=1, padding=padw)]
        self.model = nn.Sequential(*seq)

    def forward(self, x):
        return self.model(x)


def norm_layer(kind):
    if kind == 'batch':
        return functools.partial(nn.BatchNorm2d, affine=True, track_running_stats=True)
    return functools.partial(nn.InstanceNorm2d, affine=False, track_running_stats=False)


# ------------------------------------------------------------------ VGG16 features (torchvision)
def vgg16_features():
    layers, c = [], 3
    for v in [64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M', 512, 512, 512, 'M', 512, 512, 512, 'M']:
        if v == 'M':
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(c, v, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            c = v
    return nn.Sequential(*layers)


class VGGTaps(nn.Module):
    """features[0:23] with the four taps of the reference's Vgg16 wrapper."""

    def __init__(self):
        super().__init__()
        self.features = vgg16_features()[:23]

    def forward(self, x):
        taps = []
        for i, m in enumerate(self.features):
            x = m(x)
            if i in (3, 8, 15, 22):
                taps.append(x)
        return taps


# ------------------------------------------------------------------ Inception-v3 (torchvision + pytorch-fid)
class BasicConv2d(nn.Module):
    def __init__(self, in_channels, out_channels, **kwargs):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)), inplace=True)


class InceptionA(nn.Module):
    def __init__(self, in_channels, pool_features):
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, kernel_size=1)


class FIDInceptionA(InceptionA):
    def forward(self, x):
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        # Patch: TensorFlow's average pool does not count the padded zeros.
        bp = self.branch_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False))
        return torch.cat([b1, b5, b3, bp], 1)


class InceptionB(nn.Module):
    def __init__(self, in_channels):
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3(x)
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([b3, bd, bp], 1)


class InceptionC(nn.Module):
    def __init__(self, in_channels, channels_7x7):
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)


class FIDInceptionC(InceptionC):
    def forward(self, x):
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = self.branch7x7dbl_1(x)
        for m in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            bd = m(bd)
        bp = self.branch_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False))
        return torch.cat([b1, b7, bd, bp], 1)


class InceptionD(nn.Module):
    def __init__(self, in_channels):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([b3, b7, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionE(nn.Module):
    def __init__(self, in_channels):
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def branches(self, x):
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        return b1, b3, bd


class FIDInceptionE_1(InceptionE):
    def forward(self, x):
        b1, b3, bd = self.branches(x)
        bp = self.branch_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False))
        return torch.cat([b1, b3, bd, bp], 1)


class FIDInceptionE_2(InceptionE):
    def forward(self, x):
        b1, b3, bd = self.branches(x)
        # Patch: the TensorFlow graph max-pools in the last block.
        bp = self.branch_pool(F.max_pool2d(x, kernel_size=3, stride=1, padding=1))
        return torch.cat([b1, b3, bd, bp], 1)


class FIDInception3(nn.Module):
    """torchvision inception_v3(num_classes=1008, aux_logits=False) after fid_inception_v3's patches:
    the same attributes in the same order, so the same state_dict."""

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.maxpool1 = nn.MaxPool2d(kernel_size=3, stride=2)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.maxpool2 = nn.MaxPool2d(kernel_size=3, stride=2)
        self.Mixed_5b = FIDInceptionA(192, pool_features=32)
        self.Mixed_5c = FIDInceptionA(256, pool_features=64)
        self.Mixed_5d = FIDInceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
        self.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = FIDInceptionE_1(1280)
        self.Mixed_7c = FIDInceptionE_2(2048)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout()
        self.fc = nn.Linear(2048, 1008)


class FIDFeatures(nn.Module):
    """pytorch-fid's InceptionV3(output_blocks=[3]) forward: resize, 2x-1, blocks 0-3, pool."""

    def __init__(self, inception):
        super().__init__()
        i = inception
        self.inception = i
        self.blocks = [
            [i.Conv2d_1a_3x3, i.Conv2d_2a_3x3, i.Conv2d_2b_3x3, nn.MaxPool2d(kernel_size=3, stride=2)],
            [i.Conv2d_3b_1x1, i.Conv2d_4a_3x3, nn.MaxPool2d(kernel_size=3, stride=2)],
            [i.Mixed_5b, i.Mixed_5c, i.Mixed_5d, i.Mixed_6a, i.Mixed_6b, i.Mixed_6c, i.Mixed_6d, i.Mixed_6e],
            [i.Mixed_7a, i.Mixed_7b, i.Mixed_7c, nn.AdaptiveAvgPool2d(output_size=(1, 1))],
        ]

    def forward(self, x):
        x = F.interpolate(x, size=(299, 299), mode='bilinear', align_corners=False)
        x = 2 * x - 1
        for block in self.blocks:
            for m in block:
                x = m(x)
        return x.flatten(1)


def check_against_torchvision(vgg, inception):
    try:
        import torchvision
    except ImportError:
        return
    tv = torchvision.models.vgg16().features[:23].state_dict()
    ours = vgg.features.state_dict()
    assert [(k, tuple(v.shape)) for k, v in tv.items()] == [(k, tuple(v.shape)) for k, v in ours.items()], 'vgg16'
    ti = torchvision.models.inception_v3(weights=None, num_classes=1008, aux_logits=False, init_weights=False)
    tv = ti.state_dict()
    ours = inception.state_dict()
    assert [(k, tuple(v.shape)) for k, v in tv.items()] == [(k, tuple(v.shape)) for k, v in ours.items()], 'inception'
    print('state_dict names and shapes match torchvision', torchvision.__version__, file=sys.stderr)


# ------------------------------------------------------------------ files
def write_safetensors(path, tensors):
    """tensors: ordered dict name -> torch tensor (float32 or int64)."""
    header, blobs, off = {}, [], 0
    for name, t in tensors.items():
        a = t.detach().cpu().contiguous().numpy()
        if a.dtype == np.int64:
            dt = 'I64'
        else:
            a, dt = a.astype('<f4'), 'F32'
        b = a.tobytes()
        header[name] = {'dtype': dt, 'shape': list(a.shape), 'data_offsets': [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(',', ':')).encode()
    h += b' ' * ((8 - len(h) % 8) % 8)
    with open(path, 'wb') as f:
        f.write(struct.pack('<Q', len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def randomize(model, gen, std=None):
    """Seeded random weights; batch norms get non-trivial affine parameters and statistics."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                fan_in = m.weight[0].numel() if isinstance(m, nn.Conv2d) else m.weight.shape[0] * m.weight[0, 0].numel()
                s = std if std is not None else (2.0 / fan_in) ** 0.5
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * s)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=gen))
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=gen))
                m.num_batches_tracked.fill_(7)


def calibrate(model, run, x):
    """Sets every batch norm's running statistics to those of x (momentum 1), so that a deep
    network with random weights keeps activations of order 1 in evaluation mode."""
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in bns:
        m.momentum = 1.0
    model.train()
    with torch.no_grad():
        run(x)
    for m in bns:
        m.momentum = 0.1
        m.num_batches_tracked.fill_(7)


def spec(arch, **kw):
    s = {'arch': arch, 'ngf': 0, 'ndf': 0, 'in_c': 0, 'out_c': 0, 'blocks': 0, 'downs': 0, 'layers': 0, 'norm': ''}
    s.update(kw)
    return s


def main(out):
    torch.set_num_threads(2)
    cases = []

    def emit(name, s, model, run, x, train, fmt, grads, extra_tensors=None, drop=(), save=True):
        """Writes the weights (unless save is False: a case reusing another's file), runs the
        model on x in the given mode and writes the io file."""
        gen = torch.Generator().manual_seed(len(cases) + 1000)
        sd = model.state_dict()
        weights = sd.copy()
        for k in drop:
            weights = {n: v for n, v in weights.items() if not n.endswith(k)}
        if extra_tensors:
            weights.update(extra_tensors)
        ext = '.safetensors' if fmt == 'safetensors' else '.pth'
        wfile = name + ext
        if save:
            if fmt == 'safetensors':
                write_safetensors(os.path.join(out, wfile), weights)
            else:
                torch.save(weights, os.path.join(out, wfile), _use_new_zipfile_serialization=(fmt == 'zip'))
        else:
            wfile = save_from[0]
        model.train(train)
        x = x.clone().requires_grad_(grads)
        with torch.set_grad_enabled(grads):
            y = run(x)
        ys = y if isinstance(y, list) else [y]
        io = {'input': x.detach()}
        outs = []
        for i, t in enumerate(ys):
            io['out%d' % i] = t.detach()
            outs.append('out%d' % i)
        if grads:
            r = torch.randn(ys[0].shape, generator=gen)
            model.zero_grad()
            (r * ys[0]).sum().backward()
            io['r'] = r
            io['grad.input'] = x.grad
            for n, p in model.named_parameters():
                io['grad.' + n] = p.grad
        if train:
            for n, b in model.named_buffers():
                if n.endswith('running_mean') or n.endswith('running_var'):
                    io['after.' + n] = b
        write_safetensors(os.path.join(out, name + '_io.safetensors'), io)
        cases.append({'name': name, 'spec': s, 'train': train, 'weights': wfile, 'io': name + '_io.safetensors',
                      # fc.* of the Inception file is not part of the FID network
                      'params': sum(p.numel() for n, p in model.named_parameters() if not n.startswith('fc.')),
                      'outputs': outs, 'grads': grads})
        save_from[0] = wfile

    save_from = [None]
    gen = torch.Generator().manual_seed(233)

    def img(*shape, lo=-1.2, hi=1.2):
        return lo + (hi - lo) * torch.rand(shape, generator=gen)

    # Generators and discriminators: 64x64, batch 2 where batch norm trains.
    gens = [
        ('resnet_in', spec('resnet_9blocks', ngf=8, in_c=3, out_c=3, blocks=9, norm='instance'), False, 1, 'safetensors'),
        ('resnet_bn_train', spec('resnet_9blocks', ngf=8, in_c=3, out_c=3, blocks=2, norm='batch'), True, 2, 'zip'),
        ('mobile_in', spec('mobile_resnet_9blocks', ngf=16, in_c=3, out_c=3, blocks=9, norm='instance'), False, 1, 'safetensors'),
        ('mobile_bn_eval', spec('mobile_resnet_9blocks', ngf=8, in_c=3, out_c=3, blocks=3, norm='batch'), False, 2, 'legacy'),
        ('unet_bn_train', spec('unet_256', ngf=8, in_c=3, out_c=3, downs=6, norm='batch'), True, 2, 'safetensors'),
        ('unet_bn_eval', spec('unet_256', ngf=8, in_c=3, out_c=3, downs=6, norm='batch'), False, 2, 'zip'),
        ('unet_in', spec('unet_256', ngf=8, in_c=3, out_c=3, downs=6, norm='instance'), False, 1, 'safetensors'),
    ]
    for name, s, train, n, fmt in gens:
        if s['arch'] == 'unet_256':
            m = UnetGenerator(s['in_c'], s['out_c'], s['downs'], s['ngf'], norm_layer(s['norm']))
        else:
            m = ResnetGenerator(s['in_c'], s['out_c'], s['ngf'], norm_layer(s['norm']), n_blocks=s['blocks'],
                                mobile=s['arch'] == 'mobile_resnet_9blocks')
        randomize(m, gen)
        emit(name, s, m, m, img(n, 3, 64, 64), train, fmt, True)

    discs = [
        ('patchgan_in', spec('patchgan', ndf=16, in_c=3, layers=3, norm='instance'), False, 1, 'safetensors'),
        ('patchgan_bn_train', spec('patchgan', ndf=16, in_c=6, layers=3, norm='batch'), True, 2, 'legacy'),
        ('patchgan_bn_eval', spec('patchgan', ndf=16, in_c=6, layers=3, norm='batch'), False, 2, 'zip'),
    ]
    for name, s, train, n, fmt in discs:
        m = NLayerDiscriminator(s['in_c'], s['ndf'], s['layers'], norm_layer(s['norm']))
        randomize(m, gen)
        emit(name, s, m, m, img(n, s['in_c'], 64, 64), train, fmt, True)

    # VGG16 features, in torchvision's file layout: layers past relu4_3 and the classifier
    # are present (small stand-ins: the loader must ignore them).
    vgg = VGGTaps()
    randomize(vgg, gen)
    extra = {'features.24.weight': torch.zeros(4, 4, 3, 3), 'features.24.bias': torch.zeros(4),
             'classifier.0.weight': torch.zeros(8, 16), 'classifier.0.bias': torch.zeros(8),
             'classifier.6.weight': torch.zeros(10, 8), 'classifier.6.bias': torch.zeros(10)}
    emit('vgg16', spec('vgg16'), vgg, vgg, img(1, 3, 64, 64, lo=0, hi=1), False, 'legacy', False,
         extra_tensors=extra)

    # Inception for FID: calibrated statistics, evaluation mode, weights as pytorch-fid's file
    # (fc present, no num_batches_tracked), at 299 and at a non-square size that is resized.
    inc = FIDInception3()
    randomize(inc, gen)
    feats = FIDFeatures(inc)
    calibrate(inc, feats, img(1, 3, 299, 299, lo=0, hi=1))
    check_against_torchvision(vgg, inc)
    emit('inception_299', spec('inception_v3'), inc, feats, img(1, 3, 299, 299, lo=0, hi=1), False, 'zip', False,
         drop=('num_batches_tracked',))
    emit('inception_resize', spec('inception_v3'), inc, feats, img(1, 3, 96, 128, lo=0, hi=1), False, 'zip', False,
         save=False)

    with open(os.path.join(out, 'manifest.json'), 'w') as f:
        json.dump({'torch': torch.__version__, 'cases': cases}, f, indent=1)


if __name__ == '__main__':
    if len(sys.argv) != 2:
        sys.exit('usage: torch_models.py OUTDIR')
    main(sys.argv[1])
