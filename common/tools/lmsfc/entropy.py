"""L-MSFC's entropy models: the scale ladder, its frozen frequency tables, z's per-channel
tables, and the coding of the z and y sub-streams (one procedure for both directions).

This docstring down to the first code line is the spec's section "L-MSFC entropy coding".

## Tables

The normative tables are the arrays of `common/tools/lmsfc/tables.npz`
(`ladder_frequencies`, `ladder_half_widths`, `sigmoid`, `steps`); their SHA-256
is TABLES_SHA256 (section 6). Row k of the ladder is the discretised Gaussian of standard
deviation σ_k = SIGMA_MIN · 2^(k / 8) (in units of the step), over the symbols
−Q_k … Q_k (Q_k = ladder_half_widths[k]), as integer frequencies summing to
2^16, every one ≥ 1; the two end symbols are escapes. `steps[e − RATE_INDEX_MIN]`
is round(2^(e / 8) · 2^F), the fixed-point latent step Δ_e of latent exponent e.

## Sub-streams

Both sub-streams are data of the ANS coder the token-wise entropy payload
specifies (its "Entropy coder"; constriction 0.5.0's stack.AnsCoder), decoded in
the order given here; after its last symbol each coder must be empty.
Categorical models are its adaptive categorical quantisation of the integer
frequencies (constriction Categorical, perfect=False); Uniform(2^b) is its
bypass value of b bits.

z sub-stream: the symbols of ẑ, channel by channel (channel c with the
model's frequency table z_frequencies[c] over −Z_LIMIT … Z_LIMIT), each channel
in raster order.

y sub-stream: the hyper-synthesis gives, per element of y (channel-major,
raster order), the mean μ (fixed point) and t; with e_c the latent exponent of
the element's channel c (section L-MSFC: decoding process), the scale index is
k = clamp(floor((t + 2^(F−1)) / 2^F) − e_c, 0, NUM_SCALES − 1). The symbols are
decoded grouped by k (k = 0, 1, …; within a group in element order), each with
row k of the ladder. Then, for the elements whose symbol is an escape (in
element order), the excess e = |q| − Q_k ≥ 0 follows as Exp-Golomb-0: n with
Uniform(32), then e + 1 − 2^n with Uniform(2^n) when n > 0. The level is
q = ±(Q_k + e) for the escapes, the symbol otherwise, and ŷ = μ + q · Δ_{e_c}
(fixed point, clamped to ±ACTIVATION_LIMIT); a level of magnitude MAX_LEVEL or
more is an error.
"""

import functools
import hashlib
import math
from pathlib import Path

import numpy as np

from common.ans import ans_decoder, ans_payload
from common.errors import BitstreamError
from common.tools.lmsfc.arithmetic import FRACTION_BITS, SIGMOID_BITS

SIGMA_MIN = 0.11
LADDER_STEPS_PER_OCTAVE = 8
NUM_SCALES = 64
FREQUENCY_BITS = 16
Z_LIMIT = 15                       # ẑ symbols lie in [−Z_LIMIT, Z_LIMIT]
RATE_INDEX_MIN, RATE_INDEX_MAX = -32, 64
MAX_LEVEL = 1 << 20                # |q| of y; Exp-Golomb excess n < 21
TABLES_PATH = Path(__file__).with_name("tables.npz")
TABLES_SHA256 = "f46a3ed6da26f8df7c35d2cfd0299bf05663d67e97c9cfaec13d55dfc24948bd"   # of tables.npz


def build_tables():
    """The normative tables, as generated (the committed file is checked against this)."""
    from math import erf

    def cdf(x):
        return 0.5 * (1 + erf(x / math.sqrt(2)))

    half_widths = np.array([max(1, math.ceil(6 * SIGMA_MIN * 2 ** (k / LADDER_STEPS_PER_OCTAVE)))
                            for k in range(NUM_SCALES)], dtype=np.int64)
    width = 2 * int(half_widths.max()) + 1
    frequencies = np.zeros((NUM_SCALES, width), dtype=np.int64)
    for k, q_max in enumerate(half_widths):
        sigma = SIGMA_MIN * 2 ** (k / LADDER_STEPS_PER_OCTAVE)
        symbols = np.arange(-q_max, q_max + 1)
        probabilities = np.array([cdf((q + 0.5) / sigma) - cdf((q - 0.5) / sigma) for q in symbols])
        tail = 1 - cdf((q_max - 0.5) / sigma)
        probabilities[0] = probabilities[-1] = tail
        frequencies[k, :len(symbols)] = quantise_frequencies(probabilities)
    sigmoid = np.array([round((1 << SIGMOID_BITS) / (1 + math.exp(-(i - 127.5) / 16))) for i in range(256)],
                       dtype=np.int64)
    steps = np.array([round(2 ** (r / LADDER_STEPS_PER_OCTAVE) * (1 << FRACTION_BITS))
                      for r in range(RATE_INDEX_MIN, RATE_INDEX_MAX + 1)], dtype=np.int64)
    return {"ladder_frequencies": frequencies, "ladder_half_widths": half_widths, "sigmoid": sigmoid,
            "steps": steps}


