"""Decoder side of the token-wise tool: a tensor from its entropy payload (section Token-wise
scalar quantisation: entropy payload). numpy and constriction only, never torch."""

import numpy as np

from common.errors import BitstreamError
from common.features import from_grid
from common.tools.tokenwise.sq import (BLOCK_ELEMENTS, TokenwiseEntropyCoder, block_steps, channel_blocks, dequantise,
                                       widest_wave)
from common.tools.tokenwise.syntax import QP_MAX, QP_MIN


def decode_tokenwise_tensor(spec, payload):
    """Levels and step offsets from the payload, then reconstruction in the spec's dtype."""
    coder = TokenwiseEntropyCoder(payload)
    levels, offsets, channel_offsets = coder.code_tensor(None, None, spec.grid, spec.step_map, None,
                                                         spec.channel_offsets)
    coder.finish()
    return reconstruct(spec, levels, offsets, channel_offsets)


def exponent_range(qp, offsets, channel_offsets):
    """(smallest, largest) step exponent e_t,c = qp + o_t + p_c of a tensor."""
    low, high = qp + int(offsets.min()), qp + int(offsets.max())
    if channel_offsets is not None:
        low, high = low + int(channel_offsets.min()), high + int(channel_offsets.max())
    return low, high


def reconstruct(spec, levels, offsets, channel_offsets=None):
    """q · Δ_t,c rounded to the tensor's dtype, in its decoded shape (the encoder reuses this)."""
    low, high = exponent_range(spec.qp, offsets, channel_offsets)
    if low < QP_MIN or high > QP_MAX:
        raise BitstreamError(f"tensor '{spec.name}': a step exponent leaves [{QP_MIN}, {QP_MAX}]")
    exponents = spec.qp + offsets
    channels, height, width = levels.shape
    values = np.empty(levels.shape, dtype=spec.numpy_dtype)
    with np.errstate(over="ignore"):
        for block in channel_blocks(channels, height * width):   # float64 products, block by block
            values[block] = dequantise(levels[block], block_steps(exponents, channel_offsets, block))
    return from_grid(spec, values)


# Peak decoder memory, in bytes (section "Decoding cost"): per coded element (levels, values and
# the dtype conversion), per token (offsets, exponents, steps), per padded neighbour-map entry
# (magnitudes and signs), per element of the widest wave (its contexts) and per channel (its
# statistics): the numpy reference's, checked with tracemalloc on extreme shapes
# (tests/common/tools/test_tokenwise_bounds.py). The compiled kernel needs less in each term (int32
# levels, 86 bytes per element of its chunk scratch, which never exceeds the widest wave).
BYTES_PER_ELEMENT = 40
BYTES_PER_TOKEN = 32
BYTES_PER_NEIGHBOUR = 3
BYTES_PER_WAVE_ELEMENT = 160
BYTES_PER_CHANNEL = 64
# With channel offsets the steps are per element, computed for one block of channels at a time
# (channel_blocks: about 2^20 elements, or one channel): their temporaries, per element of a block.
BYTES_PER_BLOCK_STEP = 48


def tokenwise_memory(spec):
    """Bytes decoding this tensor needs at its peak (checked before anything is allocated)."""
    channels, height, width = spec.grid
    block = max(height * width, min(channels * height * width, BLOCK_ELEMENTS)) if spec.channel_offsets else 0
    return (BYTES_PER_ELEMENT * channels * height * width + BYTES_PER_TOKEN * height * width
            + BYTES_PER_NEIGHBOUR * channels * (height + 1) * (width + 2)
            + BYTES_PER_WAVE_ELEMENT * widest_wave(height, width) * channels + BYTES_PER_CHANNEL * channels
            + BYTES_PER_BLOCK_STEP * block)
