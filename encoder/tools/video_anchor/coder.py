"""Encoder side of the video anchor (MPEG-VCM track 1 / FCM-LM "VTM baseline" style).

    each tensor ─► clip to [TruncationMin, TruncationMax] ─► m, M (binary32, rounded outwards)
    ─► levels v = round((f − m) / s), s = (M − m) / 1023 ─► tiles
    ─► one 10-bit 4:0:0 picture per tensor (AnchorPacking tensor), or one for all (frame:
       MPEG-VCM's packing, each tensor a full-width band below the previous one)
    ─► x265, VTM or VVenC intra at QP ─► inner bitstream = tdu_entropy_payload of the picture's first tensor
       (the VVC encoders' reconstruction must equal the decoder's picture)

The reconstruction comes from the decoder's own code (common/tools/video_anchor/decode.py:
libde265-dec265, VTM's DecoderApp or VVdeC on the inner bitstream), so the encoder's
decoded-feature hash is what the decoder will compute. Only the choices live here
(truncation, tile layout, padding, the inner encoder: inner_encoder.py) and the coder
TENSOR_CODERS names for Tool anchor (code_anchor_tensors); the format is in
common/tools/video_anchor/format.py.
"""

import dataclasses
import math
import time
from dataclasses import dataclass

import numpy as np

from common.codepoints import Layout, Tool
from common.errors import ConfigError, ExternalToolError, InputError
from common.features import TensorSpec
from common.limits import MAX_NAME_BYTES
from common.tools.video_anchor.decode import InnerPicture, video_anchor_tensor
from common.tools.video_anchor.format import (ANCHOR_BIT_DEPTH, F32_MAX, MAX_PICTURE_DIM, MAX_PICTURE_SAMPLES,
                                              AnchorParams, place_levels, tile_grid)
from encoder.tools.interface import CodedTensor, tensor_spec
from encoder.tools.video_anchor.inner_encoder import INNER_ENCODERS, encode_picture

PICTURE_ALIGNMENT = 8          # picture sizes: multiples of the minimum coding block of HEVC and VVC
MIN_PICTURE_SIZE = 64          # x265 refuses pictures smaller than one 64×64 CTU


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


@dataclass(frozen=True)
class PictureLayout:
    """Where the tensors of one picture go: per tensor (tile_channels, tile_columns, origin_y),
    and the padded picture size."""
    tensors: tuple
    width: int
    height: int


