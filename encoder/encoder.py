"""The FCRS encoder library: named feature tensors in, stream bytes out.

    validate ─► per tensor, by the Tool option (TENSOR_CODERS):
        tokenwise: encoder/tools/tokenwise/: TensorSpec ─► exponents (QP [+ step map]) ─► quantise
                   ─► entropy payload ─► reconstruct (decoder's code)
        anchor:    encoder/tools/video_anchor/: levels ─► tiled picture (one per tensor, or one for
                   all: AnchorPacking) ─► x265 / VTM ─► inner bitstream ─► reconstruct (decoder's
                   code: libde265 / VTM)
    ─► tensor data units ─► hash ─► units

Each tool's coder lives in its folder encoder/tools/<tool>/ (coder.py, the interface in
encoder/tools/interface.py); TENSOR_CODERS maps the Tool option to it. Analysis tools
(e.g. FeatJND step allocation) only decide the per-token step offsets handed to
`encode_features`; coding is the same for every allocation.
"""

from dataclasses import dataclass

import numpy as np

from common.codepoints import HashType, Tool, UnitType
from common.errors import ConfigError, InputError
from common.features import to_tensor_info
from common.hashing import covered_digest, integrity_md5
from common.limits import MAX_DECODED_ELEMENTS, MAX_DIM, MAX_NAME_BYTES, MAX_TENSORS
from common.stream import UNIT_HEADER_BYTES, write_stream
from common.syntax import SyntaxStructure, SyntaxWriter, Trace
from common.syntax_structures import decoded_feature_hash, feature_parameter_set, tensor_data_unit
from encoder.tools.interface import DTYPE_OF_NUMPY
from encoder.tools.lmsfc.coder import code_lmsfc_tensors
from encoder.tools.tokenwise.coder import code_tokenwise_tensors
from encoder.tools.video_anchor.coder import code_anchor_tensors


@dataclass
class TensorReport:
    name: str
    shape: tuple
    bits: int             # bits of the tensor's data unit (header + payload)
    ideal_bits: float     # token-wise: −log2 P of the coded symbols under the models used; anchor: None
    step_map_bits: float  # token-wise: the step-offset map's part of ideal_bits (0 without a map)
    num_elements: int
    mse: float
    seconds: float
    inner_codec: str = ""     # video anchor: the inner encoder and its version
    inner_bits: int = 0       # video anchor: bits of the inner bitstream alone
    inner_seconds: float = 0.0    # video anchor: wall time of the external encoder alone
    shared_picture: bool = False  # video anchor: the tiles lie in the preceding tensor's picture

    @property
    def bits_per_feature_point(self):
        return self.bits / self.num_elements


@dataclass
class EncodeResult:
    stream: bytes
    reports: list
    reconstruction: dict   # name -> decoded array, exactly what the decoder will output


def validate_tensors(tensors):
    """Refuse inputs the codec cannot represent, with one clear message each."""
    if not tensors:
        raise InputError("no tensors to encode")
    if len(tensors) > MAX_TENSORS:
        raise InputError(f"{len(tensors)} tensors; at most {MAX_TENSORS} per stream")
    total = 0
    for name, array in tensors.items():
        label = f"tensor '{name}'" if name else "the input tensor"
        if len(name.encode("utf-8")) > MAX_NAME_BYTES:
            raise InputError(f"{label}: name longer than {MAX_NAME_BYTES} bytes")
        if array.dtype not in DTYPE_OF_NUMPY:
            raise InputError(f"{label}: dtype {array.dtype} is not supported; the token-wise tool codes "
                             "float16, float32 or float64 features")
        if array.size == 0:
            raise InputError(f"{label}: the array is empty (shape {array.shape})")
        if not (2 <= array.ndim <= 3 or (array.ndim == 4 and array.shape[0] == 1)):
            raise InputError(f"{label}: shape {array.shape} is not N×C tokens, C×H×W or 1×C×H×W")
        if max(array.shape) > MAX_DIM:
            raise InputError(f"{label}: a dimension exceeds {MAX_DIM}")
        finite = np.isfinite(array)
        if not finite.all():
            bad = np.argwhere(~finite)[0]
            raise InputError(f"{label}: {int((~finite).sum())} values are NaN or infinite "
                             f"(first at index {tuple(int(i) for i in bad)})")
        total += array.size
    if total > MAX_DECODED_ELEMENTS:
        raise InputError(f"{total} feature points; a stream holds at most {MAX_DECODED_ELEMENTS}")


