"""Decoder side of the token-wise tool: a tensor from its entropy payload (section Token-wise
scalar quantisation: entropy payload). numpy and constriction only, never torch."""

import numpy as np

from common.errors import BitstreamError
from common.features import from_grid
from common.tools.tokenwise.sq import TokenwiseEntropyCoder, dequantise, step_sizes
from common.tools.tokenwise.syntax import QP_MAX, QP_MIN


def decode_tokenwise_tensor(spec, payload):
    """Levels and step offsets from the payload, then reconstruction in the spec's dtype."""
    coder = TokenwiseEntropyCoder(payload)
    levels, offsets = coder.code_tensor(None, None, spec.grid, spec.step_map)
    coder.finish()
    return reconstruct(spec, levels, offsets)


def reconstruct(spec, levels, offsets):
    """q · Δ_t rounded to the tensor's dtype, in its decoded shape (the encoder reuses this)."""
    exponents = spec.qp + offsets
    if exponents.min() < QP_MIN or exponents.max() > QP_MAX:
        raise BitstreamError(f"tensor '{spec.name}': a token's step exponent leaves [{QP_MIN}, {QP_MAX}]")
    grid_values = dequantise(levels, step_sizes(exponents))
    with np.errstate(over="ignore"):
        return from_grid(spec, grid_values.astype(spec.numpy_dtype))


BYTES_PER_ELEMENT = 40      # peak decoder memory per coded element (levels, contexts, values)


def tokenwise_memory(spec):
    """Bytes decoding this tensor needs at its peak (checked before anything is allocated)."""
    channels, height, width = spec.grid
    return BYTES_PER_ELEMENT * channels * height * width
