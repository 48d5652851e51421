"""The syntax structures of an FCRS stream, each declared once.

Every function here is walked by `SyntaxWriter` (encoder), `SyntaxReader`
(decoder) and `common/specdoc.py`, which renders `docs/bitstream.md` from this
file's text: the element calls become table rows, `if`/`for` become
conditions, `rw.require` becomes a conformance constraint. Keep each function a
plain sequence of element calls, `if` and `for`; semantics live in SEMANTICS.
Each coding tool declares its parameters the same way in its own folder
(common/tools/<tool>/syntax.py, with its own SEMANTICS); tensor_info() calls
them by ti_tool_idc, and specdoc renders each one after its caller.

Stream layout::

    stream_header()
    repeat: unit_header(); unit payload of unit_payload_size bytes
      FEATURE_PARAMETER_SET  feature_parameter_set()   exactly once, first
      TENSOR_DATA            tensor_data_unit()        once per tensor, in order
      DECODED_FEATURE_HASH   decoded_feature_hash()    optional
      END_OF_STREAM          (empty)                   last
"""

from common.codepoints import DType, HashType, Layout, STREAM_MAGIC, STREAM_VERSION_MAJOR, Tool
from common.limits import MAX_DECODED_ELEMENTS, MAX_DIM, MAX_NAME_BYTES, MAX_TENSORS, MAX_UNIT_PAYLOAD_SIZE
from common.syntax import SyntaxStructure
from common.tools.lmsfc.syntax import lmsfc_groups, lmsfc_params
from common.tools.tokenwise.syntax import tokenwise_sq_params
from common.tools.video_anchor.syntax import anchor_tiles_fit, shared_pictures_consistent, video_anchor_params


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
    rw.require(lmsfc_groups(s.fps_tensors) is not None, "L-MSFC tensors are C×H×W maps in complete groups: a "
               "tensor with lm_group_start_flag = 1 and the next lm_num_levels_minus1 tensors, each half the size "
               "of the one before (rounded up), the signalled latent size following from the last (section L-MSFC)")
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
    rw.u(8, s, "ti_tool_idc", lo=Tool.TOKENWISE_SQ, hi=Tool.LMSFC)
    if s.ti_tool_idc == Tool.TOKENWISE_SQ:
        tokenwise_sq_params(rw, rw.sub(s, "ti_tokenwise_sq_params"))
    if s.ti_tool_idc == Tool.VIDEO_ANCHOR:
        video_anchor_params(rw, rw.sub(s, "ti_video_anchor_params"))
        rw.require(anchor_tiles_fit(s), "the tile grid has between 1 and T tile columns and fits in the picture; "
                   "va_tile_channels_minus1 is 0 for a C×H×W map (section Video anchor)")
    if s.ti_tool_idc == Tool.LMSFC:
        lmsfc_params(rw, rw.sub(s, "ti_lmsfc_params"))


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


def tensor_num_elements(s):
    """Feature points a tensor_info() declares (used by the constraint above)."""
    if s.ti_layout_idc == Layout.CHW:
        return (s.ti_num_channels_minus1 + 1) * (s.ti_height_minus1 + 1) * (s.ti_width_minus1 + 1)
    return (s.ti_num_channels_minus1 + 1) * (s.ti_num_tokens_minus1 + 1)


SEMANTICS = {
    "sh_magic": "0x46435253 (\"FCRS\"). Any other value: not an FCRS stream.",
    "sh_version_major": "Major version of this specification (3). A decoder rejects any other value.",
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
    "tdu_tensor_idx": "Index of the tensor (order of the feature parameter set) whose data this is. "
                      "Tensor data units appear in increasing tdu_tensor_idx, one per tensor.",
    "tdu_entropy_payload": "Coded data of the tensor, to the end of the unit: for the token-wise tool its "
                           "ANS-coded payload (section Token-wise scalar quantisation: entropy payload), for "
                           "the video anchor the inner codec's bitstream (section Video anchor), empty for "
                           "a tensor with va_shared_picture_flag = 1.",
    "dfh_hash_type_idc": "0: MD5. Other values reserved.",
    "dfh_num_tensors_minus1": "Number of hashes minus 1; equals fps_num_tensors_minus1.",
    "dfh_md5": "Integrity hash of the decoded tensor (common/hashing.py): MD5(P ‖ H ‖ V), P the MD5 of the "
               "stream's bytes before this unit's unit header (stream header and every unit, reserved ones "
               "included; with several hash units, the last one counts), H the tensor's canonical header (u16 name length, UTF-8 name, u8 ti_layout_idc, u8 "
               "ti_dtype_idc, u8 ti_batch_dim_flag, u8 rank, u32 per axis of the decoded shape, big-endian), V "
               "its elements in C order as little-endian values of its decoded dtype. A changed bit anywhere before "
               "the hash unit, or a different name, layout, dtype, batch axis, shape or value, is a mismatch.",
}
