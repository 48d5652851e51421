"""FeatJND calibration: the just-noticeable scale κ, the choice of λ_t, and the held-back split."""

import pytest

pytest.importorskip("torch")

from ctc.training.featjnd_calibration import choose, curve_table, drops, just_noticeable_scale, split_every  # noqa: E402


class LinearDrop:
    """A calibration set whose metric falls 2 % per unit of α beyond α = 0.25 (×the estimator's gain)."""

    def __init__(self, gain):
        self.gain = gain

    def curve(self, estimator, alphas=(0.0, 0.5, 1.0, 2.0, 4.0)):
        return {a: 100.0 - 2.0 * max(0.0, a * self.gain - 0.25) for a in alphas}


def test_the_scale_is_the_largest_within_the_tolerance():
    calibration = LinearDrop(gain=1.0)                   # drop ≤ 1 % while α ≤ 0.75
    scale = just_noticeable_scale(calibration, None, calibration.curve(None), steps=8)
    assert 0.74 <= scale <= 0.75
    gentle = LinearDrop(gain=0.1)                        # never 1 % on the grid (α ≤ 4): the grid's end
    assert just_noticeable_scale(gentle, None, gentle.curve(None)) == 4.0


def test_the_largest_just_noticeable_perturbation_is_chosen():
    curve = {0.0: 50.0, 1.0: 49.0, 2.0: 45.0}
    candidates = {16.0: (curve, 2.0, 0.4),               # κ·norm 0.8: chosen
                  64.0: (curve, 1.0, 0.7),               # 0.7
                  256.0: (curve, 0.3, 1.0)}              # 0.3
    assert choose(candidates) == 16.0
    assert choose({1.0: (curve, 1.0, 0.0)}) is None
    assert drops(curve)[1.0] == pytest.approx(0.02)
    table = curve_table(candidates, 16.0)
    assert table.count("\n") == 4 and "| 0.400 | 0.800 | ◀ |" in table


def test_every_stride_th_path_is_held_back():
    paths = [f"p{i}" for i in range(12)]
    train, held = split_every(paths, 5)
    assert held == ["p0", "p5", "p10"] and train == [p for p in paths if p not in held]


def test_noise_candidates_are_compared_by_the_mean_log_of_the_scaled_amplitude():
    import math

    curve = {0.0: 50.0, 1.0: 49.5, 2.0: 45.0}
    candidates = {10.0: (curve, -1.0, 0.5),              # mean log κδ = −1 + log 0.5 = −1.69
                  100.0: (curve, -1.5, 1.0)}             # −1.5: chosen
    assert choose(candidates, "noise") == 100.0
    assert choose(candidates) == 10.0                    # by κ·size, the direction estimators' rule
    table = curve_table(candidates, 100.0, "noise")
    assert "mean log κδ" in table and f"| {math.log(0.5) - 1.0:.3f} |" in table
