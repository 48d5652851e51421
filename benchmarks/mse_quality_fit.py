"""How well feature MSE predicts task quality (FCM-LM's Table 5 asks the same): over every coded
point of a CTC run (all tools and rate points), the R² of a straight-line fit of a quality metric
on log10 MSE, and Spearman's rank correlation, per tool family and over all.

    python benchmarks/mse_quality_fit.py docs/results/ctc_fcmlm_dinov2s_saliency [--metric cc]

Reads the run's points.csv (written by `ctc report`); no records needed.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np


def r_squared(x, y):
    slope, intercept = np.polyfit(x, y, 1)
    residual = y - (slope * x + intercept)
    return 1 - float((residual ** 2).sum() / ((y - y.mean()) ** 2).sum())


def spearman(x, y):
    rank = lambda v: np.argsort(np.argsort(v)).astype(float)
    return float(np.corrcoef(rank(x), rank(y))[0, 1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a CTC run folder with points.csv")
    parser.add_argument("--metric", help="quality column (default: the first after the CI columns' stem)")
    args = parser.parse_args(argv)
    with open(Path(args.run) / "points.csv", newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["mse"]]
    metric = args.metric or next(c for c in rows[0] if c.endswith("_ci_low"))[:-len("_ci_low")]
    print(f"{args.run}: {metric} against log10 feature MSE, {len(rows)} coded points")
    groups = {"all tools": rows}
    for row in rows:
        groups.setdefault(row["tool"], []).append(row)
    for name, members in groups.items():
        x = np.log10([float(r["mse"]) for r in members])
        y = np.array([float(r[metric]) for r in members])
        if len(members) < 3 or np.ptp(y) == 0:
            continue
        print(f"  {name:<16} n = {len(members):2d}: R² {r_squared(x, y):.3f}, Spearman {spearman(x, y):+.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
