"""Encoder side of the token-wise tool: TensorSpec ─► exponents (QP [+ step map]) ─► quantise
─► entropy payload ─► reconstruct (the decoder's code, common/tools/tokenwise/decode.py)."""

import time

import numpy as np

from common.codepoints import Layout
from common.errors import InputError
from common.features import to_grid
from common.tools.tokenwise.decode import reconstruct
from common.tools.tokenwise.sq import TokenwiseEntropyCoder
from common.tools.tokenwise.syntax import QP_MAX, QP_MIN
from encoder.tools.interface import CodedTensor, tensor_spec
from encoder.tools.tokenwise.quantiser import quantise


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


def code_tokenwise_tensor(name, array, options, offsets, step_allocator):
    """Token-wise SQ: per-token steps from `offsets` ((H, W) or (N,) offsets to QP), else the
    step allocator when active, else QP everywhere; quantise, entropy code, reconstruct."""
    start = time.perf_counter()
    spec = tensor_spec(name, array, options["QP"], step_map=False)
    grid = to_grid(spec, array)      # the quantiser works in float64 block by block
    if offsets is not None:
        offsets = offsets_to_grid(spec, offsets)
    elif step_allocator is not None and step_allocator.active:
        offsets = step_allocator.offsets(spec, grid.astype(np.float64))
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
                       seconds=time.perf_counter() - start, ideal_bits=coder.ideal_bits,
                       step_map_bits=coder.step_map_bits)


def code_tokenwise_tensors(tensors, options, step_offsets, step_allocator):
    """Token-wise SQ, tensor by tensor."""
    return [code_tokenwise_tensor(name, array, options, step_offsets.get(name), step_allocator)
            for name, array in tensors.items()]
