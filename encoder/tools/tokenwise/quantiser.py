"""Token-wise scalar quantiser (encoder side of common/tools/tokenwise/sq.py)."""

import numpy as np

from common.errors import InputError
from common.tools.tokenwise.sq import MAX_ABS_LEVEL, block_steps, channel_blocks, dequantise


def quantise(grid_values, exponents, rounding_offset, output_dtype, channel_offsets=None):
    """Levels q = sign(f) · floor(|f| / Δ_t,c + offset) (offset < 1) for a (C, H, W) grid of any
    float dtype, computed in float64; exponents (H, W) are tsq_qp + o_t, channel_offsets (C,)
    the p_c (None: none). int32 levels (|q| ≤ MAX_ABS_LEVEL), held position-major (the entropy
    coder's order; the result is a (C, H, W) view).

    Levels whose reconstruction would overflow the output dtype are pulled one
    step towards zero, so the decoder never produces an infinity.
    """
    channels, height, width = grid_values.shape
    levels = np.empty((height, width, channels), dtype=np.int32).transpose(2, 0, 1)
    largest, largest_step = 0, 0.0
    for block in channel_blocks(channels, height * width):
        steps = block_steps(exponents, channel_offsets, block)
        largest_step = max(largest_step, float(steps.max()))
        scaled = np.abs(grid_values[block], dtype=np.float64)
        scaled /= steps
        block_largest = float(np.floor(scaled.max(initial=0.0) + rounding_offset))   # the block's largest |q|
        if block_largest > MAX_ABS_LEVEL:
            raise InputError(f"a value needs a level above {MAX_ABS_LEVEL} at this QP: raise QP")
        largest = max(largest, block_largest)
        scaled += rounding_offset
        np.floor(scaled, out=scaled)
        np.copysign(scaled, grid_values[block], out=scaled)   # sign(f) · floor(…): f = 0 gives 0
        levels[block] = scaled
    limit = np.finfo(output_dtype).max
    if largest * largest_step <= limit:
        return levels          # no reconstruction can overflow: skip the per-element check
    steps = block_steps(exponents, channel_offsets, slice(0, channels))
    overflow = np.abs(dequantise(levels, steps)) > limit
    while overflow.any():
        levels[overflow] -= np.sign(levels[overflow])
        overflow = np.abs(dequantise(levels, steps)) > limit
    return levels
