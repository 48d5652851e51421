"""Token-wise scalar quantisation: steps, dequantisation and the entropy payload.

This module's docstring down to the first code line is the spec's section
"Entropy payload" (copied into docs/bitstream.md by common/specdoc.py).

## Steps and reconstruction

A tensor is coded on a grid of C channels × H × W token positions: a C×H×W map
as it is, an N×C matrix on the near-square token grid of ti_num_tokens_minus1
(token n at position (n div W, n mod W), padding positions coded as zeros). The
element of token t in channel c has the step exponent e_t,c = tsq_qp + o_t + p_c
(o_t = 0 unless tsq_step_map_flag, p_c = 0 unless tsq_channel_offsets_flag) and the
step Δ_t,c = 2^((e_t,c − 48) / 8), computed exactly as
ldexp(STEP_FRACTIONS[(e_t,c − 48) mod 8], floor((e_t,c − 48) / 8)), where
STEP_FRACTIONS are the float64 constants in this module. Every e_t,c must lie in
[QP_MIN, QP_MAX]. The decoded value is q · Δ_t,c in IEEE float64, rounded once to
the tensor's dtype.

## Entropy coder

tdu_entropy_payload is the data of an asymmetric numeral systems (ANS) coder
with a 64-bit state x, 32-bit words and 24-bit probabilities, serialised as
little-endian 32-bit words: its length is a multiple of 4. (It is the data
constriction 0.5.0's stack.AnsCoder writes with the models below; the numpy
reference coder uses constriction, the compiled one, kernel.c, is this text.)
Symbols are decoded in the order this section gives; the encoder encodes them
in reverse. ANS is used rather than a range coder because it has no per-symbol
truncation loss: sparse features cost several binary decisions per bit of
information, and a range coder's ~1.3e-4 bits per decision would add up.

Each model gives its symbols quantile ranges [start, start + f) that tile
[0, 2^24). Three model kinds are used, all with parameters the decoder derives
from integers it has already decoded:

* binary decision with adaptive context `ctx` (constriction Bernoulli,
  perfect=False, with p1 = P1 / 2^24): P1 = clamp(((2·n1 + 1) · 2^24) div
  (2·(n0 + n1) + 2), 1, 2^24 − 1), where (n0, n1) are the context's counts;
  0 takes [0, s1) and 1 takes [s1, 2^24), s1 = 1 + ((2^24 − P1) · (2^24 − 2)) div 2^24;
* adaptive categorical (constriction Categorical, perfect=False) over the n
  symbols of the context's integer counts c_0 … c_(n−1), total T: symbol i
  starts at floor(C_i · ((2^24 − n) / T)) + i, C_i = c_0 + … + c_(i−1), the
  quotient and then the product each one IEEE 754 double operation rounded to
  nearest; the last range ends at 2^24;
* bypass value v of b bits (1 ≤ b ≤ 16; constriction Uniform(2^b)): start
  v · 2^(24−b), f = 2^(24−b).

Decoding: of the payload's words w_0 … w_(m−1), which must not end in a zero
word, x = 0 when m = 0, x = w_0 when m = 1, else x = w_(m−1) · 2^32 + w_(m−2)
and w_0 … w_(m−3) remain. A symbol is the one whose range holds slot = x mod
2^24; then x = f · (x div 2^24) + slot − start and, if x < 2^32 and words
remain, x = x · 2^32 + the last remaining word, which is removed. After the
last symbol x must be 0 with no word left. (Encoding, informative: from x = 0,
for each symbol from the last: if x div 2^40 ≥ f, emit x mod 2^32 and x = x div
2^32; then x = (x div f) · 2^24 + x mod f + start. The payload is the emitted
words in order, then x mod 2^32 when x ≠ 0 and x div 2^32 when that is ≠ 0.)

Counts start at SIG_INITIAL_COUNTS[sig_channel_class] for SIG contexts (the
channel-rate bucket the class stands for, weighted as 32 observations), at
(0, 0) for the other binary contexts and at 1 per symbol for categorical ones. They are updated only between *chunks* (below): a binary decision adds 1
to n0 or n1, a categorical symbol adds 2 to its count. When a context's total
exceeds RESCALE_LIMIT after an update, every count of that context is halved,
rounding up, until it does not.

## Decoding cost

No payload length bounds the tensor it codes: a decision whose first symbol's
quantile range starts at 0 (sig = 0, a level of 0) decodes from an ANS state x
below 2^24 without changing it, so an all-zero tensor of any size has an empty
payload. Two consequences bound the decoder's work instead, and a decoder
applies them at the start of every wave (their results equal decoding on):

* when the coder is exhausted (no words left, x = 0), every remaining level is
  0: the rest of the tensor is decoded without visiting it;
* when the coder holds one word x < 2^24 and x is below the quantile range of
  sig = 0 in every SIG context the remaining waves can select while their
  levels are 0, every remaining level is 0 and x never reaches 0: the stream is
  refused (data left over) at once. Those contexts: channel classes 1 up to the
  highest now (a class only falls as positions accrue while Z stays); before
  the first wave, classes 0 up to that of Z = 0, N = 1 (the first wave's one
  position); counts whose n1 cannot grow and whose n0 + n1 stays at least
  min(n0 + n1, RESCALE_LIMIT / 2), so p1 ≤ (2·n1 + 1) / (2·min(n0 + n1,
  RESCALE_LIMIT / 2) + 2).

The decoder's memory is bounded before anything is allocated: the tensors hold
at most MAX_DECODED_ELEMENTS elements, and the decoder refuses a stream whose
estimated peak (common/tools/tokenwise/decode.py: per element, per token, per
padded neighbour entry, per element of the widest wave, per channel and, with
channel offsets, per element of one block of channels) exceeds its memory budget
(1 GiB unless raised).

## Channel step offsets (only when tsq_channel_offsets_flag = 1)

Offsets p_c of the C channels in channel order, each coded as itself (r = p_c, no
prediction: channels have no order to predict along), with the code of the token map's
residuals below (its own adaptive context). They come first in the payload.

## Step-offset map (only when tsq_step_map_flag = 1)

Offsets o_t of the H × W tokens in raster order are predicted from the left
token (first column: from the token above; first token: 0). The residual r is
coded as the categorical symbol clip(r, −16, 16) + 16 of one adaptive context;
symbols 0 and 32 are escapes followed by |r| − 16 as an Exp-Golomb-0 value
(prefix n as bypass 5 bits, then n bypass bits). The channel offsets, the
residuals and the symbols below use one chunk schedule, in that order (its chunk
sizes run on from one to the next).

## Symbols

Positions are visited in waves: wave k holds the positions (h, w) with
2h + w = k, in increasing h; a wave's elements are ordered position-major,
channel-minor. Contexts only use positions of earlier waves: the left (h, w−1),
upper (h−1, w), upper-left and upper-right neighbours in the same channel,
and per-channel counts over earlier waves. A wave is split into chunks; chunk
sizes start at 16 elements and double after every chunk up to
CHUNK_LIMIT = 2^max(10, bit_length(C·H·W div 4096)); a chunk never crosses a
wave boundary. Within a chunk, in this order:

1. sig: q ≠ 0, for every element (binary, SIG contexts);
2. gt1: |q| > 1, for elements with sig (binary, GT1 contexts);
3. gt2: |q| > 2, for elements with gt1 (binary, GT2 contexts);
4. remainder |q| − 3 for elements with gt2: Exp-Golomb of order k, prefix n
   (adaptive categorical over 0..31, one context per k), then n + k suffix bits
   as bypass values of at most 16 bits, most significant first;
5. neg: q < 0, for elements with sig (binary, SIGN contexts).

With a, b, c, d the magnitudes (capped at MAG_CAP) of the left, upper,
upper-left and upper-right neighbours (0 outside the grid), N the number of
positions in earlier waves and, per channel, Z the number of nonzero values,
G the number of |q| > 1, P and M the numbers of positive and negative values
in earlier waves:

* SIG context = 8 · sig_channel_class + SIG_LOCAL_CLASS[2·min(a,2) + 2·min(b,2)
  + min(c,2) + min(d,2)], where sig_channel_class is 0 if N = 0, else 1 plus
  the number of T in SIG_RATE_THRESHOLDS with 64·(2Z + 1) ≥ T·(2N + 2);
* GT1 and GT2 context = 7 · level_channel_class + LEVEL_LOCAL_CLASS[2·min(a,3)
  + 2·min(b,3) + min(c,3) + min(d,3)], where level_channel_class is 0 if Z = 0,
  else 1 plus the number of T in LEVEL_RATE_THRESHOLDS with
  8·(2G + 1) ≥ T·(2Z + 2);
* Exp-Golomb order k = min(15, max(0, bit_length((2a + 2b + c + d) div 6) − 1));
* SIGN context = 4 · (sign(left) + sign(upper) + 2) + (2·[M > 0] + [P > 0]).
"""

