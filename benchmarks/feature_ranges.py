"""The truncation range of FCM-LM's VTM baseline, measured: percentiles of a large-model split's
feature values over the training pool (ctc/training/data.py's 313 photos; never the evaluation
images). FCM-LM truncates each feature type to a range before its 10-bit quantisation; this
prints the [p, 100 − p] percentiles to use as the feature anchor's TruncationMin / TruncationMax.

    python benchmarks/feature_ranges.py --network dinov2s [--data ../shared/data] [--images 100]
    python benchmarks/feature_ranges.py --network taef2 --weights ../shared/data/weights/taesd
    python benchmarks/feature_ranges.py --network smollm2

SmolLM2's hidden states need text that no evaluation set holds (ARC is evaluation only): the
docstrings of ctc/training/data.py's TEXT_MODULES of the Python standard library, first
TEXT_CHARACTERS characters each, in the prompt form of the ARC condition
("Question: <text>\nAnswer:").

Prints the percentiles, and how much of the values and of the squared values a range clips.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PERCENTILES = (0.001, 0.01, 0.1)
TEXT_CHARACTERS = 400


def text_values():
    """SmolLM2's last-layer hidden states of the standard library's docstrings (one array each)."""
    import torch

    from ctc.tasks.smollm2 import SmolLM2
    from ctc.training.data import docstring_texts

    net = SmolLM2()
    values = []
    for text in docstring_texts(TEXT_CHARACTERS):
        ids = net.tokenizer(f"Question: {text}\nAnswer:", add_special_tokens=False).input_ids
        with torch.no_grad():
            values.append(net.front(torch.tensor([ids]))[0].numpy().ravel())
    return values


def main(argv=None):
    from ctc.images import read_rgb
    from ctc.tasks.evaluation import LatentTask, SaliencyTask
    from ctc.training.data import training_pool

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--network", required=True, choices=("dinov2s", "taef2", "smollm2"))
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--weights", help="taef2: the folder of its weights")
    parser.add_argument("--crop", type=int, default=256, help="taef2: the centre crop (fcmlm_taef2's)")
    parser.add_argument("--images", type=int, default=100, help="pool photos, evenly spaced (default 100)")
    args = parser.parse_args(argv)

    if args.network == "smollm2":
        values = text_values()
        report(args.network, f"{len(values)} standard-library docstrings", values)
        return 0
    task = SaliencyTask() if args.network == "dinov2s" else LatentTask(args.weights, {"crop": args.crop})
    pool = training_pool(Path(args.data))
    chosen = [pool[i] for i in np.linspace(0, len(pool) - 1, min(args.images, len(pool))).astype(int)]
    values, photos = [], 0
    view = getattr(task, "input_view", None)
    for path in chosen:
        rgb = read_rgb(path)
        if view and min(rgb.shape[:2]) < args.crop:
            continue                   # smaller than TAEF2's crop: not a photo the condition could hold
        tensors, _ = task.front(view(rgb) if view else rgb)
        values.append(np.concatenate([t.ravel() for t in tensors.values()]))
        photos += 1
    report(args.network, f"{photos} training-pool photos", values)
    return 0


def report(network, source, values):
    values = np.concatenate(values).astype(np.float64)
    print(f"{network}: {source}, {values.size:,} feature values, "
          f"min {values.min():.4g}, max {values.max():.4g}, mean {values.mean():.4g}, std {values.std():.4g}")
    energy = float((values ** 2).sum())
    for p in PERCENTILES:
        low, high = np.percentile(values, [p, 100 - p])
        outside = (values < low) | (values > high)
        clipped = np.clip(values, low, high)
        print(f"  [{p:g} %, {100 - p:g} %]: TruncationMin {low:.4g}, TruncationMax {high:.4g}; clips "
              f"{100 * outside.mean():.3f} % of the values, {100 * float(((values - clipped) ** 2).sum()) / energy:.3f} % "
              f"of their energy; range {high - low:.4g} against {values.max() - values.min():.4g}")


if __name__ == "__main__":
    sys.exit(main())
