"""Token-wise step allocation: uniform, FeatJND-guided, or the JND map permuted.

    f ─► G_θ ─► δ ─► s_t = mean_c |δ| / (|f| + ε) ─► [jnd: s | random: s permuted | uniform: 1]
      ─► Δ_t = λ · s_t ─► e_t = round(48 + 8·log2 Δ_t) ─► step offsets e_t − QP

λ makes the mean noise power of the steps, E_t[Δ_t²/12], equal to σ_tgt²
(`NoiseBudget`), or, when no budget is given, equal to that of the uniform
step of `QP` (so jnd, random and uniform at the same QP spend the same noise
budget and differ only in where they put it). The decoder only ever sees the
resulting integer offsets (tsq_step_map_flag), so it stays torch-free.
"""

import glob
import os

import numpy as np

from common.errors import InputError
from common.tools.tokenwise.sq import STEP_EXPONENTS_PER_OCTAVE, UNIT_STEP_EXPONENT, step_sizes
from common.tools.tokenwise.syntax import QP_MAX, QP_MIN

ALLOCATIONS = ("uniform", "jnd", "random")
WEIGHTS_FOLDER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")


def token_tolerance(grid, delta, epsilon):
    """s_t = mean over channels of |δ| / (|f| + ε), for a (C, H, W) grid -> (H, W)."""
    return np.mean(np.abs(delta) / (np.abs(grid) + epsilon), axis=0)


def shaped_tolerance(tolerance, allocation, seed):
    """The per-token weights the steps follow: s (jnd), s permuted over tokens with a
    fixed seed (random), or all ones (uniform)."""
    if allocation == "uniform":
        return np.ones_like(tolerance)
    if allocation == "random":
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
    exponents = np.rint(UNIT_STEP_EXPONENT + STEP_EXPONENTS_PER_OCTAVE * np.log2(scale * weights))
    return np.clip(exponents, QP_MIN, QP_MAX).astype(np.int64)


DEFAULT_ESTIMATOR = "featjnd_efficientnet-lite0"


def default_weights_path():
    """The shipped estimator (EfficientNet-Lite0 backbone features)."""
    found = glob.glob(os.path.join(WEIGHTS_FOLDER, f"{DEFAULT_ESTIMATOR}_*.safetensors"))
    if len(found) != 1:
        raise InputError(f"expected one {DEFAULT_ESTIMATOR}_<hash>.safetensors in {WEIGHTS_FOLDER}, found "
                         f"{len(found)}: set JndWeights")
    return found[0]


class StepAllocator:
    """Computes every tensor's step offsets (to QP) from the encoder options."""

    def __init__(self, options):
        self.allocation = options["StepAllocation"]
        self.qp = options["QP"]
        self.noise_budget = options["NoiseBudget"]
        self.epsilon = options["JndEpsilon"]
        self.seed = options["RandomSeed"]
        self._weights_path = options["JndWeights"] or None
        self._estimator = None

    @property
    def active(self):
        return self.allocation != "uniform" or self.noise_budget > 0

    def estimator(self):
        if self._estimator is None:
            from encoder.featjnd.estimator import load_estimator   # torch only when JND is used
            self._estimator = load_estimator(self._weights_path or default_weights_path())
        return self._estimator

    def tolerance(self, grid):
        """s_t of a (C, H, W) float64 grid, from the estimator."""
        import torch
        estimator = self.estimator()
        channels = estimator.config["channels"]
        if grid.shape[0] != channels:
            raise InputError(f"the FeatJND estimator takes {channels} channels, the tensor has {grid.shape[0]}")
        with torch.no_grad():
            delta = estimator(torch.from_numpy(grid.astype(np.float32))[None])[0].double().numpy()
        return token_tolerance(grid, delta, self.epsilon)

    def offsets(self, spec, grid):
        """(H, W) step offsets to QP for one tensor's coding grid."""
        if self.allocation == "uniform":
            tolerance = np.ones(spec.grid[1:])
        else:
            tolerance = self.tolerance(grid)
        weights = shaped_tolerance(tolerance, self.allocation, self.seed)
        return step_exponents(weights, self.qp, self.noise_budget) - self.qp

