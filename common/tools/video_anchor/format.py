"""Video anchor: a tensor as one monochrome picture coded by a standard video codec.

This module's docstring down to the first code line is the spec's section
"Video anchor" (copied into docs/bitstream.md by common/specdoc.py).

## Levels and reconstruction

A tensor with ti_tool_idc = 2 is carried as one monochrome picture of
B = va_bit_depth_minus8 + 8 bit samples (B = 10 in this version); each sample
of the picture that belongs to a tile (below) is the level v of one element.
With m = va_min_value, M = va_max_value and L = 2^B − 1, the decoded value is

    d = M − m;  s = d / L;  f̂ = m + v · s

each operation in IEEE-754 binary64 with rounding to nearest (m and M are
binary32 values, exactly representable in binary64), rounded once to the
tensor's dtype. v = 0 gives m and v = L gives M up to the rounding of s.
Informative: the encoder clips the tensor to its truncation range (if any),
sets m and M to its minimum and maximum, rounded outwards to binary32 (exact
for float16 and float32 tensors; for float64 ones the nearest binary32 values
that still enclose the data), and codes v = clip(round((f − m) / s), 0, L).

## Tiles

A C×H×W map (ti_layout_idc = 0) has T = C tiles of TH = H rows and TW = W
columns: tile k is channel k, its sample (y, x) the element (k, y, x). An
N×C token matrix (ti_layout_idc = 1) is itself the picture, its rows the
tokens and its columns the channels (FCM-LM-style packing), cut into
column strips of S = va_tile_channels_minus1 + 1 channels: T = ceil(C / S)
tiles of TH = N rows and TW = S columns, tile k holding channels k·S ..
k·S + S − 1, its sample (y, x) the element (token y, channel k·S + x); samples
with k·S + x ≥ C carry no element. For a C×H×W map, va_tile_channels_minus1
is 0.

The tiles sit in a grid of G = va_tile_columns_minus1 + 1 tile columns and
R = ceil(T / G) tile rows, in raster order: tile k at tile row k div G and tile
column k mod G, so its sample (y, x) is the picture sample at row
(k div G) · TH + y and column (k mod G) · TW + x. The picture is
PW = va_picture_width_minus1 + 1 samples wide and PH =
va_picture_height_minus1 + 1 high, with G ≤ T, G · TW ≤ PW and R · TH ≤ PH.
Samples outside the tiles (the right and bottom padding up to PW × PH and the
empty tiles after the last one) are ignored by the decoder. Informative: the
encoder pads the picture to multiples of 8 (the minimum coding-block size of
HEVC and VVC) and to at least 64 × 64 (one x265 CTU: x265 refuses smaller
pictures), fills the padding with the level of 0.0, and chooses G for the
smallest picture, then the fewest empty tiles, then the squarest picture
(1280 tiles of 7 × 7: 40 tile columns, a 280 × 224 picture); for token matrices it uses
round(sqrt(C / N)) strips so that the stacked strips are near-square.

## Pictures shared by several tensors

The tile grid of a tensor starts at sample (OX, OY) = (va_tile_origin_x,
va_tile_origin_y) of its picture: tile k's sample (y, x) is the picture sample at
row OY + (k div G) · TH + y and column OX + (k mod G) · TW + x, with
OX + G · TW ≤ PW and OY + R · TH ≤ PH. A tensor with va_shared_picture_flag = 0
starts a picture: its tensor data unit carries the inner bitstream. A tensor with
va_shared_picture_flag = 1 lies in the picture of the nearest preceding tensor
that started one; it is not the first tensor, the tensors between are video-anchor
tensors of the same picture, it signals the same va_inner_codec_idc,
va_bit_depth_minus8 and picture size, its tensor data unit has an empty
tdu_entropy_payload, and its tile grid overlaps no other tile grid of that
picture. Each tensor keeps its own m and M. Informative: the encoder's picture-per-
tensor packing (AnchorPacking tensor) gives every tensor its own picture with origin
(0, 0), an FPN pyramid p2..p6 five pictures; its one-frame packing (AnchorPacking frame,
MPEG-VCM's feature anchor) tiles all channels of all tensors into one picture, each
tensor's grid a band of the picture's full width below the previous one (YOLOv5n
P3, P4, P5 at 640 × 640: 8, 16 and 32 tile columns of 80, 40 and 20 samples, one
640 × 1120 picture), the common width chosen for the smallest padded picture, then the
fewest empty tiles, then the squarest.

## Inner bitstream

The tensor's tdu_entropy_payload is the inner codec's bitstream: for
va_inner_codec_idc = 0 an HEVC (ITU-T H.265) and for 1 a VVC (ITU-T H.266)
Annex B byte stream holding exactly one coded picture: monochrome
(chroma_format_idc = 0), luma bit depth B, PW × PH luma samples after
conformance-window cropping. The decoder decodes it with a conforming decoder
of that standard (this software: libde265's dec265 for HEVC, VTM's DecoderApp
for VVC) and takes the luma samples as the levels; a stream that does not
decode to exactly one such picture is an error. va_encoder_info is
informative and ignored by the decoder.
"""