def tile_channels_of(layout, shape):
    """Channels per tile: 1 for a C×H×W map; a token matrix is cut into round(sqrt(C / N))
    column strips so that the stacked strips are near-square."""
    if layout == Layout.CHW:
        return 1
    num_tokens, channels = shape
    strips = min(channels, max(1, round(math.sqrt(channels / num_tokens))))
    return -(-channels // strips)


def choose_picture_layout(tensors):
    """The PictureLayout of tensors [(layout, shape)] stacked in one picture, each a band of the
    picture's full width below the previous one (MPEG-VCM's one-frame packing; one tensor: its own
    picture). The common width is chosen for the smallest padded picture, then the fewest empty
    tiles, then the squarest, then the widest, among pictures with an aspect ratio of at most 2
    (any that fits if none has). None when no width fits the picture limits."""
    channels = [tile_channels_of(layout, shape) for layout, shape in tensors]
    grids = [tile_grid(layout, shape, c, 1) for (layout, shape), c in zip(tensors, channels)]
    widest_tile = max(grid.tile_width for grid in grids)
    widths = sorted({columns * grid.tile_width for grid in grids
                     for columns in range(1, min(grid.num_tiles, MAX_PICTURE_DIM // grid.tile_width) + 1)})
    best = None
    for width in (w for w in widths if w >= widest_tile):
        placed, height, empty_tiles = [], 0, 0
        for (layout, shape), c, grid in zip(tensors, channels, grids):
            candidate = tile_grid(layout, shape, c, min(grid.num_tiles, width // grid.tile_width))
            placed.append((c, candidate.columns, height))
            height += candidate.height
            empty_tiles += candidate.rows * candidate.columns - candidate.num_tiles
        picture_width, picture_height = padded_size(width), padded_size(height)
        if (picture_width > MAX_PICTURE_DIM or picture_height > MAX_PICTURE_DIM
                or picture_width * picture_height > MAX_PICTURE_SAMPLES):
            continue
        aspect = round(abs(math.log(picture_width / picture_height)), 9)   # w×h and h×w tie exactly
        key = (aspect > math.log(2), picture_width * picture_height, empty_tiles, aspect, -width)
        if best is None or key < best[0]:
            best = key, PictureLayout(tuple(placed), picture_width, picture_height)
    return None if best is None else best[1]


def choose_tile_layout(layout, shape):
    """(tile_channels, tile_columns) of a tensor alone in its picture; None when it does not fit."""
    picture = choose_picture_layout([(layout, shape)])
    return None if picture is None else picture.tensors[0][:2]


@dataclass(frozen=True)
class TensorLevels:
    """One tensor min-max quantised: its signalled range and levels."""
    spec: TensorSpec
    min_value: float
    max_value: float
    levels: np.ndarray
    zero_level: int


def tensor_levels(base_spec, array, options):
    """Clip to the truncation range, bound in binary32, quantise to ANCHOR_BIT_DEPTH-bit levels."""
    low_clip, high_clip = options["TruncationMin"], options["TruncationMax"]
    if low_clip > high_clip:
        raise ConfigError(f"TruncationMin ({low_clip:g}) is above TruncationMax ({high_clip:g})")
    values = np.clip(array.astype(np.float64).reshape(base_spec.shape), low_clip, high_clip)
    low, high = float32_bounds(float(values.min()), float(values.max()))
    levels, zero_level = quantise_levels(values, low, high, ANCHOR_BIT_DEPTH)
    return TensorLevels(base_spec, low, high, levels, zero_level)


def encode_video_anchor(base_specs, arrays, options):
    """Code tensors with the video anchor: one picture per tensor (AnchorPacking tensor) or all in
    one picture (frame). `base_specs` (TensorSpecs) give names, layouts, dtypes, shapes and batch
    axes; returns one AnchorCoding per tensor (a tensor sharing a picture has an empty payload)."""
    quantised = [tensor_levels(spec, array, options) for spec, array in zip(base_specs, arrays)]
    if options["AnchorPacking"] == "frame":
        return _code_picture(quantised, options)
    return [coding for tensor in quantised for coding in _code_picture([tensor], options)]


def _code_picture(quantised, options):
    """One inner picture holding the tensors `quantised` (TensorLevels), coded and decoded back."""
    layout = choose_picture_layout([(t.spec.layout, t.spec.shape) for t in quantised])
    if layout is None:
        limit = f"a {MAX_PICTURE_DIM}×{MAX_PICTURE_DIM} picture of at most {MAX_PICTURE_SAMPLES} samples"
        if len(quantised) > 1:
            raise InputError(f"the {len(quantised)} tensors do not fit together in {limit} (AnchorPacking tensor "
                             "gives each its own picture)")
        name, shape = quantised[0].spec.name, quantised[0].spec.shape
        raise InputError(f"{f'tensor {name!r}' if name else 'the input tensor'}: shape {shape} does not fit in {limit}")
    codec = INNER_ENCODERS[options["InnerCodec"]][0]
    picture = np.full((layout.height, layout.width), quantised[0].zero_level, dtype=np.uint16)
    specs = []
    for index, (tensor, (tile_channels, tile_columns, origin_y)) in enumerate(zip(quantised, layout.tensors)):
        params = AnchorParams(inner_codec=codec, bit_depth=ANCHOR_BIT_DEPTH, min_value=tensor.min_value,
                              max_value=tensor.max_value, picture_width=layout.width, picture_height=layout.height,
                              tile_columns=tile_columns, tile_channels=tile_channels, shared_picture=index > 0,
                              origin_x=0, origin_y=origin_y)
        place_levels(picture, tensor.spec.layout, tensor.spec.shape, tensor.levels, params, fill=tensor.zero_level)
        specs.append(dataclasses.replace(tensor.spec, tool=Tool.VIDEO_ANCHOR, qp=0, step_map=False, anchor=params))
    inner = encode_picture(options["InnerCodec"], [picture], ANCHOR_BIT_DEPTH, options["QP"],
                           vtm_cfg=options["VtmEncoderCfg"], vvenc_preset=options["VvencPreset"],
                           program=options["InnerEncoder"])
    if options["InnerCodecInfo"]:
        info = inner.encoder_info.encode("utf-8")[:MAX_NAME_BYTES].decode("utf-8", "ignore")
        specs[0] = dataclasses.replace(specs[0], anchor=dataclasses.replace(specs[0].anchor, encoder_info=info))
    decoded = InnerPicture(specs[0].anchor, inner.data)       # the decoder's own code reconstructs
    if inner.reconstruction is not None and not np.array_equal(inner.reconstruction, decoded.picture()):
        raise ExternalToolError(f"{inner.encoder_info}'s reconstruction differs from the decoded picture: the "
                                "inner encoder and decoder disagree")
    return [AnchorCoding(spec=spec, payload=inner.data if index == 0 else b"",
                         reconstruction=video_anchor_tensor(spec, decoded.picture()),
                         encoder_info=inner.encoder_info if index == 0 else "",
                         encoder_seconds=inner.seconds if index == 0 else 0.0)
            for index, spec in enumerate(specs)]


def code_anchor_tensors(tensors, options, step_offsets, step_allocator):
    """Video anchor: min-max levels tiled into one picture per tensor or one for all (AnchorPacking),
    coded by the inner video codec; the encoding time of a picture goes to its first tensor."""
    start = time.perf_counter()
    codings = encode_video_anchor([tensor_spec(name, array, 0, step_map=False) for name, array in tensors.items()],
                                  list(tensors.values()), options)
    seconds = time.perf_counter() - start
    total_inner = sum(coding.encoder_seconds for coding in codings) or 1.0
    # the wall time goes to the tensors that carry a picture, in proportion to their inner encoders
    return [CodedTensor(spec=coding.spec, payload=coding.payload, reconstruction=coding.reconstruction,
                        seconds=seconds * coding.encoder_seconds / total_inner, inner_codec=coding.encoder_info,
                        inner_seconds=coding.encoder_seconds) for coding in codings]
