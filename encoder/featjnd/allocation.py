"""Token-wise step allocation: uniform, FeatJND-guided (per token, or separable token × channel),
or a JND map permuted.

    f ─► G_θ ─► δ ─► tolerance per token t:
           jnd (the paper's):      s_t = mean_c |δ| / (|f| + ε)
           jnd_abs:                s_t = (mean_c δ⁻²)^(−1/2)
           random:                 jnd's s permuted over tokens;   uniform: s_t = 1
      ─► Δ_t = λ · s_t ─► e_t = round(48 + 8·log2 Δ_t) ─► step offsets e_t − QP
    jnd_rd: e_t = argmin_e  D_t(e) + μ·R_t(e)   (an encoder search per token, below)

λ makes the mean noise power of the steps, E_t[Δ_t²/12], equal to σ_tgt²
(`NoiseBudget`), or, when no budget is given, equal to that of the uniform
step of `QP` (so jnd, random and uniform at the same QP spend the same noise
budget and differ only in where they put it). The decoder only ever sees the
resulting integer offsets (tsq_step_map_flag), so it stays torch-free.

jnd_abs is the high-rate optimum for the JND-weighted error D = Σ (f − f̂)²/δ²: a
token's step noise Δ_t²/12 falls on every channel, so D_t ∝ Δ_t²·Σ_c δ⁻², and
minimising D + μ·R with R_t = C·(h_t − log2 Δ_t) gives Δ_t ∝ (Σ_c δ⁻²)^(−1/2).
It ignores the dead zone: at low rates most levels are 0 whatever the step.

jnd_rd targets rate directly: for every token it quantises with each candidate
exponent QP + k (k ∈ RD_OFFSETS), measures the JND-weighted error D_t(k) of that
very quantiser (dead zone included) and an estimate of its bits R_t(k) (the
Exp-Golomb length of each level, a zero costing RD_ZERO_BITS), and keeps the
cheapest D + μ·R. μ = Δ_QP²·ln2/6 is the high-rate slope −dD/dR at QP's step, so a
feature with a flat tolerance keeps steps near QP's; the weights 1/δ² are scaled to
geometric mean 1 over the tensor (rd_weights), so D is in the units of plain MSE.

Separable allocations use a noise-tolerance estimator (output "noise": f + δ ⊙ n, n i.i.d. of
unit variance, is just noticeable), whose δ is what a quantiser may add per element: steps
Δ_t,c = √12·δ_t,c. The stream carries a separable map, so the allocator fits one in the log
domain (least squares, which for a two-way layout is the row and column means):

    L_t,c = log2(√12·δ_t,c), capped per channel at log2(2·max_t |f_t,c|)
    L_t,c ≈ m + u_t + v_c,   u_t = mean_c L − m,   v_c = mean_t L − m,   m = mean L
    candidate maps, for each spacing g of OFFSET_SPACINGS (exponent units, 1/8 octave):
        o_t = g·round(8·u_t / g),  p_c = g·round(8·v_c / g);  the token map, the channel vector,
        both, or neither (uniform)
    choice: the largest  gain − cost  (jnd_channel: channel vectors only)
        gain = high-rate bits saved at equal JND-weighted error (high_rate_gain)
        cost = the map's own code length (the entropy coder, dry run)
    (u and v are first multiplied by JndMapStrength, 0.5 by default: the module docstring's end)
    Δ_t,c = λ·2^((o_t + p_c)/8) ─► e = base + o_t + p_c
    random_separable: jnd_separable's choice with o permuted over tokens and p over channels (seeded)

The cap: a step above twice a channel's largest magnitude quantises all of it to 0 already,
so a larger tolerance (an element the head ignores) must not pull the fit. λ sets the noise
power as for the per-token rules (NoiseBudget, or QP's uniform step).

Why the choice: at high rate an element costs h − log2 Δ bits, so steps that follow δ keep the
rate while moving the noise to where the task tolerates it; the task-weighted error
Σ σ²/δ² at a given rate is least for σ ∝ δ. What that saves is
(n/2)·log2(mean(w)·4^mean(s) / mean(w·4^s)), w = 4^−L, s = the map's log2 steps, over the
n elements that are coded at all (|f| ≥ (1 − RoundingOffset)·Δ at the base step: the others
are zeros at any nearby step and save nothing). A map is signalled per tensor, so where δ is
nearly flat, or the tensor is small, the map costs more than it saves and is not sent.

Why the map is followed at half strength (JndMapStrength 0.5): δ is a tolerance at the just
noticeable point, and the quantiser's error is not the training noise once steps reach an
element's own range (a dead zone sets it to 0, a bias rather than noise). Followed fully, the map
collapses on YOLOv5n between QP 72 and 80 (AP50 53 → 13 on the training photos), at half
strength it holds; on 30 coco-train photos the BD-rate (AP50) against uniform was −24 % at 0.7,
−42 % at 0.5 and −44 % at 0.3, and 0.5 was best on AP and AP75 (docs/results/ctc_coco_train_
yolov5n_featjnd_dev). The evaluation images were not used to choose it.
"""

