"""TAEF2, the tiny autoencoder of the FLUX.2 latent space (madebyollin/taesd), written from its
weights' README (../shared/data/weights/README.md): the VAE-latent task network of the
large-model conditions, split at the decoder's input (FCM-LM's text-to-image split in miniature).

    RGB image in [0, 1], H and W multiples of 8
      │ front = encoder: conv 3→64, block, [stride-2 conv, 3 blocks] × 3, conv 64→32
      ▼
    latent 32 × H/8 × W/8 (values about ±3): the feature
      │ back = decoder: tanh(x/3)·3, conv 32→64, ReLU, [3 blocks, 2× nearest up-sampling, conv] × 3,
      ▼        block, conv 64→3, clamp to [0, 1]
    image

A block is 3×3 conv → ReLU → 3×3 conv → ReLU → 3×3 conv plus the input, through a ReLU; the
three blocks at the lowest resolution of each half first add a "pool" branch to their input
(1×1 conv to 256 → GroupNorm(4) → ReLU → 1×1 conv back to 64). Weights: the two PyTorch state
dicts from a path the user gives (never downloaded); every tensor must match.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from common.errors import InputError
from ctc.tasks.state_dict import load_exactly

WIDTH = 64
LATENT_CHANNELS = 32
POOL_WIDTH = 256
SCALE = 8
ENCODER_FILE = "taef2_encoder.pth"
DECODER_FILE = "taef2_decoder.pth"


def conv(c_in, c_out, stride=1, bias=True):
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=bias)


class Block(nn.Module):
    def __init__(self, pool=False):
        super().__init__()
        self.conv = nn.Sequential(conv(WIDTH, WIDTH), nn.ReLU(), conv(WIDTH, WIDTH), nn.ReLU(), conv(WIDTH, WIDTH))
        self.pool = nn.Sequential(nn.Conv2d(WIDTH, POOL_WIDTH, 1, bias=False), nn.GroupNorm(4, POOL_WIDTH), nn.ReLU(),
                                  nn.Conv2d(POOL_WIDTH, WIDTH, 1, bias=False)) if pool else None

    def forward(self, x):
        if self.pool is not None:
            x = x + self.pool(x)
        return F.relu(self.conv(x) + x)


class Clamp(nn.Module):
    def forward(self, x):
        return torch.tanh(x / 3) * 3


def encoder():
    layers = [conv(3, WIDTH), Block()]
    for stage in range(3):
        layers += [conv(WIDTH, WIDTH, stride=2, bias=False)] + [Block(pool=stage == 2) for _ in range(3)]
    return nn.Sequential(*layers, conv(WIDTH, LATENT_CHANNELS))


def decoder():
    layers = [Clamp(), conv(LATENT_CHANNELS, WIDTH), nn.ReLU()]
    for stage in range(3):
        layers += [Block(pool=stage == 0) for _ in range(3)]
        layers += [nn.Upsample(scale_factor=2), conv(WIDTH, WIDTH, bias=False)]
    return nn.Sequential(*layers, Block(), conv(WIDTH, 3))


class Taef2(nn.Module):
    """``front(images) -> latent`` (B×32×H/8×W/8) and ``back(latent) -> images`` (B×3×H×W in [0, 1]).
    ``weights``: the folder with taef2_encoder.pth and taef2_decoder.pth."""

    def __init__(self, weights):
        super().__init__()
        folder = Path(weights)
        self.encoder, self.decoder = encoder(), decoder()
        for half, name in ((self.encoder, ENCODER_FILE), (self.decoder, DECODER_FILE)):
            path = folder / name
            if not path.is_file():
                raise InputError(f"TAEF2 weight file not found: {path} (pass the folder holding {ENCODER_FILE} and "
                                 f"{DECODER_FILE}, e.g. ../shared/data/weights/taesd)")
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as exc:      # a damaged or foreign file: torch raises several kinds
                raise InputError(f"TAEF2 weight file {path} is unreadable: {str(exc).splitlines()[0]}") from None
            load_exactly(half, state, f"TAEF2 weight file {path}")
        self.requires_grad_(False).eval()

    def train(self, mode: bool = True):
        return super().train(False)

    def front(self, images):
        return self.encoder(images)

    def back(self, latent):
        return self.decoder(latent).clamp(0, 1)


def to_input(rgb):
    """RGB uint8 H×W×3 -> 1×3×H'×W' in [0, 1], cropped to multiples of 8 (top-left kept)."""
    height, width = (rgb.shape[0] // SCALE) * SCALE, (rgb.shape[1] // SCALE) * SCALE
    if height == 0 or width == 0:
        raise InputError(f"an image of {rgb.shape[0]}×{rgb.shape[1]} pixels is smaller than TAEF2's 8×8 latent cell")
    return torch.from_numpy(np.ascontiguousarray(rgb[:height, :width].transpose(2, 0, 1), dtype=np.float32) / 255)[None]


def centre_crop(rgb, side):
    """The centre side×side crop of an RGB image (side 0: the image itself); an InputError when the
    image is smaller."""
    if side == 0:
        return rgb
    height, width = rgb.shape[:2]
    if height < side or width < side:
        raise InputError(f"an image of {height}×{width} pixels is smaller than the {side}×{side} crop")
    top, left = (height - side) // 2, (width - side) // 2
    return rgb[top:top + side, left:left + side]


__all__ = ["Taef2", "to_input", "centre_crop"]