import functools

import numpy as np

from common.ans import ans_decoder, ans_payload
from common.errors import BitstreamError

STEP_EXPONENTS_PER_OCTAVE = 8
UNIT_STEP_EXPONENT = 48
# 2^(i/8), i = 0..7, exactly as float64 (written out so no libm pow is involved).
STEP_FRACTIONS = np.array([float.fromhex(h) for h in (
    "0x1.0000000000000p+0", "0x1.172b83c7d517bp+0", "0x1.306fe0a31b715p+0", "0x1.4bfdad5362a27p+0",
    "0x1.6a09e667f3bcdp+0", "0x1.8ace5422aa0dbp+0", "0x1.ae89f995ad3adp+0", "0x1.d5818dcfba487p+0")])

MAX_ABS_LEVEL = (1 << 31) - 1     # largest |q| the syntax can carry
MAG_CAP = 1 << 12                 # neighbour magnitudes are capped for context derivation
RESCALE_LIMIT = 1 << 12
PROB_BITS = 24
FIRST_CHUNK = 16
EG_PREFIX_SYMBOLS = 32
EG_MAX_ORDER = 15
BYPASS_CHUNK_BITS = 16
OFFSET_CLIP = 16

SIG_LOCAL_CLASS = np.array([0, 1, 2, 3, 4, 5, 5, 6, 6, 7, 7, 7, 7])
SIG_RATE_THRESHOLDS = (1, 2, 4, 8, 16, 32, 48)          # ×1/64
LEVEL_LOCAL_CLASS = np.array([0, 1, 1, 2, 2, 3, 3, 4, 4, 4, 5, 5, 5, 5, 6, 6, 6, 6, 6])
LEVEL_RATE_THRESHOLDS = (1, 2, 4, 6)                     # ×1/8
# (n0, n1) of a SIG context before any update, by sig_channel_class: the middle of
# the class's rate bucket (class 0, no history yet: 1/8), as 32 observations.
SIG_INITIAL_COUNTS = ((28, 4), (32, 0), (31, 1), (30, 2), (29, 3), (26, 6), (20, 12), (12, 20), (4, 28))
NUM_SIG_CONTEXTS = 8 * (2 + len(SIG_RATE_THRESHOLDS))   # class 0: no history
NUM_LEVEL_CONTEXTS = 7 * (2 + len(LEVEL_RATE_THRESHOLDS))
NUM_SIGN_CONTEXTS = 20
_SIG_THRESHOLDS = np.array(SIG_RATE_THRESHOLDS, dtype=np.int64)
_LEVEL_THRESHOLDS = np.array(LEVEL_RATE_THRESHOLDS, dtype=np.int64)


