"""Syntax of the video anchor: video_anchor_params(), called from tensor_info() (common/
syntax_structures.py) and rendered into docs/bitstream.md from this file's text, and the
tile-grid constraints the feature parameter set checks (section Video anchor)."""

from common.codepoints import InnerCodec, Layout, Tool
from common.limits import MAX_DIM, MAX_NAME_BYTES
from common.syntax import SyntaxStructure
from common.tools.video_anchor.format import (ANCHOR_BIT_DEPTH, F32_MAX, MAX_PICTURE_DIM, MAX_PICTURE_SAMPLES,
                                              AnchorParams, grid_fits, grids_overlap, tile_grid)


def video_anchor_params(rw, s):
    rw.flag(s, "va_shared_picture_flag")
    rw.u(4, s, "va_inner_codec_idc", hi=InnerCodec.VVC)
    rw.u(4, s, "va_bit_depth_minus8", lo=ANCHOR_BIT_DEPTH - 8, hi=ANCHOR_BIT_DEPTH - 8)
    rw.f32(s, "va_min_value")
    rw.f32(s, "va_max_value")
    rw.require(-F32_MAX <= s.va_min_value <= s.va_max_value <= F32_MAX,
               "va_min_value and va_max_value are finite and va_min_value <= va_max_value")
    rw.ue(s, "va_picture_width_minus1", hi=MAX_PICTURE_DIM - 1)
    rw.ue(s, "va_picture_height_minus1", hi=MAX_PICTURE_DIM - 1)
    rw.require((s.va_picture_width_minus1 + 1) * (s.va_picture_height_minus1 + 1) <= MAX_PICTURE_SAMPLES,
               "the picture has at most MAX_PICTURE_SAMPLES samples")
    rw.ue(s, "va_tile_columns_minus1", hi=MAX_PICTURE_DIM - 1)
    rw.ue(s, "va_tile_channels_minus1", hi=MAX_DIM - 1)
    rw.ue(s, "va_tile_origin_x", hi=MAX_PICTURE_DIM - 1)
    rw.ue(s, "va_tile_origin_y", hi=MAX_PICTURE_DIM - 1)
    rw.flag(s, "va_encoder_info_flag")
    if s.va_encoder_info_flag:
        rw.ue(s, "va_encoder_info_length", hi=MAX_NAME_BYTES)
        rw.bytes(s, "va_encoder_info", s.va_encoder_info_length)


def anchor_tiles_fit(s):
    """The tile-grid constraints of a video-anchor tensor_info() (section Video anchor)."""
    params = s.ti_video_anchor_params
    if s.ti_layout_idc == Layout.CHW and params.va_tile_channels_minus1 != 0:
        return False
    return grid_fits(anchor_tile_grid(s), params.va_picture_width_minus1 + 1, params.va_picture_height_minus1 + 1,
                     params.va_tile_origin_x, params.va_tile_origin_y)


def anchor_tile_grid(s):
    """The TileGrid of a video-anchor tensor_info()."""
    params = s.ti_video_anchor_params
    if s.ti_layout_idc == Layout.CHW:
        shape = (s.ti_num_channels_minus1 + 1, s.ti_height_minus1 + 1, s.ti_width_minus1 + 1)
    else:
        shape = (s.ti_num_tokens_minus1 + 1, s.ti_num_channels_minus1 + 1)
    return tile_grid(s.ti_layout_idc, shape, params.va_tile_channels_minus1 + 1, params.va_tile_columns_minus1 + 1)


def shared_pictures_consistent(tensors):
    """The constraints on tensors with va_shared_picture_flag = 1 (section Video anchor: pictures
    shared by several tensors)."""
    picture = []                        # tensor_info() of the tensors in the current picture
    for t in tensors:
        params = t.ti_video_anchor_params if t.ti_tool_idc == Tool.VIDEO_ANCHOR else None
        if params is None or not params.va_shared_picture_flag:
            picture = [t] if params is not None else []
            continue
        if not picture:
            return False
        first = picture[0].ti_video_anchor_params
        same = ("va_inner_codec_idc", "va_bit_depth_minus8", "va_picture_width_minus1", "va_picture_height_minus1")
        if any(getattr(params, name) != getattr(first, name) for name in same):
            return False
        placed = (params.va_tile_origin_x, params.va_tile_origin_y, anchor_tile_grid(t))
        for other in picture:
            other_params = other.ti_video_anchor_params
            if grids_overlap(placed, (other_params.va_tile_origin_x, other_params.va_tile_origin_y,
                                      anchor_tile_grid(other))):
                return False
        picture.append(t)
    return True


