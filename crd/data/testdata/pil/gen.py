#!/usr/bin/python3
"""Writes the PIL oracle images that crd/data's tests compare against.

Run from this directory with Debian's python3-pil and python3-numpy:

    /usr/bin/python3 gen.py

src.png is a 37x29 RGB image (smooth ramps, noise, sharp edges); every other file is what
Pillow makes of it: resize_WxH.png = src.resize((W, H), Image.BICUBIC), as the reference's
transforms.Resize([H, W], Image.BICUBIC) does; l.png = src.convert("L"); the decoded_*.png
files are Pillow's decoding, converted to RGB, of the files named after them.
"""
import numpy as np
from PIL import Image

rng = np.random.default_rng(1)
h, w = 29, 37
y, x = np.mgrid[0:h, 0:w]
img = np.zeros((h, w, 3), np.float64)
img[..., 0] = 255 * x / (w - 1)
img[..., 1] = 255 * y / (h - 1)
img[..., 2] = 128 + 100 * np.sin(x / 3.0) * np.cos(y / 4.0)
img[8:20, 10:22] = (250, 20, 20)               # a sharp-edged square: ringing, clipping
img[22:, :] += rng.normal(0, 40, (h - 22, w, 3))  # noise in the bottom rows
src = Image.fromarray(np.clip(img, 0, 255).round().astype(np.uint8), "RGB")
src.save("src.png")

for size in [(48, 48), (64, 40), (17, 13), (5, 3), (37, 60), (20, 29), (1, 1)]:
    src.resize(size, Image.BICUBIC).save("resize_%dx%d.png" % size)

l = src.convert("L")
l.save("l.png")
l.resize((30, 30), Image.BICUBIC).save("l_resize_30x30.png")

src.save("src.jpg", quality=90)  # Pillow's default 4:2:0 chroma subsampling
Image.open("src.jpg").convert("RGB").save("decoded_src.jpg.png")
src.save("src422.jpg", quality=90, subsampling=1)
Image.open("src422.jpg").convert("RGB").save("decoded_src422.jpg.png")
src.save("src444.jpg", quality=95, subsampling=0)
Image.open("src444.jpg").convert("RGB").save("decoded_src444.jpg.png")
l.save("l.jpg", quality=90)
Image.open("l.jpg").convert("RGB").save("decoded_l.jpg.png")

src.quantize(16).save("paletted.png")
Image.open("paletted.png").convert("RGB").save("decoded_paletted.png.png")
rgba = src.copy()
rgba.putalpha(Image.fromarray((255 * x / (w - 1)).astype(np.uint8), "L"))
rgba.save("rgba.png")
Image.open("rgba.png").convert("RGB").save("decoded_rgba.png.png")