def quantise_frequencies(probabilities, total_bits=FREQUENCY_BITS):
    """Integer frequencies ≥ 1 summing to 2^total_bits, the remainder on the most probable symbol."""
    total = 1 << total_bits
    probabilities = np.asarray(probabilities, dtype=np.float64)
    probabilities = probabilities / probabilities.sum()
    frequencies = np.maximum(1, np.round(probabilities * (total - len(probabilities))).astype(np.int64))
    frequencies[np.argmax(frequencies)] += total - frequencies.sum()
    if frequencies.min() < 1:
        raise ValueError("cannot quantise these probabilities")
    return frequencies


@functools.cache
def tables():
    """The normative tables, read on first use (decoding other tools never pays for them)."""
    with np.load(TABLES_PATH) as data:
        return {name: data[name] for name in data.files}


def tables_sha256():
    return hashlib.sha256(TABLES_PATH.read_bytes()).hexdigest()




def scale_indices(scale_t, exponents):
    """k = clamp(floor((t + 2^(F−1)) / 2^F) − e_c, 0, NUM_SCALES − 1) of fixed-point t (M×H×W) and
    the latent exponents e (M,), or of any t and one exponent."""
    exponents = np.asarray(exponents, dtype=np.int64)
    if exponents.ndim == 1:
        exponents = exponents.reshape(-1, 1, 1)
    return np.clip(((scale_t + (1 << (FRACTION_BITS - 1))) >> FRACTION_BITS) - exponents, 0, NUM_SCALES - 1)


def latent_steps(exponents):
    """Fixed-point Δ_e = steps[e − RATE_INDEX_MIN] of each latent exponent, shaped (M, 1, 1)."""
    return tables()["steps"][np.asarray(exponents, dtype=np.int64) - RATE_INDEX_MIN].reshape(-1, 1, 1)


class LatentCoder:
    """The z and y sub-streams, encoded (symbols given) or decoded (payload given)."""

    def __init__(self, payload=None):
        import constriction
        self._categorical = constriction.stream.model.Categorical
        self._uniform = constriction.stream.model.Uniform
        if payload is None:
            self._coder = constriction.stream.stack.AnsCoder()
        else:
            self._coder = ans_decoder(payload, "an L-MSFC sub-stream")

    def payload(self):
        return ans_payload(self._coder)

    def finish(self):
        if not self._coder.is_empty():
            raise BitstreamError("an L-MSFC sub-stream has data left after its last symbol")

    def _model(self, frequencies):
        return self._categorical(frequencies.astype(np.float64), perfect=False)

    def _decode(self, *args):
        try:
            return self._coder.decode(*args)
        except Exception:   # constriction reports running out of data as a generic error
            raise BitstreamError("an L-MSFC sub-stream ends before its last symbol") from None

    def encode_z(self, symbols, z_frequencies):
        """symbols: C×h×w ints in [−Z_LIMIT, Z_LIMIT]."""
        for c in reversed(range(symbols.shape[0])):
            self._coder.encode_reverse((symbols[c].ravel() + Z_LIMIT).astype(np.int32), self._model(z_frequencies[c]))

    def decode_z(self, shape, z_frequencies):
        out = np.empty(shape, dtype=np.int64)
        count = shape[1] * shape[2]
        for c in range(shape[0]):
            out[c] = self._decode(self._model(z_frequencies[c]), count).reshape(shape[1:]) - Z_LIMIT
        return out

    def encode_y(self, levels, indices):
        """levels, indices: flat int arrays of y in element order."""
        half = tables()["ladder_half_widths"][indices]
        escape = np.abs(levels) >= half
        excess = np.abs(levels[escape]) - half[escape]
        bits = np.floor(np.log2(excess + 1)).astype(np.int64)
        for e, n in zip(excess[::-1], bits[::-1]):
            if n > 0:
                self._coder.encode_reverse(np.array([e + 1 - (1 << n)], dtype=np.int32), self._uniform(1 << int(n)))
            self._coder.encode_reverse(np.array([n], dtype=np.int32), self._uniform(32))
        symbols = np.clip(levels, -half, half) + half
        for k in reversed(range(NUM_SCALES)):
            members = indices == k
            if members.any():
                row = tables()["ladder_frequencies"][k, :2 * tables()["ladder_half_widths"][k] + 1]
                self._coder.encode_reverse(symbols[members].astype(np.int32), self._model(row))

    def decode_y(self, indices):
        half = tables()["ladder_half_widths"][indices]
        levels = np.empty(len(indices), dtype=np.int64)
        for k in range(NUM_SCALES):
            members = np.flatnonzero(indices == k)
            if len(members):
                row = tables()["ladder_frequencies"][k, :2 * tables()["ladder_half_widths"][k] + 1]
                levels[members] = self._decode(self._model(row), len(members)) - half[members]
        for position in np.flatnonzero(np.abs(levels) >= half):
            (n,) = self._decode(self._uniform(32), 1)
            if n > 20:
                raise BitstreamError("an L-MSFC escape exceeds MAX_LEVEL")
            excess = (1 << int(n)) - 1 + (int(self._decode(self._uniform(1 << int(n)), 1)[0]) if n > 0 else 0)
            if half[position] + excess >= MAX_LEVEL:
                raise BitstreamError("an L-MSFC level exceeds MAX_LEVEL")
            levels[position] = np.sign(levels[position]) * (half[position] + excess)
        return levels