# Offsets of the left, upper, upper-left and upper-right neighbours in the padded arrays.
_NEIGHBOUR_ROWS = np.array([1, 0, 0, 0])
_NEIGHBOUR_COLUMNS = np.array([0, 1, 0, 2])

_BINARY, _CATEGORICAL, _BYPASS = range(3)   # kinds of buffered encoder calls
# An ANS state below 2^PROB_BITS decodes a symbol whose quantile range starts at 0 without change.
_ZERO_FLOOR_LIMIT = 1 << PROB_BITS


def step_sizes(exponents):
    """Δ = 2^((e − 48)/8) for an integer array of step exponents, exactly."""
    rel = np.asarray(exponents, dtype=np.int64) - UNIT_STEP_EXPONENT
    return np.ldexp(STEP_FRACTIONS[rel & 7], (rel >> 3).astype(np.int32))


def dequantise(levels, steps):
    """q · Δ in float64: levels (C, H, W), steps broadcasting to them ((1, H, W) or (C, H, W))."""
    return levels.astype(np.float64) * steps


def block_steps(exponents, channel_offsets, block):
    """Steps of a block of channels (a slice): exponents (H, W) are tsq_qp + o_t; without channel
    offsets (None) the block's steps are (1, H, W), else (channels of the block, H, W)."""
    if channel_offsets is None:
        return step_sizes(exponents)[None]
    return step_sizes(exponents[None] + channel_offsets[block, None, None])


BLOCK_ELEMENTS = 1 << 20          # channel_blocks' block size: float64 work stays in cache


