"""Token-wise scalar quantiser (encoder side of common/tools/tokenwise/sq.py)."""

import numpy as np

from common.errors import InputError
from common.tools.tokenwise.sq import MAX_ABS_LEVEL, dequantise, step_sizes


def quantise(grid_values, exponents, rounding_offset, output_dtype):
    """Levels q = sign(f) · floor(|f| / Δ_t + offset) for a (C, H, W) float64 grid.

    Levels whose reconstruction would overflow the output dtype are pulled one
    step towards zero, so the decoder never produces an infinity.
    """
    steps = step_sizes(exponents)
    scaled = np.abs(grid_values) / steps[None, :, :]
    if np.floor(scaled.max(initial=0.0) + rounding_offset) > MAX_ABS_LEVEL:
        raise InputError(f"a value needs a level above {MAX_ABS_LEVEL} at this QP: raise QP")
    levels = (np.sign(grid_values) * np.floor(scaled + rounding_offset)).astype(np.int64)
    limit = np.finfo(output_dtype).max
    if float(np.abs(levels).max(initial=0)) * float(steps.max()) <= limit:
        return levels          # no reconstruction can overflow: skip the per-element check
    overflow = np.abs(dequantise(levels, steps)) > limit
    while overflow.any():
        levels[overflow] -= np.sign(levels[overflow])
        overflow = np.abs(dequantise(levels, steps)) > limit
    return levels
