"""Code points of the bitstream. Every value is explicit and never derived from
container order; values not listed are reserved. A decoder meeting a reserved
unit type skips the unit; a reserved value of any other code point is an error.
"""

from enum import IntEnum

from common.errors import BitstreamError


STREAM_MAGIC = 0x46435253          # "FCRS"
STREAM_VERSION_MAJOR = 3           # a decoder rejects any other major version (2: lm_extra_stages se(v); 3: tsq_channel_offsets_flag)
STREAM_VERSION_MINOR = 0           # minor versions only add what old decoders may skip


class UnitType(IntEnum):
    """unit_type, u(8). 0 and 5..255 are reserved; unknown types are skipped."""
    FEATURE_PARAMETER_SET = 1
    TENSOR_DATA = 2
    DECODED_FEATURE_HASH = 3
    END_OF_STREAM = 4


class Layout(IntEnum):
    """ti_layout_idc, u(4). 2..15 reserved."""
    CHW = 0          # C×H×W map; a token is one spatial position
    TOKENS = 1       # N×C matrix; a token is one row


class DType(IntEnum):
    """ti_dtype_idc, u(4): dtype of the original and of the decoded tensor. 3..15 reserved."""
    FLOAT16 = 0
    FLOAT32 = 1
    FLOAT64 = 2


class Tool(IntEnum):
    """ti_tool_idc, u(8): coding tool of one tensor. 0 and 4..255 reserved."""
    TOKENWISE_SQ = 1   # token-wise scalar quantisation + context-adaptive range coding
    VIDEO_ANCHOR = 2   # min-max quantised, tiled into a monochrome picture, coded by a video codec
    LMSFC = 3          # L-MSFC: a group of pyramid levels coded jointly by a learned fusion codec


class InnerCodec(IntEnum):
    """va_inner_codec_idc, u(4): standard of the video anchor's inner bitstream. 2..15 reserved."""
    HEVC = 0         # ITU-T H.265 | ISO/IEC 23008-2 (this software: x265 / libde265-dec265)
    VVC = 1          # ITU-T H.266 | ISO/IEC 23090-3 (this software: VTM EncoderApp / DecoderApp)


class HashType(IntEnum):
    """dfh_hash_type_idc, u(8). 1..255 reserved."""
    MD5 = 0


NUMPY_DTYPE = {DType.FLOAT16: "<f2", DType.FLOAT32: "<f4", DType.FLOAT64: "<f8"}


def parse_code_point(enum_type, value, element):
    """The enum member for `value`, or a BitstreamError naming the element."""
    try:
        return enum_type(value)
    except ValueError:
        raise BitstreamError(f"{element} = {value} is a reserved value") from None
