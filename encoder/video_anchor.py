"""Encoder side of the video anchor (MPEG-VCM track 1 / FCM-LM "VTM baseline" style).

    tensor ─► clip to [TruncationMin, TruncationMax] ─► m, M (binary32, rounded outwards)
    ─► levels v = round((f − m) / s), s = (M − m) / 1023 ─► tiles ─► one 10-bit 4:0:0 picture
    ─► x265 (or VTM) intra at QP ─► inner bitstream = tdu_entropy_payload

The reconstruction comes from the decoder's own code (libde265-dec265 or VTM's
DecoderApp on the inner bitstream), so the encoder's decoded-feature hash is
what the decoder will compute. Only the choices live here (truncation, tile
layout, padding, the inner encoder); the format is in common/video_anchor.py.
"""

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from common.codepoints import InnerCodec, Layout, Tool
from common.errors import ConfigError, InputError
from common.features import TensorSpec
from common.syntax_structures import MAX_NAME_BYTES
from common.video_anchor import (ANCHOR_BIT_DEPTH, F32_MAX, MAX_PICTURE_DIM, MAX_PICTURE_SAMPLES, AnchorParams,
                                 levels_to_picture, tile_grid)
from decoder.decoder import decode_video_anchor_tensor
from encoder.inner_codec import encode_picture

PICTURE_ALIGNMENT = 8          # picture sizes: multiples of the minimum coding block of HEVC and VVC
MIN_PICTURE_SIZE = 64          # x265 refuses pictures smaller than one 64×64 CTU
INNER_CODECS = {"hevc": InnerCodec.HEVC, "vtm": InnerCodec.VVC}


@dataclass(frozen=True)
class AnchorCoding:
    spec: TensorSpec
    payload: bytes            # the inner bitstream
    reconstruction: np.ndarray
    encoder_info: str         # the inner encoder and its version (in the stream only with InnerCodecInfo)
    encoder_seconds: float    # wall time of the external encoder alone


def float32_bounds(low, high):
    """[low, high] widened to the nearest binary32 values that enclose it."""
    if not (-F32_MAX <= low and high <= F32_MAX):
        raise InputError(f"values up to {max(abs(low), abs(high)):.3g} in magnitude: the video anchor signals "
                         "its value range as float32 (set TruncationMin / TruncationMax)")
    low32, high32 = np.float32(low), np.float32(high)
    if float(low32) > low:
        low32 = np.nextafter(low32, np.float32(-np.inf))
    if float(high32) < high:
        high32 = np.nextafter(high32, np.float32(np.inf))
    return float(low32), float(high32)


def quantise_levels(values, low, high, bit_depth):
    """v = clip(round((f − m) / s), 0, L) with s = (M − m) / L, the decoder's step."""
    top = (1 << bit_depth) - 1
    step = (np.float64(high) - np.float64(low)) / np.float64(top)
    if step == 0:
        return np.zeros(values.shape, dtype=np.uint16), 0
    levels = np.clip(np.rint((values - low) / step), 0, top).astype(np.uint16)
    zero_level = int(np.clip(np.rint((0.0 - low) / step), 0, top))
    return levels, zero_level


def padded_size(samples):
    """A picture dimension padded to the alignment and the minimum size."""
    return max(MIN_PICTURE_SIZE, -(-samples // PICTURE_ALIGNMENT) * PICTURE_ALIGNMENT)


def choose_tile_layout(layout, shape):
    """(tile_channels, tile_columns): the smallest padded picture, then the fewest empty
    tiles, then the squarest, then the most tile columns, among grids with an aspect ratio
    of at most 2 (any grid that fits if none has). Token matrices are cut into round(sqrt(C / N)) column strips so
    that the stacked strips are near-square. None when no grid fits the picture limits."""
    if layout == Layout.CHW:
        tile_channels = 1
    else:
        num_tokens, channels = shape
        strips = min(channels, max(1, round(math.sqrt(channels / num_tokens))))
        tile_channels = -(-channels // strips)
    grid = tile_grid(layout, shape, tile_channels, 1)
    best = None
    for columns in range(1, min(grid.num_tiles, MAX_PICTURE_DIM // grid.tile_width) + 1):
        candidate = tile_grid(layout, shape, tile_channels, columns)
        width, height = padded_size(candidate.width), padded_size(candidate.height)
        if width > MAX_PICTURE_DIM or height > MAX_PICTURE_DIM or width * height > MAX_PICTURE_SAMPLES:
            continue
        aspect = round(abs(math.log(width / height)), 9)   # w×h and h×w tie exactly
        empty_tiles = candidate.rows * columns - candidate.num_tiles
        key = (aspect > math.log(2), width * height, empty_tiles, aspect, -columns)
        best = key if best is None or key < best else best
    return None if best is None else (tile_channels, -best[-1])


def encode_video_anchor_tensor(base_spec, array, options):
    """Code one tensor with the video anchor. `base_spec` (a TensorSpec) gives its name,
    layout, dtype, shape and batch axis; returns an AnchorCoding."""
    name, layout, shape = base_spec.name, base_spec.layout, base_spec.shape
    label = f"tensor '{name}'" if name else "the input tensor"
    low_clip, high_clip = options["TruncationMin"], options["TruncationMax"]
    if low_clip > high_clip:
        raise ConfigError(f"TruncationMin ({low_clip:g}) is above TruncationMax ({high_clip:g})")
    values = np.clip(array.astype(np.float64).reshape(shape), low_clip, high_clip)
    low, high = float32_bounds(float(values.min()), float(values.max()))
    levels, zero_level = quantise_levels(values, low, high, ANCHOR_BIT_DEPTH)

    layout_choice = choose_tile_layout(layout, shape)
    if layout_choice is None:
        raise InputError(f"{label}: shape {shape} does not fit in a {MAX_PICTURE_DIM}×{MAX_PICTURE_DIM} picture "
                         f"of at most {MAX_PICTURE_SAMPLES} samples")
    tile_channels, tile_columns = layout_choice
    grid = tile_grid(layout, shape, tile_channels, tile_columns)
    codec = INNER_CODECS[options["InnerCodec"]]
    params = AnchorParams(inner_codec=codec, bit_depth=ANCHOR_BIT_DEPTH, min_value=low, max_value=high,
                          picture_width=padded_size(grid.width), picture_height=padded_size(grid.height),
                          tile_columns=tile_columns, tile_channels=tile_channels)
    picture = levels_to_picture(layout, shape, levels, params, fill=zero_level)
    inner = encode_picture(codec, [picture], ANCHOR_BIT_DEPTH, options["QP"], vtm_cfg=options["VtmEncoderCfg"])
    if options["InnerCodecInfo"]:
        info = inner.encoder_info.encode("utf-8")[:MAX_NAME_BYTES].decode("utf-8", "ignore")
        params = dataclasses.replace(params, encoder_info=info)
    spec = dataclasses.replace(base_spec, tool=Tool.VIDEO_ANCHOR, qp=0, step_map=False, anchor=params)
    reconstruction = decode_video_anchor_tensor(spec, inner.data)
    return AnchorCoding(spec=spec, payload=inner.data, reconstruction=reconstruction,
                        encoder_info=inner.encoder_info, encoder_seconds=inner.seconds)
