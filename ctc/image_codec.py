"""The image anchor's codec (MPEG-VCM track 2 style): the input image is coded with a standard
codec and decoded; the runner then runs the whole network on the decoded image.

    RGB image (as read from disk) ─► YCbCr, BT.601 full range (JFIF), numpy ─► 4:2:0 (2×2 means)
    ─► x265 intra, 8 bits, one picture at QP ─► libde265-dec265 ─► chroma repeated 2×2
    ─► RGB ─► the network's own preprocessing ─► whole network ─► prediction

Rate: bits of the HEVC stream per input pixel, bpp = 8 · len(stream) / (W · H) of the
image as read (before the network's resize and crop). The picture is padded by edge
replication to multiples of 8 (and at least 64 × 64, one x265 CTU); the decoded picture
is cropped back, so the crop size travels outside the HEVC stream (a few bits a real
system would signal in the conformance window; not counted).

x265 gets the feature anchor's flags (`--ipratio 1` so that --qp is the intra picture's
QP, `--no-info` so that no 2,200-byte version SEI is counted, one thread) with the 8-bit
4:2:0 still-picture profile, and `--range full --colormatrix bt470bg` to label the colour
conversion in the stream's VUI.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from common.codepoints import InnerCodec
from common.tools.video_anchor.inner_decoder import decode_picture
from encoder.tools.video_anchor.inner_encoder import encode_picture

# BT.601 full range (JFIF): Y, Cb, Cr in 0..255 from R, G, B in 0..255.
RGB_TO_YCBCR = np.array([[0.299, 0.587, 0.114],
                         [-0.168735892, -0.331264108, 0.5],
                         [0.5, -0.418687589, -0.081312411]])
YCBCR_TO_RGB = np.linalg.inv(RGB_TO_YCBCR)
CHROMA_OFFSET = np.array([0.0, 128.0, 128.0])
X265_IMAGE_ARGS = ("--range", "full", "--colormatrix", "bt470bg")
MIN_PICTURE_SIZE = 64
ALIGNMENT = 8


@dataclass
class CodedImage:
    decoded: np.ndarray       # H×W×3 uint8 RGB, the input's size
    bits: int                 # HEVC stream bits
    bpp: float                # bits per input pixel
    encode_seconds: float
    decode_seconds: float
    encoder_info: str


def rgb_to_ycbcr(rgb):
    """H×W×3 uint8 RGB -> H×W×3 float64 Y, Cb, Cr (BT.601 full range, not rounded)."""
    return rgb.astype(np.float64) @ RGB_TO_YCBCR.T + CHROMA_OFFSET


def ycbcr_to_rgb(ycbcr):
    """H×W×3 Y, Cb, Cr -> H×W×3 uint8 RGB (rounded, clipped)."""
    rgb = (ycbcr - CHROMA_OFFSET) @ YCBCR_TO_RGB.T
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def padded_size(samples):
    return max(MIN_PICTURE_SIZE, -(-samples // ALIGNMENT) * ALIGNMENT)


def to_planes_420(rgb):
    """[Y, Cb, Cr] uint8 planes of the image padded by edge replication; chroma as 2×2 means."""
    height, width = rgb.shape[:2]
    padded = np.pad(rgb, ((0, padded_size(height) - height), (0, padded_size(width) - width), (0, 0)), mode="edge")
    ycbcr = rgb_to_ycbcr(padded)
    luma = ycbcr[..., 0]
    h, w = luma.shape
    chroma = ycbcr[..., 1:].reshape(h // 2, 2, w // 2, 2, 2).mean(axis=(1, 3))
    to_u8 = lambda plane: np.clip(np.rint(plane), 0, 255).astype(np.uint8)
    return [to_u8(luma), to_u8(chroma[..., 0]), to_u8(chroma[..., 1])]


def from_planes_420(planes, height, width):
    """H×W×3 uint8 RGB from decoded [Y, Cb, Cr] planes: chroma repeated 2×2, then cropped."""
    luma, cb, cr = (p.astype(np.float64) for p in planes)
    up = lambda plane: plane.repeat(2, axis=0).repeat(2, axis=1)[:luma.shape[0], :luma.shape[1]]
    ycbcr = np.stack([luma, up(cb), up(cr)], axis=-1)[:height, :width]
    return ycbcr_to_rgb(ycbcr)


def code_image(rgb, qp):
    """Code an H×W×3 uint8 RGB image with x265 at `qp`, decode it with libde265-dec265."""
    height, width = rgb.shape[:2]
    planes = to_planes_420(rgb)
    start = time.perf_counter()
    inner = encode_picture("hevc", planes, 8, qp, chroma_format="420", extra_args=X265_IMAGE_ARGS)
    encode_seconds = time.perf_counter() - start
    start = time.perf_counter()
    decoded = decode_picture(InnerCodec.HEVC, inner.data, planes[0].shape[1], planes[0].shape[0], 8, "420")
    decode_seconds = time.perf_counter() - start
    bits = 8 * len(inner.data)
    return CodedImage(decoded=from_planes_420(decoded, height, width), bits=bits, bpp=bits / (height * width),
                      encode_seconds=encode_seconds, decode_seconds=decode_seconds, encoder_info=inner.encoder_info)


def psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)