def to_video_anchor_params(anchor):
    """The video_anchor_params() structure of an AnchorParams."""
    info = anchor.encoder_info.encode("utf-8")
    s = SyntaxStructure(va_shared_picture_flag=int(anchor.shared_picture), va_inner_codec_idc=anchor.inner_codec,
                        va_bit_depth_minus8=anchor.bit_depth - 8,
                        va_min_value=anchor.min_value, va_max_value=anchor.max_value,
                        va_picture_width_minus1=anchor.picture_width - 1,
                        va_picture_height_minus1=anchor.picture_height - 1,
                        va_tile_columns_minus1=anchor.tile_columns - 1,
                        va_tile_channels_minus1=anchor.tile_channels - 1, va_tile_origin_x=anchor.origin_x,
                        va_tile_origin_y=anchor.origin_y, va_encoder_info_flag=int(bool(info)))
    if info:
        s.va_encoder_info_length, s.va_encoder_info = len(info), info
    return s


def from_video_anchor_params(s):
    """The AnchorParams of a video_anchor_params() structure."""
    info = s.va_encoder_info.decode("utf-8", "replace") if s.va_encoder_info_flag else ""
    return AnchorParams(inner_codec=InnerCodec(s.va_inner_codec_idc), bit_depth=s.va_bit_depth_minus8 + 8,
                        min_value=s.va_min_value, max_value=s.va_max_value,
                        picture_width=s.va_picture_width_minus1 + 1, picture_height=s.va_picture_height_minus1 + 1,
                        tile_columns=s.va_tile_columns_minus1 + 1, tile_channels=s.va_tile_channels_minus1 + 1,
                        encoder_info=info, shared_picture=bool(s.va_shared_picture_flag),
                        origin_x=s.va_tile_origin_x, origin_y=s.va_tile_origin_y)


SEMANTICS = {
    "va_shared_picture_flag": "0: the tensor starts a picture; its tensor data unit carries the inner bitstream. "
                              "1: its tiles lie in the picture of the preceding tensor, and its tensor data "
                              "unit's tdu_entropy_payload is empty (section Video anchor: pictures shared by "
                              "several tensors).",
    "va_inner_codec_idc": "Standard of the inner bitstream in the tensor's data unit (InnerCodec): 0 HEVC, "
                          "1 VVC.",
    "va_bit_depth_minus8": "Bit depth B of the levels and of the inner picture, minus 8. B = 10 in this "
                           "version.",
    "va_min_value": "m: the value of level 0, a binary32 value (section Video anchor).",
    "va_max_value": "M: the value of level 2^B − 1, a binary32 value not below va_min_value.",
    "va_picture_width_minus1": "Width PW of the inner picture in luma samples, minus 1 (the tile grid plus "
                               "right padding).",
    "va_picture_height_minus1": "Height PH of the inner picture in luma samples, minus 1 (the tile grid plus "
                                "bottom padding).",
    "va_tile_columns_minus1": "Number G of tile columns, minus 1; tiles are placed in raster order "
                              "(section Video anchor).",
    "va_tile_channels_minus1": "Channels per tile, minus 1: 0 for a C×H×W map (a tile is one H×W channel); "
                               "for an N×C token matrix the width S of each N×S column strip, minus 1.",
    "va_tile_origin_x": "Column OX of the picture sample where the tensor's tile grid starts (0 for a "
                        "tensor alone in its picture).",
    "va_tile_origin_y": "Row OY of the picture sample where the tensor's tile grid starts.",
    "va_encoder_info_flag": "1: va_encoder_info follows. 0: it is absent.",
    "va_encoder_info_length": "Length in bytes of va_encoder_info.",
    "va_encoder_info": "Informative UTF-8 text naming the inner encoder and its version (e.g. "
                       "\"x265 3.5+1-f0c1022b6\"); decoders ignore it.",
}
