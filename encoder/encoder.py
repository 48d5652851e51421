"""The FCRS encoder library: named feature tensors in, stream bytes out.

    validate ─► per tensor, by the Tool option (TENSOR_CODERS):
        tokenwise: TensorSpec ─► exponents (QP [+ step map]) ─► quantise ─► entropy payload
                   ─► reconstruct (decoder's code)
        anchor:    encoder/video_anchor.py: levels ─► tiled picture (one per tensor, or one for
                   all: AnchorPacking) ─► x265 / VTM ─► inner bitstream ─► reconstruct (decoder's
                   code: libde265 / VTM)
    ─► tensor data units ─► hash ─► units

Analysis tools (e.g. FeatJND step allocation) only decide the per-token step
offsets handed to `encode_features`; coding is the same for every allocation.
"""

import time
from dataclasses import dataclass

import numpy as np

from common.codepoints import DType, HashType, Layout, Tool, UnitType
from common.errors import ConfigError, InputError
from common.features import TensorSpec, to_grid, to_tensor_info
from common.hashing import tensor_md5
from common.stream import write_stream
from common.syntax import SyntaxStructure, SyntaxWriter, Trace
from common.syntax_structures import (MAX_DECODED_ELEMENTS, MAX_DIM, MAX_NAME_BYTES, MAX_TENSORS,
                                      QP_MAX, QP_MIN, decoded_feature_hash, feature_parameter_set,
                                      tensor_data_unit)
from common.tokenwise_sq import TokenwiseEntropyCoder
from decoder.decoder import reconstruct
from encoder.quantiser import quantise
from encoder.video_anchor import encode_video_anchor

DTYPE_OF_NUMPY = {np.dtype(np.float16): DType.FLOAT16, np.dtype(np.float32): DType.FLOAT32,
                  np.dtype(np.float64): DType.FLOAT64}


@dataclass
class TensorReport:
    name: str
    shape: tuple
    bits: int             # bits of the tensor's data unit (header + payload)
    ideal_bits: float     # token-wise: −log2 P of the coded symbols under the models used; anchor: None
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


def tensor_spec(name, array, qp, step_map):
    batch_axis = array.ndim == 4
    shape = tuple(int(n) for n in (array.shape[1:] if batch_axis else array.shape))
    layout = Layout.CHW if len(shape) == 3 else Layout.TOKENS
    return TensorSpec(name=name, layout=layout, dtype=DTYPE_OF_NUMPY[array.dtype], shape=shape,
                      batch_axis=batch_axis, tool=Tool.TOKENWISE_SQ, qp=qp, step_map=step_map)


def offsets_to_grid(spec, offsets):
    """Step offsets as given by the caller ((H, W) maps; (N,) or (1, N) for tokens) on the
    coding grid; token-grid padding repeats the last token's offset (a free residual)."""
    offsets = np.asarray(offsets, dtype=np.int64)
    if spec.layout == Layout.CHW:
        expected = spec.grid[1:]
    else:
        expected = (spec.shape[0],)
        offsets = offsets.reshape(-1) if offsets.ndim == 2 and offsets.shape[0] == 1 else offsets
    if offsets.shape != expected:
        raise InputError(f"tensor '{spec.name}': step-offset map of shape {offsets.shape}, expected {expected}")
    if spec.layout == Layout.TOKENS:
        _, height, width = spec.grid
        offsets = np.concatenate([offsets, np.full(height * width - len(offsets), offsets[-1])])
        offsets = offsets.reshape(height, width)
    return offsets


def signalled_steps(qp, offsets):
    """(tsq_qp, offsets to it, step map needed?) for per-token offsets to QP: the base
    moves to the median exponent so the map codes small residuals, and a map whose
    offsets are all equal is not sent at all."""
    if offsets is None:
        return qp, None, False
    base = qp + int(np.median(offsets))
    relative = offsets - (base - qp)
    return base, relative, bool(relative.any())


@dataclass
class CodedTensor:
    """What a tool's coder hands back for one tensor."""
    spec: TensorSpec
    payload: bytes                 # tdu_entropy_payload
    reconstruction: np.ndarray     # exactly what the decoder will output
    seconds: float                 # encoding wall time of this tensor
    ideal_bits: float = None
    inner_codec: str = ""
    inner_seconds: float = 0.0


