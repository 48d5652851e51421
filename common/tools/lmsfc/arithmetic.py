"""L-MSFC's integer arithmetic: the normative decoder-side network computation.

This docstring down to the first code line is the spec's section "L-MSFC
integer arithmetic".

Every decoder-side tensor (ẑ, the hyper-synthesis output, ŷ and every DRNet
activation) is an array of integers a standing for a / 2^F, F = FRACTION_BITS.
The networks of `common/tools/lmsfc/graph.py` (hyper_synthesis, drnet) are
evaluated with these operations only:

* conv(x) with integer weights w (C_out × C_in × k × k, |w| < 2^15), integer
  bias b and shift s of the layer, zero padding floor(k / 2) on each side,
  stride 1 or 2: acc = Σ w · x + b exactly (|acc| < 2^53 by the bounds below),
  out = floor((acc + 2^(s − 1)) / 2^s) (s = 0: out = acc), clamped to
  [−ACTIVATION_LIMIT, ACTIVATION_LIMIT]. The weight of layer l stands for
  w / 2^s, its bias for b / 2^(F + s).
* relu(x) = max(x, 0); add(a, b) = clamp(a + b) as above; concat and crop are
  exact; pixel_shuffle moves channel 4c + 2i + j to channel c, row 2h + i,
  column 2w + j.
* sigmoid_gate(x, g) = floor((x · SIGMOID[i] + 2^(SIGMOID_BITS − 1)) / 2^SIGMOID_BITS)
  with i = clamp(floor(g / 2^(F − 4)) + 128, 0, 255): SIGMOID is the table of
  sigmoid on [−8, 8) in steps of 1/16 (midpoints), scaled by 2^SIGMOID_BITS.

Bounds: |x| ≤ ACTIVATION_LIMIT = 2^20 − 1, |w| < 2^15 and C_in · k² ≤ 2^13 give
|Σ w · x| < 2^48 and, with |b| < 2^52 − 2^48, |acc| < 2^52: every partial sum
is an integer exactly representable in IEEE binary64, so any summation order —
numpy's BLAS, torch on CPU or GPU, any thread count — gives the same acc.
Implementations may therefore evaluate Σ w · x as a float64 matrix product.
"""

import numpy as np

FRACTION_BITS = 8
ACTIVATION_LIMIT = (1 << 20) - 1
WEIGHT_LIMIT = (1 << 15) - 1
MAX_CONV_INPUTS = 1 << 13          # C_in · k² of any decoder-side layer
BIAS_LIMIT = (1 << 52) - (1 << 48)
SIGMOID_BITS = 12


PATCH_ELEMENTS = 1 << 22           # im2col works on row bands of at most this many patch elements


def im2col(x, kernel, stride, rows=None):
    """(C, H, W) -> (C · k², rows · W_out) patches of the output rows `rows` (a range; all by
    default), zero padding floor(k / 2), in x's dtype; and (H_out, W_out)."""
    channels, height, width = x.shape
    out_h, out_w = -(-height // stride), -(-width // stride)
    rows = rows or range(out_h)
    pad = kernel // 2
    padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad))) if pad else x
    first, count = rows.start, len(rows)
    columns = np.empty((channels, kernel, kernel, count, out_w), dtype=x.dtype)
    for i in range(kernel):
        top = i + stride * first
        for j in range(kernel):
            columns[:, i, j] = padded[:, top:top + stride * count:stride, j:j + stride * out_w:stride]
    return columns.reshape(channels * kernel * kernel, -1), (out_h, out_w)


def row_bands(channels, kernel, out_h, out_w):
    """Output-row ranges whose patches hold at most PATCH_ELEMENTS elements (memory bound)."""
    rows_per_band = max(1, PATCH_ELEMENTS // max(1, channels * kernel * kernel * out_w))
    return [range(r, min(out_h, r + rows_per_band)) for r in range(0, out_h, rows_per_band)]


def pixel_shuffle(x):
    channels, height, width = x.shape
    out = x.reshape(channels // 4, 2, 2, height, width).transpose(0, 3, 1, 4, 2)
    return out.reshape(channels // 4, 2 * height, 2 * width)


class ArrayOps:
    """The operations that are exact in any arithmetic (numpy C×H×W arrays); subclasses add conv,
    add and sigmoid_gate."""

    def relu(self, x):
        return np.maximum(x, 0)

    def concat(self, a, b):
        return np.concatenate([a, b])

    def pixel_shuffle(self, x):
        return pixel_shuffle(x)

    def crop(self, x, size):
        return np.ascontiguousarray(x[:, :size[0], :size[1]])


class IntegerOps(ArrayOps):
    """The normative decoder-side arithmetic. `layers` maps a layer name to (w, b, s) as
    int64 arrays and an int; `product` is "numpy" or "torch" (the same integers, by the
    bounds in this module's docstring)."""

    def __init__(self, layers, sigmoid_table, product="numpy"):
        self.layers, self.sigmoid_table = layers, sigmoid_table
        self.product = product
        self._float_weights = {}

    def _matmul(self, name, weights, patches):
        if name not in self._float_weights:
            self._float_weights[name] = weights.reshape(weights.shape[0], -1).astype(np.float64)
        w = self._float_weights[name]
        if self.product == "torch":
            import torch
            return torch.from_numpy(w).matmul(torch.from_numpy(patches)).numpy()
        return w @ patches

    def conv(self, name, x, channels, kernel, stride=1):
        weights, bias, shift = self.layers[name]
        values = x.astype(np.float64)
        out_h, out_w = -(-x.shape[1] // stride), -(-x.shape[2] // stride)
        out = np.empty((channels, out_h * out_w), dtype=np.int64)
        for rows in row_bands(x.shape[0], kernel, out_h, out_w):
            patches, _ = im2col(values, kernel, stride, rows)
            acc = self._matmul(name, weights, patches).astype(np.int64) + bias[:, None]
            if shift > 0:
                acc = (acc + (1 << (shift - 1))) >> shift
            out[:, rows.start * out_w:rows.stop * out_w] = acc
        return np.clip(out, -ACTIVATION_LIMIT, ACTIVATION_LIMIT).reshape(channels, out_h, out_w)

    def add(self, a, b):
        return np.clip(a + b, -ACTIVATION_LIMIT, ACTIVATION_LIMIT)

    def sigmoid_gate(self, x, gate):
        index = np.clip((gate >> (FRACTION_BITS - 4)) + 128, 0, 255)
        return (x * self.sigmoid_table[index] + (1 << (SIGMOID_BITS - 1))) >> SIGMOID_BITS


class FloatOps(ArrayOps):
    """The encoder's float32 analysis (FENet, hyper-analysis): informative, any implementation
    that approximates the trained networks will do. `layers` maps a name to (w, b) float32."""

    def __init__(self, layers):
        self.layers = layers

    def conv(self, name, x, channels, kernel, stride=1):
        weights, bias = self.layers[name]
        out_h, out_w = -(-x.shape[1] // stride), -(-x.shape[2] // stride)
        out = np.empty((channels, out_h * out_w), dtype=np.float32)
        for rows in row_bands(x.shape[0], kernel, out_h, out_w):
            patches, _ = im2col(x, kernel, stride, rows)
            out[:, rows.start * out_w:rows.stop * out_w] = weights.reshape(channels, -1) @ patches + bias[:, None]
        return out.reshape(channels, out_h, out_w)

    def add(self, a, b):
        return a + b

    def sigmoid_gate(self, x, gate):
        return x / (1 + np.exp(-gate))
