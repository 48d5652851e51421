"""The syntax structures of an FCRS stream, each declared once.

Every function here is walked by `SyntaxWriter` (encoder), `SyntaxReader`
(decoder) and `common/specdoc.py`, which renders `docs/bitstream.md` from this
file's text: the element calls become table rows, `if`/`for` become
conditions, `rw.require` becomes a conformance constraint. Keep each function a
plain sequence of element calls, `if` and `for`; semantics live in SEMANTICS.

Stream layout::

    stream_header()
    repeat: unit_header(); unit payload of unit_payload_size bytes
      FEATURE_PARAMETER_SET  feature_parameter_set()   exactly once, first
      TENSOR_DATA            tensor_data_unit()        once per tensor, in order
      DECODED_FEATURE_HASH   decoded_feature_hash()    optional
      END_OF_STREAM          (empty)                   last
"""

from common.codepoints import (DType, HashType, InnerCodec, Layout, STREAM_MAGIC, STREAM_VERSION_MAJOR, Tool)
from common.syntax import SyntaxStructure
from common.video_anchor import (ANCHOR_BIT_DEPTH, F32_MAX, MAX_PICTURE_DIM, MAX_PICTURE_SAMPLES, grid_fits,
                                 grids_overlap, tile_grid)

MAX_TENSORS = 256
MAX_NAME_BYTES = 255
MAX_DIM = 1 << 24
# Decoder memory guard: a stream may declare at most this many feature points in
# total; the decoder's peak memory is about 40 bytes per declared point.
MAX_DECODED_ELEMENTS = 1 << 27
MAX_UNIT_PAYLOAD_SIZE = (1 << 32) - 1
QP_MIN, QP_MAX = -256, 511


def stream_header(rw, s):
    rw.u(32, s, "sh_magic", lo=STREAM_MAGIC, hi=STREAM_MAGIC)
    rw.u(8, s, "sh_version_major", lo=STREAM_VERSION_MAJOR, hi=STREAM_VERSION_MAJOR)
    rw.u(8, s, "sh_version_minor")


def unit_header(rw, s):
    rw.u(8, s, "unit_type")
    rw.u(32, s, "unit_payload_size", hi=MAX_UNIT_PAYLOAD_SIZE)


def feature_parameter_set(rw, s):
    rw.ue(s, "fps_num_tensors_minus1", hi=MAX_TENSORS - 1)
    for t in rw.items(s, "fps_tensors", s.fps_num_tensors_minus1 + 1, SyntaxStructure):
        tensor_info(rw, t)
    rw.require(sum(tensor_num_elements(t) for t in s.fps_tensors) <= MAX_DECODED_ELEMENTS,
               "the tensors hold at most MAX_DECODED_ELEMENTS feature points in total")
    rw.require(shared_pictures_consistent(s.fps_tensors), "a tensor with va_shared_picture_flag = 1 follows "
               "video-anchor tensors of the picture it shares, signals that picture's codec, bit depth and size, "
               "and its tile grid overlaps no other of that picture (section Video anchor)")
    rw.flag(s, "fps_extension_flag")
    rw.byte_alignment()
    if s.fps_extension_flag:
        rw.rest(s, "fps_extension_data")


def tensor_info(rw, s):
    rw.ue(s, "ti_name_length", hi=MAX_NAME_BYTES)
    rw.bytes(s, "ti_name", s.ti_name_length)
    rw.u(4, s, "ti_layout_idc", hi=Layout.TOKENS)
    rw.u(4, s, "ti_dtype_idc", hi=DType.FLOAT64)
    rw.flag(s, "ti_batch_dim_flag")
    rw.ue(s, "ti_num_channels_minus1", hi=MAX_DIM - 1)
    if s.ti_layout_idc == Layout.CHW:
        rw.ue(s, "ti_height_minus1", hi=MAX_DIM - 1)
        rw.ue(s, "ti_width_minus1", hi=MAX_DIM - 1)
    else:
        rw.ue(s, "ti_num_tokens_minus1", hi=MAX_DIM - 1)
    rw.u(8, s, "ti_tool_idc", lo=Tool.TOKENWISE_SQ, hi=Tool.VIDEO_ANCHOR)
    if s.ti_tool_idc == Tool.TOKENWISE_SQ:
        tokenwise_sq_params(rw, rw.sub(s, "ti_tokenwise_sq_params"))
    if s.ti_tool_idc == Tool.VIDEO_ANCHOR:
        video_anchor_params(rw, rw.sub(s, "ti_video_anchor_params"))
        rw.require(anchor_tiles_fit(s), "the tile grid has between 1 and T tile columns and fits in the picture; "
                   "va_tile_channels_minus1 is 0 for a C×H×W map (section Video anchor)")


def tokenwise_sq_params(rw, s):
    rw.se(s, "tsq_qp", lo=QP_MIN, hi=QP_MAX)
    rw.flag(s, "tsq_step_map_flag")


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


