"""FeatJND calibration: the choice of λ_t from the drop curves, and the held-back split."""

import pytest

pytest.importorskip("torch")

from ctc.featjnd_calibration import choose, curve_table, drops, split_every  # noqa: E402


def curve(drop_at_1, drop_at_2, clean=50.0):
    return {0.0: clean, 1.0: clean * (1 - drop_at_1), 2.0: clean * (1 - drop_at_2)}


def test_the_largest_perturbation_within_the_tolerance_is_chosen():
    candidates = {16.0: (curve(0.05, 0.20), 0.40),       # too visible at α = 1
                  64.0: (curve(0.008, 0.04), 0.20),      # just noticeable: chosen
                  256.0: (curve(0.002, 0.01), 0.08)}     # within, but smaller δ
    assert choose(candidates) == 64.0
    assert choose(candidates, tolerance=0.001) is None
    assert drops(curve(0.01, 0.5))[1.0] == pytest.approx(0.01)
    table = curve_table(candidates, 64.0)
    assert table.count("\n") == 4 and "| 64 | 0.200 |" in table and table.splitlines()[3].endswith("◀ |")


def test_every_stride_th_path_is_held_back():
    paths = [f"p{i}" for i in range(12)]
    train, held = split_every(paths, 5)
    assert held == ["p0", "p5", "p10"] and train == [p for p in paths if p not in held]