from dataclasses import dataclass

import numpy as np

from common.codepoints import InnerCodec, Layout

ANCHOR_BIT_DEPTH = 10          # va_bit_depth_minus8 + 8; the only value of this version
MAX_PICTURE_DIM = 16888        # HEVC / VVC level 6.2: sqrt(8 · MaxLumaPs)
MAX_PICTURE_SAMPLES = 35_651_584   # HEVC / VVC level 6.2 MaxLumaPs
F32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class AnchorParams:
    """The video anchor's parameters of one tensor (video_anchor_params())."""
    inner_codec: InnerCodec
    bit_depth: int
    min_value: float          # binary32-exact
    max_value: float          # binary32-exact
    picture_width: int
    picture_height: int
    tile_columns: int
    tile_channels: int        # channels per tile: 1 for C×H×W maps, the strip width for N×C tokens
    encoder_info: str = ""    # informative: the inner encoder and its version
    shared_picture: bool = False   # the tiles lie in the picture of the preceding tensor
    origin_x: int = 0         # the tile grid's top-left sample in the picture
    origin_y: int = 0


@dataclass(frozen=True)
class TileGrid:
    tile_height: int
    tile_width: int
    num_tiles: int
    columns: int

    @property
    def rows(self):
        return -(-self.num_tiles // self.columns)

    @property
    def width(self):
        """Width of the tile grid in samples (before padding)."""
        return self.columns * self.tile_width

    @property
    def height(self):
        return self.rows * self.tile_height


def tile_grid(layout, shape, tile_channels, tile_columns):
    """The TileGrid of a tensor of `shape` ((C, H, W) or (N, C), batch axis excluded)."""
    if layout == Layout.CHW:
        channels, height, width = shape
        return TileGrid(height, width, channels, tile_columns)
    num_tokens, channels = shape
    return TileGrid(num_tokens, tile_channels, -(-channels // tile_channels), tile_columns)


def grid_fits(grid, picture_width, picture_height, origin_x=0, origin_y=0):
    """The constraints of the tile grid against its picture (sections Tiles and Pictures shared by
    several tensors)."""
    return (1 <= grid.columns <= grid.num_tiles and origin_x + grid.width <= picture_width
            and origin_y + grid.height <= picture_height)


def grids_overlap(a, b):
    """Whether two tile grids, each (origin_x, origin_y, TileGrid), share a picture sample."""
    (ax, ay, ga), (bx, by, gb) = a, b
    return ax < bx + gb.width and bx < ax + ga.width and ay < by + gb.height and by < ay + ga.height


def dequantise_levels(levels, params):
    """f̂ = m + v · ((M − m) / L) in binary64 (section Levels and reconstruction)."""
    low, high = np.float64(params.min_value), np.float64(params.max_value)
    step = (high - low) / np.float64((1 << params.bit_depth) - 1)
    return low + levels.astype(np.float64) * step


def picture_to_levels(layout, shape, picture, params):
    """Decoder: the tensor's levels ((C, H, W) or (N, C)) from its decoded PH × PW picture."""
    grid = tile_grid(layout, shape, params.tile_channels, params.tile_columns)
    region = picture[params.origin_y:params.origin_y + grid.height, params.origin_x:params.origin_x + grid.width]
    tiles = (region.reshape(grid.rows, grid.tile_height, grid.columns, grid.tile_width)
                   .transpose(0, 2, 1, 3).reshape(-1, grid.tile_height, grid.tile_width)[:grid.num_tiles])
    if layout == Layout.CHW:
        return tiles
    num_tokens, channels = shape
    return tiles.transpose(1, 0, 2).reshape(num_tokens, -1)[:, :channels]


def place_levels(picture, layout, shape, levels, params, fill):
    """Encoder: writes a tensor's levels into its tile grid of `picture` (uint16), empty tiles
    set to `fill`."""
    grid = tile_grid(layout, shape, params.tile_channels, params.tile_columns)
    tiles = np.full((grid.rows * grid.columns, grid.tile_height, grid.tile_width), fill, dtype=np.uint16)
    if layout == Layout.CHW:
        tiles[:grid.num_tiles] = levels
    else:
        num_tokens, channels = shape
        strips = np.full((num_tokens, grid.num_tiles * grid.tile_width), fill, dtype=np.uint16)
        strips[:, :channels] = levels
        tiles[:grid.num_tiles] = strips.reshape(num_tokens, grid.num_tiles, grid.tile_width).transpose(1, 0, 2)
    region = (slice(params.origin_y, params.origin_y + grid.height),
              slice(params.origin_x, params.origin_x + grid.width))
    picture[region] = (tiles.reshape(grid.rows, grid.columns, grid.tile_height, grid.tile_width)
                       .transpose(0, 2, 1, 3).reshape(grid.height, grid.width))


def levels_to_picture(layout, shape, levels, params, fill):
    """Encoder: the PH × PW picture of one tensor's levels (uint16), padding set to `fill`."""
    picture = np.full((params.picture_height, params.picture_width), fill, dtype=np.uint16)
    place_levels(picture, layout, shape, levels, params, fill)
    return picture
