"""The FCRS decoder: stream bytes in, named feature tensors out.

    read_units ─► feature_parameter_set ─► per tensor, by its tool:
        token-wise SQ: entropy payload ─► levels, step offsets ─► q·Δ_t ─► dtype
        video anchor:  inner bitstream ─► external video decoder ─► picture (decoded once for
                       the tensors that share it) ─► tiles ─► levels ─► m + v·(M − m)/L ─► dtype
    ─► (hash check)

Imports only `common/` (and its own inner_codec module); token-wise decoding needs numpy and
constriction, not torch; the video anchor runs libde265-dec265 or VTM's DecoderApp.
"""

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from common.codepoints import Tool, UnitType
from common.errors import BitstreamError
from common.features import from_grid, from_tensor_info
from common.hashing import tensor_md5
from common.syntax import SyntaxReader, SyntaxStructure
from common.syntax_structures import decoded_feature_hash, feature_parameter_set, tensor_data_unit
from common.stream import iter_units
from common.syntax_structures import QP_MAX, QP_MIN
from common.tokenwise_sq import TokenwiseEntropyCoder, dequantise, step_sizes
from common.video_anchor import dequantise_levels, picture_to_levels
from decoder.inner_codec import decode_picture


@dataclass
class HashCheck:
    name: str
    expected: bytes
    actual: bytes

    @property
    def ok(self):
        return self.expected == self.actual


@dataclass
class DecodedStream:
    specs: list
    tensors: dict                                      # name -> decoded array
    hash_checks: list = field(default_factory=list)    # empty when the stream has no hash unit


def decode_stream(data, trace=None, threads=1):
    """Parse and decode a whole stream. Raises BitstreamError on any violation."""
    units = iter_units(data, trace)
    first = next(units, None)
    if first is None or first[0] != UnitType.FEATURE_PARAMETER_SET:
        raise BitstreamError("the first unit is not a feature_parameter_set")
    fps = SyntaxStructure()
    feature_parameter_set(SyntaxReader(first[1], trace, "feature parameter set"), fps)
    specs = [from_tensor_info(t) for t in fps.fps_tensors]
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise BitstreamError("two tensors share a name")

    payloads, hash_unit = [], None
    for unit_type, payload in units:
        if unit_type == UnitType.TENSOR_DATA:
            tdu = SyntaxStructure()
            tensor_data_unit(SyntaxReader(payload, trace, "tensor data unit"), tdu)
            if tdu.tdu_tensor_idx != len(payloads):
                raise BitstreamError(f"tensor data unit for tensor {tdu.tdu_tensor_idx} where "
                                     f"tensor {len(payloads)} was expected")
            payloads.append(tdu.tdu_entropy_payload)
        elif unit_type == UnitType.DECODED_FEATURE_HASH:
            hash_unit = SyntaxStructure()
            decoded_feature_hash(SyntaxReader(payload, trace, "decoded feature hash"), hash_unit)
        elif unit_type == UnitType.FEATURE_PARAMETER_SET:
            raise BitstreamError("a second feature_parameter_set")
    if len(payloads) != len(specs):
        raise BitstreamError(f"the stream has data for {len(payloads)} of {len(specs)} tensors")

    inner_pictures = shared_picture_sources(specs, payloads)
    jobs = [(spec, payload, inner_pictures[index]) for index, (spec, payload) in enumerate(zip(specs, payloads))]
    if threads > 1 and len(specs) > 1:
        with ThreadPoolExecutor(threads) as pool:
            arrays = list(pool.map(lambda job: decode_tensor(*job), jobs))
    else:
        arrays = [decode_tensor(*job) for job in jobs]
    result = DecodedStream(specs=specs, tensors=dict(zip(names, arrays)))
    if hash_unit is not None:
        if hash_unit.dfh_num_tensors_minus1 + 1 != len(specs):
            raise BitstreamError("the decoded_feature_hash unit does not hold one hash per tensor")
        for spec, array, entry in zip(specs, arrays, hash_unit.dfh_tensors):
            result.hash_checks.append(HashCheck(spec.name, entry.dfh_md5, tensor_md5(array)))
    return result


class InnerPicture:
    """A video-anchor picture decoded once, when the first tensor that lies in it needs it
    (several tensors share one picture with the one-frame packing)."""

    def __init__(self, params, bitstream):
        self.params, self.bitstream = params, bitstream
        self._lock = threading.Lock()
        self._picture = None

    def picture(self):
        with self._lock:
            if self._picture is None:
                anchor = self.params
                (self._picture,) = decode_picture(anchor.inner_codec, self.bitstream, anchor.picture_width,
                                                  anchor.picture_height, anchor.bit_depth)
            return self._picture


def shared_picture_sources(specs, payloads):
    """Per tensor, the InnerPicture its tiles lie in (None for other tools). A tensor with
    va_shared_picture_flag = 1 takes its predecessor's; its own payload must be empty."""
    sources, current = [], None
    for spec, payload in zip(specs, payloads):
        if spec.tool != Tool.VIDEO_ANCHOR:
            current = None
        elif not spec.anchor.shared_picture:
            current = InnerPicture(spec.anchor, payload)
        elif payload:
            raise BitstreamError(f"tensor '{spec.name}' shares the previous tensor's picture but its data unit "
                                 "carries a payload")
        sources.append(current)
    return sources


def decode_tensor(spec, payload, inner_picture=None):
    """One tensor from its data unit's payload by its coding tool; a video-anchor tensor from the
    InnerPicture its tiles lie in, when given (decode_stream gives every one its picture)."""
    if inner_picture is not None:
        return video_anchor_tensor(spec, inner_picture.picture())
    return TENSOR_DECODERS[spec.tool](spec, payload)


def decode_tokenwise_tensor(spec, payload):
    """Levels and step offsets from the payload, then reconstruction in the spec's dtype."""
    coder = TokenwiseEntropyCoder(payload)
    levels, offsets = coder.code_tensor(None, None, spec.grid, spec.step_map)
    coder.finish()
    return reconstruct(spec, levels, offsets)


def decode_video_anchor_tensor(spec, payload):
    """A tensor alone in its picture: the inner bitstream through the external video decoder."""
    return video_anchor_tensor(spec, InnerPicture(spec.anchor, payload).picture())


def video_anchor_tensor(spec, picture):
    """A tensor's levels from its tiles of the decoded picture, then m + v·(M − m)/L."""
    anchor = spec.anchor
    levels = picture_to_levels(spec.layout, spec.shape, picture, anchor)
    if levels.max(initial=0) >= 1 << anchor.bit_depth:
        raise BitstreamError(f"tensor '{spec.name}': the inner picture has samples beyond {anchor.bit_depth} bits")
    with np.errstate(over="ignore"):
        return dequantise_levels(levels, anchor).astype(spec.numpy_dtype).reshape(spec.array_shape)


def reconstruct(spec, levels, offsets):
    """q · Δ_t rounded to the tensor's dtype, in its decoded shape (the encoder reuses this)."""
    exponents = spec.qp + offsets
    if exponents.min() < QP_MIN or exponents.max() > QP_MAX:
        raise BitstreamError(f"tensor '{spec.name}': a token's step exponent leaves [{QP_MIN}, {QP_MAX}]")
    grid_values = dequantise(levels, step_sizes(exponents))
    with np.errstate(over="ignore"):
        return from_grid(spec, grid_values.astype(spec.numpy_dtype))


TENSOR_DECODERS = {Tool.TOKENWISE_SQ: decode_tokenwise_tensor, Tool.VIDEO_ANCHOR: decode_video_anchor_tensor}
