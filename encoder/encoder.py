"""The FCRS encoder library: named feature tensors in, stream bytes out.

    validate ─► TensorSpec per tensor ─► exponents (QP [+ step map]) ─► quantise
    ─► entropy payload ─► reconstruct (decoder's code) ─► hash ─► units

Analysis tools (e.g. FeatJND step allocation) only decide the per-token step
offsets handed to `encode_features`; coding is the same for every tool.
"""

import time
from dataclasses import dataclass

import numpy as np

from common.codepoints import DType, HashType, Layout, Tool, UnitType
from common.errors import InputError
from common.features import TensorSpec, to_tensor_info
from common.hashing import tensor_md5
from common.stream import write_stream
from common.syntax import SyntaxStructure, SyntaxWriter, Trace
from common.syntax_structures import (MAX_DECODED_ELEMENTS, MAX_DIM, MAX_NAME_BYTES, MAX_TENSORS,
                                      QP_MAX, QP_MIN, decoded_feature_hash, feature_parameter_set,
                                      tensor_data_unit)
from common.tokenwise_sq import TokenwiseEntropyCoder
from decoder.decoder import reconstruct
from encoder.quantiser import quantise

DTYPE_OF_NUMPY = {np.dtype(np.float16): DType.FLOAT16, np.dtype(np.float32): DType.FLOAT32,
                  np.dtype(np.float64): DType.FLOAT64}


@dataclass
class TensorReport:
    name: str
    shape: tuple
    bits: int             # bits of the tensor's data unit (header + payload)
    ideal_bits: float     # −log2 P of the coded symbols under the models used
    num_elements: int
    mse: float
    seconds: float

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


def tensor_spec(name, array, options, step_map):
    batch_axis = array.ndim == 4
    shape = array.shape[1:] if batch_axis else array.shape
    return TensorSpec(name=name, layout=Layout.CHW if len(shape) == 3 else Layout.TOKENS,
                      dtype=DTYPE_OF_NUMPY[array.dtype], shape=tuple(int(n) for n in shape),
                      batch_axis=batch_axis, tool=Tool.TOKENWISE_SQ, qp=options["QP"], step_map=step_map)


def coding_grid(spec, array):
    """The (C, H, W) float64 grid the coder works on (tokens N×C -> C×1×N)."""
    values = array.reshape(spec.shape).astype(np.float64)
    return values.T[:, None, :] if spec.layout == Layout.TOKENS else values


def encode_features(tensors, options, step_offsets=None, trace=None):
    """Encode {name: array}. step_offsets: optional {name: (H, W) int offsets to QP}
    (for N×C tokens: shape (1, N)). Returns an EncodeResult."""
    validate_tensors(tensors)
    step_offsets = step_offsets or {}
    specs, payload_units, reports, reconstruction = [], [], [], {}
    for index, (name, array) in enumerate(tensors.items()):
        start = time.perf_counter()
        offsets = step_offsets.get(name)
        spec = tensor_spec(name, array, options, step_map=offsets is not None)
        grid = coding_grid(spec, array)
        if offsets is None:
            offsets = np.zeros(spec.grid[1:], dtype=np.int64)
        offsets = np.asarray(offsets, dtype=np.int64)
        if offsets.shape != spec.grid[1:]:
            raise InputError(f"tensor '{name}': step-offset map of shape {offsets.shape}, expected {spec.grid[1:]}")
        exponents = spec.qp + offsets
        if exponents.min() < QP_MIN or exponents.max() > QP_MAX:
            raise InputError(f"tensor '{name}': step exponents must stay within [{QP_MIN}, {QP_MAX}]")
        levels = quantise(grid, exponents, options["RoundingOffset"], np.dtype(spec.numpy_dtype))
        coder = TokenwiseEntropyCoder()
        coder.code_tensor(levels, offsets, spec.grid, spec.step_map)
        unit_trace = Trace() if trace is not None else None
        rw = SyntaxWriter(unit_trace)
        tensor_data_unit(rw, SyntaxStructure(tdu_tensor_idx=index, tdu_entropy_payload=coder.finish()))
        payload = rw.getvalue()
        decoded = reconstruct(spec, levels, offsets)
        error = decoded.astype(np.float64) - array.astype(np.float64)
        specs.append(spec)
        payload_units.append((UnitType.TENSOR_DATA, payload, unit_trace))
        reconstruction[name] = decoded
        reports.append(TensorReport(name=name, shape=array.shape, bits=8 * len(payload),
                                    ideal_bits=coder.ideal_bits, num_elements=array.size,
                                    mse=float(np.mean(error ** 2)), seconds=time.perf_counter() - start))

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
