"""Encoder side of the token-wise tool: TensorSpec ─► exponents (QP [+ token map] [+ channel
offsets]) ─► quantise ─► entropy payload ─► reconstruct (the decoder's code,
common/tools/tokenwise/decode.py)."""

import dataclasses
import time

import numpy as np

from common.codepoints import Layout
from common.errors import InputError
from common.features import to_grid
from common.tools.tokenwise.decode import exponent_range, reconstruct
from common.tools.tokenwise.sq import TokenwiseEntropyCoder
from common.tools.tokenwise.syntax import QP_MAX, QP_MIN
from encoder.tools.interface import CodedTensor, StepOffsets, tensor_spec
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


def channel_offsets_checked(spec, offsets):
    """Per-channel step offsets as given by the caller, checked against the tensor's channels."""
    offsets = np.asarray(offsets, dtype=np.int64)
    if offsets.shape != (spec.grid[0],):
        raise InputError(f"tensor '{spec.name}': channel step offsets of shape {offsets.shape}, "
                         f"expected ({spec.grid[0]},)")
    return offsets


def signalled_offsets(offsets):
    """(offsets less their median, the median, any left?): the base exponent takes the median so
    the offsets code small values, and offsets that are all equal are not sent at all."""
    if offsets is None:
        return None, 0, False
    median = int(np.median(offsets))
    relative = offsets - median
    return relative, median, bool(relative.any())


def code_tokenwise_tensor(name, array, options, offsets, step_allocator):
    """Token-wise SQ: steps from `offsets` (a StepOffsets, or a token map: (H, W) or (N,) offsets
    to QP), else from the step allocator when active, else QP everywhere; quantise, entropy code,
    reconstruct."""
    start = time.perf_counter()
    spec = tensor_spec(name, array, options["QP"], step_map=False)
    grid = to_grid(spec, array)      # the quantiser works in float64 block by block
    if offsets is not None:           # the caller's: token offsets in the tensor's shape
        offsets = offsets if isinstance(offsets, StepOffsets) else StepOffsets(tokens=offsets)
        offsets = StepOffsets(tokens=None if offsets.tokens is None else offsets_to_grid(spec, offsets.tokens),
                              channels=offsets.channels)
    elif step_allocator is not None and step_allocator.active:     # the allocator's: on the coding grid
        offsets = step_allocator.offsets(spec, grid.astype(np.float64))
        offsets = offsets if isinstance(offsets, StepOffsets) else StepOffsets(tokens=offsets)
    else:
        offsets = StepOffsets()
    token_offsets = offsets.tokens
    channel_offsets = None if offsets.channels is None else channel_offsets_checked(spec, offsets.channels)
    token_offsets, token_base, step_map = signalled_offsets(token_offsets)
    channel_offsets, channel_base, channel_flag = signalled_offsets(channel_offsets)
    spec = dataclasses.replace(spec, qp=options["QP"] + token_base + channel_base, step_map=step_map,
                               channel_offsets=channel_flag)
    if token_offsets is None:
        token_offsets = np.zeros(spec.grid[1:], dtype=np.int64)
    channel_offsets = channel_offsets if channel_flag else None
    low, high = exponent_range(spec.qp, token_offsets, channel_offsets)
    if low < QP_MIN or high > QP_MAX:
        raise InputError(f"tensor '{name}': step exponents must stay within [{QP_MIN}, {QP_MAX}]")
    levels = quantise(grid, spec.qp + token_offsets, options["RoundingOffset"], np.dtype(spec.numpy_dtype),
                      channel_offsets)
    coder = TokenwiseEntropyCoder()
    coder.code_tensor(levels, token_offsets, spec.grid, spec.step_map, channel_offsets, spec.channel_offsets)
    payload = coder.finish()
    return CodedTensor(spec=spec, payload=payload,
                       reconstruction=reconstruct(spec, levels, token_offsets, channel_offsets),
                       seconds=time.perf_counter() - start, ideal_bits=coder.ideal_bits,
                       step_map_bits=coder.step_map_bits)


def code_tokenwise_tensors(tensors, options, step_offsets, step_allocator):
    """Token-wise SQ, tensor by tensor."""
    return [code_tokenwise_tensor(name, array, options, step_offsets.get(name), step_allocator)
            for name, array in tensors.items()]