import functools
import glob
import json
import os

import numpy as np

from common.errors import InputError
from common.tools.tokenwise.sq import STEP_EXPONENTS_PER_OCTAVE, UNIT_STEP_EXPONENT, TokenwiseEntropyCoder, step_sizes
from common.tools.tokenwise.syntax import QP_MAX, QP_MIN
from encoder.tools.interface import StepOffsets

OFFSET_SPACINGS = (1, 2, 4)          # candidate spacings of the separable offsets: 1/8, 1/4 and 1/2 octave
ALLOCATIONS = ("uniform", "jnd", "jnd_abs", "jnd_rd", "random", "jnd_separable", "jnd_channel", "random_separable")
# the allocations that fit a separable map to a noise estimator's δ (the others: a per-token map)
SEPARABLE_ALLOCATIONS = ("jnd_separable", "jnd_channel", "random_separable")
# jnd_rd's candidate step exponents around QP (¼ to 8 × QP's step), nearest to QP first: ties
# (a token of zeros costs the same at any step) keep the step nearest QP's, so the map stays cheap
RD_OFFSETS = sorted(range(-16, 25, 2), key=abs)
RD_ZERO_BITS = 0.1                   # a zero level's estimated cost (the context coder makes zeros cheap)
WEIGHT_RANGE = 1e3                   # jnd_rd's 1/δ² weights are clipped to [1/range, range] × their geometric mean
WEIGHTS_FOLDER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")


def token_tolerance(grid, delta, epsilon):
    """s_t = mean over channels of |δ| / (|f| + ε), for a (C, H, W) grid -> (H, W)."""
    return np.mean(np.abs(delta) / (np.abs(grid) + epsilon), axis=0)


def absolute_tolerance(delta):
    """s_t = (mean_c δ⁻²)^(−1/2) of a (C, H, W) δ -> (H, W): jnd_abs's high-rate optimum."""
    floor = 1e-6 * max(float(np.abs(delta).max()), 1e-300)
    return 1.0 / np.sqrt(np.mean(1.0 / np.maximum(delta * delta, floor * floor), axis=0))


def level_bits(levels):
    """Estimated bits of quantised levels: Exp-Golomb-0 length of |q| plus a sign bit; RD_ZERO_BITS for 0."""
    magnitude = np.abs(levels)
    return np.where(magnitude > 0, 2.0 * np.floor(np.log2(magnitude + 1.0)) + 2.0, RD_ZERO_BITS)


def step_exponent(step):
    """The (unrounded) exponent e of a step: step_sizes' inverse, Δ = 2^((e − 48) / 8)."""
    return UNIT_STEP_EXPONENT + STEP_EXPONENTS_PER_OCTAVE * np.log2(step)


def rd_weights(delta):
    """jnd_rd's distortion weights 1/δ², scaled to geometric mean 1 over the tensor and clipped
    to [1/WEIGHT_RANGE, WEIGHT_RANGE]. The geometric mean, not the mean: δ is signed and passes
    through 0, so a few near-zero values would set the plain mean and push every other weight
    to the floor."""
    magnitude = np.abs(delta)
    floor = max(float(np.median(magnitude)), 1e-300) / WEIGHT_RANGE
    log_weights = -2.0 * np.log(np.maximum(magnitude, floor))
    return np.exp(np.clip(log_weights - log_weights.mean(), -np.log(WEIGHT_RANGE), np.log(WEIGHT_RANGE)))


def rd_offsets(grid, delta, qp, rounding_offset, noise_budget=0.0):
    """jnd_rd: per-token step offsets (to QP) minimising the JND-weighted error + μ·(estimated bits).
    The candidates centre on the base step: QP's, or NoiseBudget's when one is given."""
    weights = rd_weights(delta)
    if noise_budget > 0:
        base_step = np.sqrt(12.0) * noise_budget
        centre = int(np.rint(step_exponent(base_step)))
    else:
        base_step, centre = float(step_sizes(np.array([qp]))[0]), qp
    mu = base_step ** 2 * np.log(2.0) / 6.0
    magnitude = np.abs(grid)
    best_cost = np.full(grid.shape[1:], np.inf)
    best = np.zeros(grid.shape[1:], dtype=np.int64)
    for offset in RD_OFFSETS:
        exponent = int(np.clip(centre + offset, QP_MIN, QP_MAX))
        step = float(step_sizes(np.array([exponent]))[0])
        levels = np.floor(magnitude / step + rounding_offset)
        error = magnitude - levels * step
        cost = np.sum(weights * error * error + mu * level_bits(levels), axis=0)
        better = cost < best_cost
        best_cost[better] = cost[better]
        best[better] = exponent - qp
    return best


