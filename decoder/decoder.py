"""The FCRS decoder: stream bytes in, named feature tensors out.

    read_units ─► feature_parameter_set ─► per tensor, by its tool:
        token-wise SQ: entropy payload ─► levels, step offsets ─► q·Δ_t ─► dtype
        video anchor:  inner bitstream ─► external video decoder ─► picture (decoded once for
                       the tensors that share it) ─► tiles ─► levels ─► m + v·(M − m)/L ─► dtype
        L-MSFC:        group data unit (decoded once for its members) ─► ẑ ─► μ, k ─► ŷ
                       ─► integer DRNet ─► every level ─► dtype
    ─► (hash check)

Imports only `common/`: each tool's decoding lives in its folder common/tools/<tool>/ (decode.py),
and TENSOR_DECODERS maps its code point to it. Token-wise decoding needs numpy and constriction,
not torch; the video anchor runs libde265-dec265, VTM's DecoderApp or VVdeC; L-MSFC needs
numpy and its installed model (torch only as the optional `backend` of its exact products).
"""

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from common.codepoints import Tool, UnitType
from common.errors import BitstreamError
from common.features import from_tensor_info
from common.hashing import covered_digest, integrity_md5
from common.stream import iter_units, unit_start
from common.syntax import SyntaxReader, SyntaxStructure
from common.syntax_structures import decoded_feature_hash, feature_parameter_set, tensor_data_unit
from common.tools.lmsfc.decode import decode_lmsfc_tensor, lmsfc_group_sources, lmsfc_memory
from common.tools.tokenwise.decode import decode_tokenwise_tensor, tokenwise_memory
from common.tools.video_anchor.decode import decode_video_anchor_tensor, shared_picture_sources, video_anchor_memory

DEFAULT_MAX_MEMORY = 1 << 30     # bytes; `decode --max-memory` raises it


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


def decode_stream(data, trace=None, threads=1, backend="numpy", max_memory=DEFAULT_MAX_MEMORY):
    """Parse and decode a whole stream. Raises BitstreamError on any violation. `backend`
    (numpy or torch) evaluates L-MSFC's exact products; the result is the same. A stream whose
    decoding would need more than max_memory bytes (decoding_memory) is refused before anything
    is decoded."""
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
    needed = decoding_memory(specs)
    if needed > max_memory:
        raise BitstreamError(f"decoding needs about {needed / 2**20:.0f} MiB, more than the memory budget of "
                             f"{max_memory / 2**20:.0f} MiB (decode --max-memory MIB raises it)")

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

    shared = [picture or group for picture, group in zip(shared_picture_sources(specs, payloads),
                                                         lmsfc_group_sources(specs, payloads, backend))]
    jobs = list(zip(specs, payloads, shared))
    if threads > 1 and len(specs) > 1:
        with ThreadPoolExecutor(threads) as pool:
            arrays = list(pool.map(lambda job: decode_tensor(*job), jobs))
    else:
        arrays = [decode_tensor(*job) for job in jobs]
    result = DecodedStream(specs=specs, tensors=dict(zip(names, arrays)))
    if hash_unit is not None:
        if hash_unit.dfh_num_tensors_minus1 + 1 != len(specs):
            raise BitstreamError("the decoded_feature_hash unit does not hold one hash per tensor")
        covered = covered_digest(data[:unit_start(data, UnitType.DECODED_FEATURE_HASH)])
        for spec, array, entry in zip(specs, arrays, hash_unit.dfh_tensors):
            result.hash_checks.append(HashCheck(spec.name, entry.dfh_md5, integrity_md5(covered, spec, array)))
    return result


def decode_tensor(spec, payload, shared=None):
    """One tensor from its data unit's payload by its coding tool, or from what it shares with
    other tensors when given (decode_stream gives every one its source): the InnerPicture its
    tiles lie in, the LmsfcGroup it is a level of."""
    if shared is not None:
        return shared.tensor(spec)
    return TENSOR_DECODERS[spec.tool](spec, payload)


def decoding_memory(specs):
    """Peak bytes decoding these tensors needs, by each tool's estimate (all held at once)."""
    return sum(MEMORY_ESTIMATES[spec.tool](spec) for spec in specs)


# Each coding tool's peak-memory estimate of one tensor (TensorSpec -> bytes).
MEMORY_ESTIMATES = {Tool.TOKENWISE_SQ: tokenwise_memory, Tool.VIDEO_ANCHOR: video_anchor_memory,
                    Tool.LMSFC: lmsfc_memory}

# The decoder of each coding tool (ti_tool_idc): (TensorSpec, tdu_entropy_payload) -> decoded array.
TENSOR_DECODERS = {Tool.TOKENWISE_SQ: decode_tokenwise_tensor, Tool.VIDEO_ANCHOR: decode_video_anchor_tensor,
                   Tool.LMSFC: decode_lmsfc_tensor}