def tensor_data_unit(rw, s):
    rw.ue(s, "tdu_tensor_idx", hi=MAX_TENSORS - 1)
    rw.byte_alignment()
    rw.rest(s, "tdu_entropy_payload")


def decoded_feature_hash(rw, s):
    rw.u(8, s, "dfh_hash_type_idc", hi=HashType.MD5)
    rw.ue(s, "dfh_num_tensors_minus1", hi=MAX_TENSORS - 1)
    for t in rw.items(s, "dfh_tensors", s.dfh_num_tensors_minus1 + 1, SyntaxStructure):
        rw.bytes(t, "dfh_md5", 16)
    rw.byte_alignment()


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


def tensor_num_elements(s):
    """Feature points a tensor_info() declares (used by the constraint above)."""
    if s.ti_layout_idc == Layout.CHW:
        return (s.ti_num_channels_minus1 + 1) * (s.ti_height_minus1 + 1) * (s.ti_width_minus1 + 1)
    return (s.ti_num_channels_minus1 + 1) * (s.ti_num_tokens_minus1 + 1)


SEMANTICS = {
    "sh_magic": "0x46435253 (\"FCRS\"). Any other value: not an FCRS stream.",
    "sh_version_major": "Major version of this specification (1). A decoder rejects any other value.",
    "sh_version_minor": "Minor version (0). Minor versions only add units or extension data that "
                        "older decoders skip; a decoder accepts any value.",
    "unit_type": "UnitType of the unit (1 feature parameter set, 2 tensor data, 3 decoded-feature "
                 "hash, 4 end of stream). Other values are reserved: the decoder skips the unit.",
    "unit_payload_size": "Number of payload bytes following the unit header. A unit that would end "
                         "beyond the end of the stream is a truncation error.",
    "fps_num_tensors_minus1": "Number of tensors in the stream, minus 1.",
    "fps_extension_flag": "0 in this version. 1: fps_extension_data follows, which decoders of this "
                          "version ignore.",
    "fps_extension_data": "Reserved for future versions; ignored.",
    "ti_name_length": "Length in bytes of ti_name.",
    "ti_name": "UTF-8 name of the tensor (the key in an .npz file, e.g. \"p2\"; empty for a single .npy).",
    "ti_layout_idc": "Layout: 0 C×H×W map (a token is one spatial position), 1 N×C matrix (a token is "
                     "one row).",
    "ti_dtype_idc": "Floating-point type of the original and of the decoded tensor: 0 float16, "
                    "1 float32, 2 float64.",
    "ti_batch_dim_flag": "1: the decoded array gets a leading axis of size 1 (1×C×H×W or 1×N×C).",
    "ti_num_channels_minus1": "Number of channels C, minus 1.",
    "ti_height_minus1": "Height H of the map, minus 1.",
    "ti_width_minus1": "Width W of the map, minus 1.",
    "ti_num_tokens_minus1": "Number of tokens N, minus 1. The tokens are coded on a C × ceil(N / W) × W "
                            "grid, token n at position (n div W, n mod W), positions from N on coded as "
                            "zeros and dropped: W = token_grid_width(N), the width in [s, min(N, 2s)], "
                            "s = ceil(sqrt(N)), with the fewest padding positions, the smallest on ties "
                            "(common/features.py). The near-square grid gives the context model "
                            "two-dimensional neighbours and bounds the number of waves by about 3·sqrt(N).",
    "ti_tool_idc": "Coding tool of the tensor: 1 token-wise scalar quantisation (section Token-wise "
                   "scalar quantisation), 2 video anchor (section Video anchor). Other values reserved.",
    "tsq_qp": "Base step exponent of the tensor. The step of token t is "
              "Δ_t = 2^((e_t − 48) / 8) with e_t = tsq_qp + (step offset of t); +8 doubles the step.",
    "tsq_step_map_flag": "0: every token uses e_t = tsq_qp. 1: a per-token step-offset map is coded at "
                         "the start of the tensor's entropy payload.",
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
    "tdu_tensor_idx": "Index of the tensor (order of the feature parameter set) whose data this is. "
                      "Tensor data units appear in increasing tdu_tensor_idx, one per tensor.",
    "tdu_entropy_payload": "Coded data of the tensor, to the end of the unit: for the token-wise tool its "
                           "ANS-coded payload (section Token-wise scalar quantisation: entropy payload), for "
                           "the video anchor the inner codec's bitstream (section Video anchor), empty for "
                           "a tensor with va_shared_picture_flag = 1.",
    "dfh_hash_type_idc": "0: MD5. Other values reserved.",
    "dfh_num_tensors_minus1": "Number of hashes minus 1; equals fps_num_tensors_minus1.",
    "dfh_md5": "MD5 of the decoded tensor: its elements in C order, as little-endian values of its "
               "decoded dtype, shape as decoded (batch axis included).",
}