def shaped_tolerance(tolerance, allocation, seed):
    """The per-token weights the steps follow: s (jnd), s permuted over tokens with a
    fixed seed (random), or all ones (uniform)."""
    if allocation == "uniform":
        return np.ones_like(tolerance)
    if allocation == "random":       # the paper's baseline: jnd's values, placed at random
        flat = tolerance.ravel()
        return flat[np.random.default_rng(seed).permutation(flat.size)].reshape(tolerance.shape)
    return tolerance


def step_exponents(weights, qp, noise_budget):
    """e_t for steps Δ_t = λ·w_t, λ from the noise budget σ (or from QP's step when σ = 0)."""
    weights = np.maximum(weights.astype(np.float64), 1e-12 * max(float(weights.max()), 1e-300))
    mean_square = float(np.mean(weights ** 2))
    if noise_budget > 0:
        scale = np.sqrt(12.0 * noise_budget ** 2 / mean_square)
    else:
        scale = float(step_sizes(np.array([qp]))[0]) / np.sqrt(mean_square)
    exponents = np.rint(step_exponent(scale * weights))
    return np.clip(exponents, QP_MIN, QP_MAX).astype(np.int64)


def log_steps(grid, delta):
    """L = log2(√12·|δ|) of a (C, H, W) grid, capped per channel at log2(2·max |f|) (a larger step
    zeroes the channel anyway) and floored 40 octaves below the cap; NaN in a channel of zeros,
    which every step codes the same (as zeros)."""
    largest = np.abs(grid).max(axis=(1, 2))
    cap = np.log2(2.0 * np.where(largest > 0, largest, np.nan))[:, None, None]
    with np.errstate(divide="ignore"):
        steps = np.log2(np.sqrt(12.0) * np.abs(delta))
    return np.clip(steps, cap - 40.0, cap)


def separable_fit(log_step):
    """(u_t (H, W), v_c (C,)): the least-squares fit L ≈ m + u_t + v_c with zero-mean u and v, over
    the channels that are not NaN (log_steps' channels of zeros, whose v_c is 0)."""
    live = ~np.isnan(log_step[:, 0, 0])
    if not live.any():
        return np.zeros(log_step.shape[1:]), np.zeros(log_step.shape[0])
    mean = float(log_step[live].mean())
    channels = np.zeros(log_step.shape[0])
    channels[live] = log_step[live].mean(axis=(1, 2)) - mean
    return log_step[live].mean(axis=0) - mean, channels


class HighRateGain:
    """Bits a map of log2 steps saves against uniform steps of the same rate, at equal JND-weighted
    error Σ σ²/δ² (target: L = log2 √12·δ), at high rate, over the `coded` elements:
    (n/2)·log2(mean(w)·4^mean(s) / mean(w·4^s)), w = 4^−L (module docstring). The weights are
    prepared once for the candidate maps a tensor weighs."""

    def __init__(self, target, coded):
        self.coded = coded
        self.n = int(coded.sum())
        self.log_w = -2.0 * target[coded]
        self.shift = self.log_w.max() if self.n else 0.0          # the means in a safe range
        self.uniform = np.log2(np.mean(np.exp2(self.log_w - self.shift))) if self.n else 0.0

    def __call__(self, steps):
        if self.n == 0:
            return 0.0
        s = 2.0 * np.broadcast_to(steps, self.coded.shape)[self.coded]
        allocated = np.log2(np.mean(np.exp2(self.log_w - self.shift + s)))
        return 0.5 * self.n * float(self.uniform + s.mean() - allocated)


def high_rate_gain(target, steps, coded):
    """HighRateGain for one map."""
    return HighRateGain(target, coded)(steps)


def map_bits(token_offsets, channel_offsets, grid):
    """Code length of a tensor's step offsets (the entropy coder, dry run; the median taken out as
    the encoder does)."""
    coder = TokenwiseEntropyCoder(kernel=False)
    tokens = token_offsets - int(np.median(token_offsets))
    channels = channel_offsets - int(np.median(channel_offsets))
    coder.code_step_offsets(tokens, grid, bool(tokens.any()), channels, bool(channels.any()))
    return coder.step_map_bits