# The coder of each value of the Tool option: (tensors, options, step offsets, step allocator) -> [CodedTensor].
TENSOR_CODERS = {"tokenwise": code_tokenwise_tensors, "anchor": code_anchor_tensors, "lmsfc": code_lmsfc_tensors}


def mean_squared_error(reconstruction, original, block=1 << 20):
    """Mean of (reconstruction − original)² in float64, a block of elements at a time (no
    tensor-sized float64 temporaries)."""
    a, b = np.ravel(reconstruction), np.ravel(original)
    total = 0.0
    for start in range(0, a.size, block):
        error = a[start:start + block].astype(np.float64) - b[start:start + block]
        total += float(np.dot(error, error))
    return total / a.size if a.size else 0.0


def encode_features(tensors, options, step_offsets=None, step_allocator=None, trace=None):
    """Encode {name: array} with the tool options["Tool"]. For the token-wise tool, per-token
    steps come from step_offsets {name: (H, W) int offsets to QP; for N×C tokens (N,)} where
    given, else from step_allocator (an encoder.featjnd.allocation.StepAllocator) when
    active, else QP for every token. Returns an EncodeResult."""
    validate_tensors(tensors)
    step_offsets = step_offsets or {}
    tool = options["Tool"]
    if tool != "tokenwise" and (step_offsets or (step_allocator is not None and step_allocator.active)):
        raise ConfigError(f"per-token steps (step-offset maps, StepAllocation {options['StepAllocation']}) "
                          f"apply to the token-wise tool only, not to Tool {tool}")
    specs, payload_units, reports, reconstruction = [], [], [], {}
    coded_tensors = TENSOR_CODERS[tool](tensors, options, step_offsets, step_allocator)
    for index, ((name, array), coded) in enumerate(zip(tensors.items(), coded_tensors)):
        unit_trace = Trace() if trace is not None else None
        rw = SyntaxWriter(unit_trace)
        tensor_data_unit(rw, SyntaxStructure(tdu_tensor_idx=index, tdu_entropy_payload=coded.payload))
        payload = rw.getvalue()
        mse = mean_squared_error(coded.reconstruction, array)
        specs.append(coded.spec)
        payload_units.append((UnitType.TENSOR_DATA, payload, unit_trace))
        reconstruction[name] = coded.reconstruction
        reports.append(TensorReport(name=name, shape=array.shape, bits=8 * len(payload),
                                    ideal_bits=coded.ideal_bits, step_map_bits=coded.step_map_bits,
                                    num_elements=array.size,
                                    mse=mse, seconds=coded.seconds,
                                    inner_codec=coded.inner_codec,
                                    inner_bits=8 * len(coded.payload) if coded.spec.tool == Tool.VIDEO_ANCHOR else 0,
                                    inner_seconds=coded.inner_seconds,
                                    shared_picture=coded.spec.anchor is not None and coded.spec.anchor.shared_picture))

    units = [_syntax_unit(UnitType.FEATURE_PARAMETER_SET, feature_parameter_set, SyntaxStructure(
        fps_num_tensors_minus1=len(specs) - 1, fps_tensors=[to_tensor_info(s) for s in specs],
        fps_extension_flag=0), trace)]
    units += payload_units
    if options["DecodedFeatureHash"]:
        covered = covered_digest(write_stream(units)[:-UNIT_HEADER_BYTES])      # all but END_OF_STREAM
        units.append(_syntax_unit(UnitType.DECODED_FEATURE_HASH, decoded_feature_hash, SyntaxStructure(
            dfh_hash_type_idc=HashType.MD5, dfh_num_tensors_minus1=len(specs) - 1,
            dfh_tensors=[SyntaxStructure(dfh_md5=integrity_md5(covered, s, reconstruction[s.name]))
                         for s in specs]), trace))
    return EncodeResult(stream=write_stream(units, trace), reports=reports, reconstruction=reconstruction)


def _syntax_unit(unit_type, structure_function, structure, trace):
    unit_trace = Trace() if trace is not None else None
    rw = SyntaxWriter(unit_trace)
    structure_function(rw, structure)
    return unit_type, rw.getvalue(), unit_trace