def channel_blocks(channels, plane, elements=BLOCK_ELEMENTS):
    """Slices of whole channels (of `plane` elements each), about `elements` per slice: float64
    work done block by block stays in cache and needs no tensor-sized temporaries."""
    step = max(1, elements // max(plane, 1))
    return [slice(start, min(channels, start + step)) for start in range(0, channels, step)]


def wave_positions(height, width):
    """Positions (h, w) of each non-empty wave k (2h + w = k), h increasing; generated one wave
    at a time, so that a wide grid does not hold every wave's index arrays at once. (A one-column
    grid has no position in its odd waves; an empty wave codes nothing.)"""
    for k in range(2 * (height - 1) + width):
        h = np.arange(max(0, (k - width + 2) // 2), min(height - 1, k // 2) + 1)
        if len(h):
            yield h, k - 2 * h


def widest_wave(height, width):
    """The most positions a wave of an H×W grid holds (an upper bound)."""
    return min(height, (width + 1) // 2 + 1)


def chunk_limit(num_elements):
    return 1 << max(10, (num_elements // 4096).bit_length())


class _BinaryContexts:
    """Adaptive binary contexts: integer counts, probability from the KT rule."""

    def __init__(self, num_contexts, initial_counts=None):
        self.counts = np.zeros((num_contexts, 2), dtype=np.int64)
        if initial_counts is not None:
            self.counts[:] = initial_counts

    def p_one_table(self):
        """p1 of every context (multiples of 2^-24, exact in float64)."""
        n = self.counts
        num = (2 * n[:, 1] + 1) << PROB_BITS
        fixed = np.clip(num // (2 * (n[:, 0] + n[:, 1]) + 2), 1, (1 << PROB_BITS) - 1)
        return fixed / float(1 << PROB_BITS)

    def update(self, contexts, bits):
        if len(contexts):
            np.add.at(self.counts, (contexts, bits.astype(np.int64)), 1)
            _rescale(self.counts)


class _CategoricalContexts:
    def __init__(self, num_contexts, num_symbols):
        self.counts = np.ones((num_contexts, num_symbols), dtype=np.int64)

    def update(self, contexts, symbols):
        if len(contexts):
            np.add.at(self.counts, (contexts, symbols), 2)
            _rescale(self.counts)


def _rescale(counts):
    over = counts.sum(axis=1) > RESCALE_LIMIT
    while over.any():
        counts[over] = (counts[over] + 1) >> 1
        over = counts.sum(axis=1) > RESCALE_LIMIT


def _bit_length(values):
    """bit_length of each non-negative int64 (exact for values < 2^53: frexp's exponent e puts
    v in [2^(e-1), 2^e), and 0 gives 0)."""
    return np.frexp(np.asarray(values, dtype=np.float64))[1].astype(np.int64)


class TokenwiseEntropyCoder:
    """The entropy payload procedure, walked once for encoding and once for decoding.

    Every `_code_*` primitive takes the true values when encoding (and returns
    them) and `None` when decoding (and returns what it decoded), so the order
    of coded symbols and the context updates are written exactly once.
    """

    def __init__(self, payload=None, kernel=True):
        """kernel: code the levels with the compiled kernel (kernel.py) where it is built;
        False: with the numpy reference below."""
        import constriction  # imported here so that importing this module stays cheap
        self._models = constriction.stream.model
        self._kernel = level_kernel() if kernel else None
        self._level_words = np.zeros(0, dtype=np.uint32)   # encoder, kernel: the levels' ANS words
        self.encoding = payload is None
        if self.encoding:
            self._calls = []   # (symbols, model, parameters), ANS-encoded in reverse by finish()
        else:
            self._coder = ans_decoder(payload, "entropy payload")
        self._ans_type = constriction.stream.stack.AnsCoder
        self.ideal_bits = 0.0   # −log2 P of everything coded, under the models used
        self.step_map_bits = 0.0   # the step offsets' share of ideal_bits (token map and channel vector)

    # The encoder buffers each call compactly (symbols, context indices and the call's
    # small probability table); finish() expands them and ANS-encodes in reverse.
    def _code_binary(self, bits, model_contexts, contexts):
        if len(contexts) == 0:
            return np.zeros(0, dtype=bool)
        p_table = model_contexts.p_one_table()
        if self.encoding:
            bits = np.asarray(bits, dtype=bool)
            self._calls.append((_BINARY, bits, contexts.astype(np.int32), p_table))
            p_one = p_table[contexts]
            self.ideal_bits -= float(np.log2(np.where(bits, p_one, 1.0 - p_one)).sum())
            return bits
        return self._decode(self._models.Bernoulli(perfect=False), p_table[contexts]).astype(bool)

    def _code_categorical(self, symbols, model_contexts, contexts):
        if len(contexts) == 0:
            return np.zeros(0, dtype=np.int64)
        table = model_contexts.counts.astype(np.float64)
        if self.encoding:
            symbols = np.asarray(symbols, dtype=np.int64)
            self._calls.append((_CATEGORICAL, symbols.astype(np.uint8), contexts.astype(np.int32), table))
            chosen = table[contexts, symbols]
            self.ideal_bits -= float(np.log2(chosen / table[contexts].sum(axis=1)).sum())
            return symbols
        return self._decode(self._models.Categorical(perfect=False), table[contexts]).astype(np.int64)

    def _code_bypass(self, values, num_bits):
        """Values of num_bits[i] bits each (any width up to 62), MSB-first 16-bit pieces."""
        num_bits = np.asarray(num_bits, dtype=np.int64)
        total = np.zeros(len(num_bits), dtype=np.int64)
        remaining = num_bits.copy()
        if self.encoding:
            values = np.asarray(values, dtype=np.int64)
        while (remaining > 0).any():
            active = np.flatnonzero(remaining > 0)
            piece = (remaining[active] - 1) % BYPASS_CHUNK_BITS + 1   # first piece takes the odd bits
            remaining[active] -= piece
            if self.encoding:
                pieces = (values[active] >> remaining[active]) & ((1 << piece) - 1)
                self._calls.append((_BYPASS, pieces.astype(np.uint16), piece.astype(np.uint8), None))
                self.ideal_bits += float(piece.sum())
            else:
                sizes = (np.int64(1) << piece).astype(np.int32)
                pieces = self._decode(self._models.Uniform(), sizes).astype(np.int64)
            total[active] = (total[active] << piece) | pieces
        return values if self.encoding else total

    def _expanded_call(self, kind, symbols, contexts, table):
        """(symbols, model, parameters) of a buffered call, as constriction takes them."""
        if kind == _BINARY:
            return symbols.astype(np.int32), self._models.Bernoulli(perfect=False), table[contexts]
        if kind == _CATEGORICAL:
            return symbols.astype(np.int32), self._models.Categorical(perfect=False), table[contexts]
        return symbols.astype(np.int32), self._models.Uniform(), (np.int32(1) << contexts.astype(np.int32))

    def _decode(self, model, params):
        try:
            return np.asarray(self._coder.decode(model, params))
        except Exception as exc:  # constriction reports running out of data as a generic error
            raise BitstreamError(f"entropy payload is corrupt or truncated ({exc})") from None

    def _code_exp_golomb(self, values, orders):
        """Exp-Golomb values of per-element order k; the prefix is adaptive per k."""
        if len(orders) == 0:
            return np.zeros(0, dtype=np.int64)
        one = np.int64(1)
        prefix = None
        if self.encoding:
            values = np.asarray(values, dtype=np.int64)
            prefix = _bit_length((values >> orders) + 1) - 1
        prefix = self._code_categorical(prefix, self._eg_prefix, orders)
        self._eg_prefix.update(orders, prefix)
        suffix = None
        if self.encoding:
            suffix = (((values >> orders) + 1 - (one << prefix)) << orders) | (values & ((one << orders) - 1))
        suffix = self._code_bypass(suffix, prefix + orders)
        high = (suffix >> orders) + (one << prefix) - 1
        return (high << orders) | (suffix & ((one << orders) - 1))

    def _code_exp_golomb_bypass(self, values, count):
        """Exp-Golomb-0 values with a 5-bit bypass prefix (rare escapes)."""
        one = np.int64(1)
        prefix = None if values is None else _bit_length(values + 1) - 1
        prefix = self._code_bypass(prefix, np.full(count, 5))
        suffix = None if values is None else values + 1 - (one << prefix)
        suffix = self._code_bypass(suffix, prefix)
        return (one << prefix) - 1 + suffix

    # -- payload ----------------------------------------------------------------
    def code_tensor(self, levels, offsets, grid, step_map_flag, channel_offsets=None, channel_offsets_flag=False):
        """Code one tensor's payload: levels (C, H, W), token offsets (H, W) and channel offsets
        (C,), int64, when encoding; None when decoding. Returns (levels, offsets, channel offsets),
        the channel offsets None without tsq_channel_offsets_flag."""
        offsets, channel_offsets = self.code_step_offsets(offsets, grid, step_map_flag, channel_offsets,
                                                          channel_offsets_flag)
        levels = self._code_levels(levels, *grid)
        return levels, offsets, channel_offsets

    def code_step_offsets(self, offsets, grid, step_map_flag, channel_offsets=None, channel_offsets_flag=False):
        """The start of a tensor's payload: its channel offsets and token map (when flagged).
        Returns (token offsets (H, W), channel offsets (C,) or None); adds their code length to
        step_map_bits (so a fresh coder measures what a map costs)."""
        channels, height, width = grid
        self._limit = chunk_limit(channels * height * width)
        self._chunk = FIRST_CHUNK
        before = self.ideal_bits
        if channel_offsets_flag:
            channel_offsets = self._code_offsets(channel_offsets, 1, channels, predict=False).reshape(channels)
        else:
            channel_offsets = None
        if step_map_flag:
            offsets = self._code_offsets(offsets, height, width)
        else:
            offsets = np.zeros((height, width), dtype=np.int64)
        self.step_map_bits += self.ideal_bits - before
        return offsets, channel_offsets

    def _chunks(self, length):
        start = 0
        while start < length:
            end = min(length, start + self._chunk)
            yield start, end
            start = end
            self._chunk = min(self._limit, 2 * self._chunk)

    def _code_offsets(self, offsets, height, width, predict=True):
        """Step offsets of an H × W map, each predicted from its left (first column: upper)
        neighbour, or (predict False: the channel vector) coded as they are."""
        residuals = None
        if self.encoding:
            offsets = np.asarray(offsets, dtype=np.int64).reshape(height, width)
            predicted = np.zeros_like(offsets)
            if predict:
                predicted[:, 1:] = offsets[:, :-1]
                predicted[1:, 0] = offsets[:-1, 0]
            residuals = (offsets - predicted).ravel()
        decoded = np.zeros(height * width, dtype=np.int64)
        model = _CategoricalContexts(1, 2 * OFFSET_CLIP + 1)
        for start, end in self._chunks(height * width):
            contexts = np.zeros(end - start, dtype=np.int64)
            known = None if residuals is None else residuals[start:end]
            symbols = None if known is None else np.clip(known, -OFFSET_CLIP, OFFSET_CLIP) + OFFSET_CLIP
            symbols = self._code_categorical(symbols, model, contexts)
            model.update(contexts, symbols)
            values = symbols - OFFSET_CLIP
            escaped = np.flatnonzero((symbols == 0) | (symbols == 2 * OFFSET_CLIP))
            extra = None if known is None else np.abs(known[escaped]) - OFFSET_CLIP
            extra = self._code_exp_golomb_bypass(extra, len(escaped))
            values[escaped] += np.sign(values[escaped]) * extra
            decoded[start:end] = values
        residuals = decoded.reshape(height, width)
        if not predict:
            return residuals
        residuals[:, 0] = np.cumsum(residuals[:, 0])
        return np.cumsum(residuals, axis=1)

    def _code_levels(self, levels, channels, height, width):
        if self._kernel is not None:
            return self._kernel_levels(levels, (channels, height, width))
        self._sig = _BinaryContexts(NUM_SIG_CONTEXTS, np.repeat(SIG_INITIAL_COUNTS, 8, axis=0))
        self._gt1 = _BinaryContexts(NUM_LEVEL_CONTEXTS)
        self._gt2 = _BinaryContexts(NUM_LEVEL_CONTEXTS)
        self._sign = _BinaryContexts(NUM_SIGN_CONTEXTS)
        self._eg_prefix = _CategoricalContexts(EG_MAX_ORDER + 1, EG_PREFIX_SYMBOLS)
        # Decoded magnitudes (capped) and signs, padded by one row on top and
        # one column on each side so that every neighbour exists.
        neighbour_mag = np.zeros((channels, height + 1, width + 2), dtype=np.int16)   # ≤ MAG_CAP
        neighbour_sign = np.zeros((channels, height + 1, width + 2), dtype=np.int8)
        decoded = np.zeros((channels, height, width), dtype=np.int64)
        stats = _ChannelStats(channels)
        for hs, ws in wave_positions(height, width):
            if not self.encoding and self._rest_is_zero(stats):
                break
            num_positions = len(hs)
            # left, upper, upper-left, upper-right, each (positions × channels), position-major
            rows = hs[None, :] + _NEIGHBOUR_ROWS[:, None]
            cols = ws[None, :] + _NEIGHBOUR_COLUMNS[:, None]
            a, b, c, d = neighbour_mag[:, rows, cols].transpose(1, 2, 0).reshape(4, -1).astype(np.int64)
            left_sign, upper_sign = neighbour_sign[:, rows[:2], cols[:2]].transpose(1, 2, 0).reshape(2, -1)
            ctx = _WaveContexts(
                sig=np.tile(stats.sig_class(), num_positions) * 8 + SIG_LOCAL_CLASS[
                    2 * np.minimum(a, 2) + 2 * np.minimum(b, 2) + np.minimum(c, 2) + np.minimum(d, 2)],
                level=np.tile(stats.level_class(), num_positions) * 7 + LEVEL_LOCAL_CLASS[
                    2 * np.minimum(a, 3) + 2 * np.minimum(b, 3) + np.minimum(c, 3) + np.minimum(d, 3)],
                eg_order=np.clip(_bit_length((2 * a + 2 * b + c + d) // 6) - 1, 0, EG_MAX_ORDER),
                sign=4 * (left_sign.astype(np.int64) + upper_sign + 2)
                + np.tile(stats.sign_class(), num_positions))
            true_levels = None if levels is None else levels[:, hs, ws].T.ravel()
            wave_levels = np.zeros(num_positions * channels, dtype=np.int64)
            for start, end in self._chunks(len(wave_levels)):
                known = None if true_levels is None else true_levels[start:end]
                wave_levels[start:end] = self._code_chunk(known, ctx.slice(start, end))
            wave_levels = wave_levels.reshape(num_positions, channels).T
            decoded[:, hs, ws] = wave_levels
            neighbour_mag[:, hs + 1, ws + 1] = np.minimum(np.abs(wave_levels), MAG_CAP)
            neighbour_sign[:, hs + 1, ws + 1] = np.sign(wave_levels)
            stats.update(wave_levels)
        return decoded

    def _kernel_levels(self, levels, grid):
        """The levels through the compiled kernel: the same symbols, models and order as
        _code_levels (the levels are the payload's last symbols, so the encoder ANS-encodes them
        first and finish() goes on from its words)."""
        scratch = min(self._limit, grid[0] * widest_wave(grid[1], grid[2]))   # a chunk never crosses a wave
        if self.encoding:
            levels = np.asarray(levels)
            self._level_words, self._chunk, ideal_bits = self._kernel.encode_levels(
                levels, self._chunk, self._limit, scratch)
            self.ideal_bits += ideal_bits
            return levels
        decoded, self._chunk, words_left = self._kernel.decode_levels(
            grid, self._chunk, self._limit, scratch, self._coder.get_compressed())
        self._coder = self._ans_type(words_left)
        return decoded

    def _rest_is_zero(self, stats):
        """Decoder, at a wave's start: True when every remaining level is 0 because the coder is
        exhausted (state 0, no words: every decision decodes its first symbol for free); a
        BitstreamError when the remaining levels are all 0 but the coder can never become empty
        (the error decoding to the end would give, without the wait). Section "Decoding cost"."""
        state = self._single_word_state()
        if state is None:
            return False
        if state == 0:
            return True
        if state < _ZERO_FLOOR_LIMIT and state < self._sig_zero_floor(stats):
            raise BitstreamError("entropy payload has data left over after the last symbol")
        return False

    def _single_word_state(self):
        """The ANS state when the coder holds at most one word (else None)."""
        if self._coder.num_words() > 1:
            return None
        words = self._coder.get_compressed()
        return int(words[0]) if len(words) else 0

    def _sig_zero_floor(self, stats):
        """A lower bound of the quantile range of sig = 0 in every SIG context the remaining
        waves can select while every level they decode is 0. A channel's class is then at most
        its class now and falls as positions accrue; before the first wave (class 0) the later
        waves take at most the class of a channel with no nonzero level after one position (the
        first wave's). Counts only gain zeros and halve (n1 never grows, n0 + n1 stays ≥ min(now,
        RESCALE_LIMIT / 2))."""
        if stats.positions == 0:
            lowest, highest = 0, int(_sig_classes(np.zeros(1, dtype=np.int64), 1)[0])
        else:
            classes = stats.sig_class()
            lowest, highest = 1, int(classes.max()) if len(classes) else 1
        counts = self._sig.counts.reshape(-1, 8, 2)[lowest:highest + 1].reshape(-1, 2)
        total = np.minimum(counts.sum(axis=1), RESCALE_LIMIT // 2)
        p_one = (2 * counts[:, 1] + 1) / (2 * total + 2)
        return float(np.min(1.0 - p_one)) * (1 << PROB_BITS) - 2

    def _code_chunk(self, known, ctx):
        """sig, gt1, gt2, remainder and sign passes of one chunk; returns its levels."""
        known_mag = None if known is None else np.abs(known)

        def given(select):   # the true decision when encoding, None when decoding
            return None if known is None else select()

        sig = self._code_binary(given(lambda: known_mag > 0), self._sig, ctx.sig)
        self._sig.update(ctx.sig, sig)
        mag = sig.astype(np.int64)
        i1 = np.flatnonzero(sig)
        gt1 = self._code_binary(given(lambda: known_mag[i1] > 1), self._gt1, ctx.level[i1])
        self._gt1.update(ctx.level[i1], gt1)
        i2 = i1[gt1]
        mag[i2] = 2
        gt2 = self._code_binary(given(lambda: known_mag[i2] > 2), self._gt2, ctx.level[i2])
        self._gt2.update(ctx.level[i2], gt2)
        i3 = i2[gt2]
        mag[i3] = 3 + self._code_exp_golomb(given(lambda: known_mag[i3] - 3), ctx.eg_order[i3])
        if (mag > MAX_ABS_LEVEL).any():
            raise BitstreamError(f"decoded level exceeds {MAX_ABS_LEVEL}: the entropy payload is corrupt")
        neg = self._code_binary(given(lambda: known[i1] < 0), self._sign, ctx.sign[i1])
        self._sign.update(ctx.sign[i1], neg)
        mag[i1[neg]] *= -1
        return mag

    def finish(self):
        """Encoder: the payload bytes. Decoder: check that the payload is used up."""
        if self.encoding:
            coder = self._ans_type(self._level_words) if len(self._level_words) else self._ans_type()
            for call in reversed(self._calls):
                coder.encode_reverse(*self._expanded_call(*call))
            self._calls = []
            return ans_payload(coder)
        if not self._coder.is_empty():
            raise BitstreamError("entropy payload has data left over after the last symbol")
        return None


def level_kernel():
    """The compiled level coder with this module's constants, or None where it is not built or
    FCRS_TOKENWISE_KERNEL=0 (kernel.py)."""
    from common.tools.tokenwise.kernel import enabled

    return _compiled_level_kernel() if enabled() else None


@functools.cache
def _compiled_level_kernel():
    """Loaded and given the constants once per process."""
    from common.tools.tokenwise.kernel import load

    return load(dict(
        sig_local_class=SIG_LOCAL_CLASS, level_local_class=LEVEL_LOCAL_CLASS, sig_thresholds=SIG_RATE_THRESHOLDS,
        level_thresholds=LEVEL_RATE_THRESHOLDS, sig_initial_counts=SIG_INITIAL_COUNTS, rescale_limit=RESCALE_LIMIT,
        mag_cap=MAG_CAP, max_abs_level=MAX_ABS_LEVEL, bypass_chunk_bits=BYPASS_CHUNK_BITS, eg_max_order=EG_MAX_ORDER,
        num_eg_symbols=EG_PREFIX_SYMBOLS, num_sig_contexts=NUM_SIG_CONTEXTS, num_level_contexts=NUM_LEVEL_CONTEXTS,
        num_sign_contexts=NUM_SIGN_CONTEXTS))


class _WaveContexts:
    """Per-element context indices of one wave (position-major, channel-minor)."""

    def __init__(self, sig, level, eg_order, sign):
        self.sig, self.level, self.eg_order, self.sign = sig, level, eg_order, sign

    def slice(self, start, end):
        return _WaveContexts(self.sig[start:end], self.level[start:end],
                             self.eg_order[start:end], self.sign[start:end])


def _sig_classes(nonzero, positions):
    """sig_channel_class of channels with `nonzero` nonzero levels among `positions` ≥ 1."""
    rate = 64 * (2 * nonzero + 1)
    return 1 + np.searchsorted(_SIG_THRESHOLDS * (2 * positions + 2), rate, side="right")


class _ChannelStats:
    """Per-channel counts over the waves coded so far."""

    def __init__(self, channels):
        self.positions = 0
        self.nonzero = np.zeros(channels, dtype=np.int64)
        self.above_one = np.zeros(channels, dtype=np.int64)
        self.positive = np.zeros(channels, dtype=np.int64)
        self.negative = np.zeros(channels, dtype=np.int64)

    def sig_class(self):
        if self.positions == 0:
            return np.zeros_like(self.nonzero)
        return _sig_classes(self.nonzero, self.positions)

    def level_class(self):
        rate = 8 * (2 * self.above_one + 1)
        above = (rate[:, None] >= _LEVEL_THRESHOLDS[None, :] * (2 * self.nonzero[:, None] + 2)).sum(axis=1)
        return np.where(self.nonzero == 0, 0, 1 + above)

    def sign_class(self):
        return 2 * (self.negative > 0) + (self.positive > 0)

    def update(self, wave_levels):
        """wave_levels: (channels, positions of the wave)."""
        self.positions += wave_levels.shape[1]
        self.nonzero += (wave_levels != 0).sum(axis=1)
        self.above_one += (np.abs(wave_levels) > 1).sum(axis=1)
        self.positive += (wave_levels > 0).sum(axis=1)
        self.negative += (wave_levels < 0).sum(axis=1)