def candidate_maps(tokens, channels, allocation):
    """{(kind, spacing): (token offsets, channel offsets)} the choice weighs: uniform, and per
    spacing the channel vector (and, unless jnd_channel, the token map and both)."""
    zero_tokens, zero_channels = np.zeros(tokens.shape, np.int64), np.zeros(channels.shape, np.int64)
    maps = {("uniform", 0): (zero_tokens, zero_channels)}
    for spacing in OFFSET_SPACINGS:
        o = spacing * np.rint(STEP_EXPONENTS_PER_OCTAVE * tokens / spacing).astype(np.int64)
        p = spacing * np.rint(STEP_EXPONENTS_PER_OCTAVE * channels / spacing).astype(np.int64)
        maps["channels", spacing] = (zero_tokens, p)
        if allocation != "jnd_channel":
            maps["tokens", spacing] = (o, zero_channels)
            maps["separable", spacing] = (o, p)
    return maps


def chosen_map(grid, target, tokens, channels, allocation, base_step, rounding_offset):
    """(token offsets, channel offsets, (kind, spacing)) of the candidate with the largest high-rate
    gain less its cost."""
    gain = HighRateGain(target, (np.abs(grid) >= (1.0 - rounding_offset) * base_step) & ~np.isnan(target))
    best, best_value = None, -np.inf
    for key, (o, p) in candidate_maps(tokens, channels, allocation).items():
        steps = (o[None] + p[:, None, None]) / STEP_EXPONENTS_PER_OCTAVE
        value = 0.0 if key[0] == "uniform" else gain(steps) - map_bits(o, p, grid.shape)
        if value > best_value:
            best, best_value = (o, p, key), value
    return best


def separable_offsets(grid, delta, allocation, qp, noise_budget, seed, rounding_offset=0.5, strength=1.0):
    """(token offsets to QP (H, W), channel offsets (C,), the chosen (kind, spacing)) of a separable
    allocation; `strength` scales the fitted map (JndMapStrength)."""
    target = log_steps(grid, delta)
    tokens, channels = separable_fit(target)
    tokens, channels = strength * tokens, strength * channels
    qp_step = float(step_sizes(np.array([qp]))[0])
    base_step = np.sqrt(12.0) * noise_budget if noise_budget > 0 else qp_step
    token_offsets, channel_offsets, choice = chosen_map(grid, target, tokens, channels, allocation, base_step,
                                                        rounding_offset)
    if allocation == "random_separable":
        rng = np.random.default_rng(seed)
        token_offsets = token_offsets.ravel()[rng.permutation(token_offsets.size)].reshape(token_offsets.shape)
        channel_offsets = channel_offsets[rng.permutation(channel_offsets.size)]
    # the base exponent: the steps' mean noise power, E_t,c[Δ²], that of the budget or of QP's step
    shape = step_sizes(token_offsets[None] + channel_offsets[:, None, None] + UNIT_STEP_EXPONENT)
    mean_square = float(np.mean(shape ** 2))
    base = int(np.rint(step_exponent(base_step / np.sqrt(mean_square))))
    return token_offsets + base - qp, channel_offsets, choice


DEFAULT_ESTIMATOR = "efficientnet-lite0"


def default_weights_path(name=DEFAULT_ESTIMATOR):
    """The shipped estimator `featjnd_<name>_<hash>.safetensors` (default: EfficientNet-Lite0 backbone)."""
    found = glob.glob(os.path.join(WEIGHTS_FOLDER, f"featjnd_{glob.escape(name)}_*.safetensors"))
    if len(found) != 1:
        raise InputError(f"expected one featjnd_{name}_<hash>.safetensors in {WEIGHTS_FOLDER}, found "
                         f"{len(found)}: set JndWeights")
    return found[0]


def weights_path(value):
    """JndWeights -> a file: empty is the default estimator, a bare name (no '/', no .safetensors)
    names a shipped one (e.g. yolov5n-neck), anything else is a path."""
    if not value:
        return default_weights_path()
    if "/" not in value and os.sep not in value and not value.endswith(".safetensors"):
        return default_weights_path(value)
    return value