def code_tokenwise_tensor(name, array, options, offsets, step_allocator):
    """Token-wise SQ: per-token steps from `offsets` ((H, W) or (N,) offsets to QP), else the
    step allocator when active, else QP everywhere; quantise, entropy code, reconstruct."""
    start = time.perf_counter()
    spec = tensor_spec(name, array, options["QP"], step_map=False)
    grid = to_grid(spec, array.astype(np.float64))
    if offsets is not None:
        offsets = offsets_to_grid(spec, offsets)
    elif step_allocator is not None and step_allocator.active:
        offsets = step_allocator.offsets(spec, grid)
    qp, offsets, step_map = signalled_steps(options["QP"], offsets)
    spec = tensor_spec(name, array, qp, step_map)
    if offsets is None:
        offsets = np.zeros(spec.grid[1:], dtype=np.int64)
    exponents = spec.qp + offsets
    if exponents.min() < QP_MIN or exponents.max() > QP_MAX:
        raise InputError(f"tensor '{name}': step exponents must stay within [{QP_MIN}, {QP_MAX}]")
    levels = quantise(grid, exponents, options["RoundingOffset"], np.dtype(spec.numpy_dtype))
    coder = TokenwiseEntropyCoder()
    coder.code_tensor(levels, offsets, spec.grid, spec.step_map)
    payload = coder.finish()
    return CodedTensor(spec=spec, payload=payload, reconstruction=reconstruct(spec, levels, offsets),
                       seconds=time.perf_counter() - start, ideal_bits=coder.ideal_bits)


def code_tokenwise_tensors(tensors, options, step_offsets, step_allocator):
    """Token-wise SQ, tensor by tensor."""
    return [code_tokenwise_tensor(name, array, options, step_offsets.get(name), step_allocator)
            for name, array in tensors.items()]


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


# The coder of each value of the Tool option: (tensors, options, step offsets, step allocator) -> [CodedTensor].
TENSOR_CODERS = {"tokenwise": code_tokenwise_tensors, "anchor": code_anchor_tensors}


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
        error = coded.reconstruction.astype(np.float64) - array.astype(np.float64)
        specs.append(coded.spec)
        payload_units.append((UnitType.TENSOR_DATA, payload, unit_trace))
        reconstruction[name] = coded.reconstruction
        reports.append(TensorReport(name=name, shape=array.shape, bits=8 * len(payload),
                                    ideal_bits=coded.ideal_bits, num_elements=array.size,
                                    mse=float(np.mean(error ** 2)), seconds=coded.seconds,
                                    inner_codec=coded.inner_codec,
                                    inner_bits=8 * len(coded.payload) if coded.spec.tool == Tool.VIDEO_ANCHOR else 0,
                                    inner_seconds=coded.inner_seconds,
                                    shared_picture=coded.spec.anchor is not None and coded.spec.anchor.shared_picture))

    units = [_syntax_unit(UnitType.FEATURE_PARAMETER_SET, feature_parameter_set, SyntaxStructure(
        fps_num_tensors_minus1=len(specs) - 1, fps_tensors=[to_tensor_info(s) for s in specs],
        fps_extension_flag=0), trace)]
    units += payload_units
    if options["DecodedFeatureHash"]:
        units.append(_syntax_unit(UnitType.DECODED_FEATURE_HASH, decoded_feature_hash, SyntaxStructure(
            dfh_hash_type_idc=HashType.MD5, dfh_num_tensors_minus1=len(specs) - 1,
            dfh_tensors=[SyntaxStructure(dfh_md5=tensor_md5(reconstruction[s.name])) for s in specs]), trace))
    return EncodeResult(stream=write_stream(units, trace), reports=reports, reconstruction=reconstruction)


def _syntax_unit(unit_type, structure_function, structure, trace):
    unit_trace = Trace() if trace is not None else None
    rw = SyntaxWriter(unit_trace)
    structure_function(rw, structure)
    return unit_type, rw.getvalue(), unit_trace