@functools.cache
def shipped_estimators():
    """{name: (path, channel counts it takes, output kind)} of the estimators in WEIGHTS_FOLDER,
    read from their metadata (no torch) once per process."""
    from safetensors import safe_open

    found = {}
    for path in sorted(glob.glob(os.path.join(WEIGHTS_FOLDER, "featjnd_*_*.safetensors"))):
        name = os.path.basename(path)[len("featjnd_"):].rsplit("_", 1)[0]
        with safe_open(path, framework="numpy") as handle:
            config = json.loads(handle.metadata()["fcrs"])["config"]
        found[name] = (path, tuple(config.get("levels", [config.get("channels")])), config.get("output", "direction"))
    return found


def estimator_for(channels, output="direction"):
    """The shipped estimator's path for `channels`-channel tensors of the output kind (JndWeights
    empty), or an InputError naming the option to pass."""
    shipped = {name: entry for name, entry in shipped_estimators().items() if entry[2] == output}
    matching = [name for name, (_, takes, _) in shipped.items() if channels in takes]
    if len(matching) == 1:
        return shipped[matching[0]][0]
    listed = ", ".join(f"{name} ({'/'.join(map(str, takes))})" for name, (_, takes, _) in shipped.items())
    if not matching:
        raise InputError(f"no shipped FeatJND estimator takes {channels}-channel tensors with {output} output "
                         f"(shipped: {listed}); set JndWeights to an estimator trained for these features")
    raise InputError(f"several shipped FeatJND estimators take {channels}-channel tensors "
                     f"({', '.join(matching)}): set JndWeights to one of them")


class StepAllocator:
    """Computes every tensor's step offsets (to QP) from the encoder options."""

    def __init__(self, options):
        self.allocation = options["StepAllocation"]
        self.qp = options["QP"]
        self.noise_budget = options["NoiseBudget"]
        self.epsilon = options["JndEpsilon"]
        self.map_strength = options["JndMapStrength"]
        self.seed = options["RandomSeed"]
        self.rounding_offset = options["RoundingOffset"]
        self._weights = options["JndWeights"]
        self._estimators = {}          # weight file -> loaded estimator
        self.estimators_used = []      # the files the tensors' steps came from, in first-use order
        self.choices = []              # separable allocations: each tensor's chosen (map kind, spacing)

    @property
    def active(self):
        return self.allocation != "uniform" or self.noise_budget > 0

    @property
    def estimator_output(self):
        """The estimator kind the allocation needs when JndWeights is empty: a noise estimator for
        the separable allocations, the paper's (direction) for the per-token ones."""
        return "noise" if self.allocation in SEPARABLE_ALLOCATIONS else "direction"

    def estimator(self, channels):
        """The estimator for `channels`-channel tensors: JndWeights' file, or (empty) the shipped
        one of the allocation's kind that takes them."""
        path = weights_path(self._weights) if self._weights else estimator_for(channels, self.estimator_output)
        if path not in self._estimators:
            from encoder.featjnd.estimator import load_estimator   # torch only when JND is used
            self._estimators[path] = load_estimator(path)
        if path not in self.estimators_used:
            self.estimators_used.append(path)
        return self._estimators[path]

    def delta(self, grid):
        """δ of a (C, H, W) float64 grid, from the estimator (float64)."""
        import torch
        chosen = self.estimator(grid.shape[0])
        estimator = chosen.for_channels(grid.shape[0])
        if estimator is None:
            config = chosen.config
            raise InputError(f"the FeatJND estimator takes {config.get('levels', config.get('channels'))} "
                             f"channels, the tensor has {grid.shape[0]}")
        with torch.no_grad():
            return estimator(torch.from_numpy(grid.astype(np.float32))[None])[0].double().numpy()

    def offsets(self, spec, grid):
        """The step offsets to QP of one tensor's coding grid: (H, W) token offsets, or a
        StepOffsets (token and channel offsets) for a separable allocation."""
        if self.allocation in SEPARABLE_ALLOCATIONS:
            tokens, channels, choice = separable_offsets(grid, self.delta(grid), self.allocation, self.qp,
                                                         self.noise_budget, self.seed, self.rounding_offset,
                                                         self.map_strength)
            self.choices.append(choice)
            return StepOffsets(tokens=tokens, channels=channels)
        if self.allocation == "uniform":
            tolerance = np.ones(spec.grid[1:])
        elif self.allocation == "jnd_rd":
            return rd_offsets(grid, self.delta(grid), self.qp, self.rounding_offset, self.noise_budget)
        elif self.allocation == "jnd_abs":
            tolerance = absolute_tolerance(self.delta(grid))
        else:
            tolerance = token_tolerance(grid, self.delta(grid), self.epsilon)
        weights = shaped_tolerance(tolerance, self.allocation, self.seed)
        return step_exponents(weights, self.qp, self.noise_budget) - self.qp

