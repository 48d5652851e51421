"""FeatJND calibration: how much the task metric drops at f + α·δ, on images the estimator never saw.

    calibration images ─► frozen front ─► f ─► G_θ ─► δ
    per α: back(f + α·δ) ─► metric(α);  drop(α) = (metric(0) − metric(α)) / metric(0)

A noise estimator (output "noise") is calibrated the same way on f + α·δ ⊙ n, n one fixed
draw of unit-variance uniform noise per calibration feature (seeded), and its candidates
are compared by the mean of log(κ·δ), the rate a quantiser at steps √12·κ·δ saves.

"α = 1 is just noticeable" (the paper's Fig. 8 claim) means drop(1) ≤ 1 % and drop(2)
clearly larger. The training reward fixes δ's shape but only loosely its size (the
drop at α = 1 fell from 10 % to 4 % as λ_t grew 16× on YOLOv5n), so the calibration
sets both (ctc/training/featjnd.py --lambdas): for every trained candidate, κ is the
largest scale whose drop stays within the tolerance (found on the α grid, then by
bisection), and the shipped estimator is the candidate with the largest just-noticeable
perturbation κ·‖δ‖/‖f‖, with δ scaled by its κ (stored in the file: α = 1 is then κ·δ).

Detection (YOLOv5n): the 80 annotated COCO train2017 photos of ../shared/data/coco-train,
held back from the estimator's training pool; bbox AP50 with pycocotools against their
official annotations (letterboxed 640×640, the CTC's pre- and post-processing).
Classification (EfficientNet-Lite): every fifth photo of train-images, held back from
training, centre crop plus eight seeded random resized crops each; top-1 agreement with
the clean prediction (the photos have no ImageNet labels).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

ALPHAS = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0)
JUST_NOTICEABLE_DROP = 0.01      # relative task drop that α = 1 may cost
CLASSIFICATION_HOLDOUT_STRIDE = 5        # every fifth train-images photo calibrates
CLASSIFICATION_CROPS = 8                 # seeded random resized crops per calibration photo (+ the centre crop)
NOISE_SEED = 20261207                    # the calibration's fixed noise draw


def fixed_noise(features):
    """One seeded unit-variance uniform draw shaped like `features` (a tensor, or a list of pyramids:
    lists of level tensors), so every α and every candidate sees the same noise."""
    from ctc.training.losses import unit_uniform_noise

    generator = torch.Generator().manual_seed(NOISE_SEED)
    if isinstance(features, torch.Tensor):
        return unit_uniform_noise(features, generator)
    return [[unit_uniform_noise(level, generator) for level in levels] for levels in features]


def perturbation(delta, noise):
    """α = 1's perturbation: δ (direction estimators, noise None) or δ ⊙ n."""
    return delta if noise is None else delta * noise


def split_every(paths, stride):
    """(training paths, held-back paths): every `stride`-th path is held back."""
    held = set(paths[::stride])
    return [p for p in paths if p not in held], [p for p in paths if p in held]


# -- detection: YOLOv5n on coco-train ---------------------------------------------------------------

class DetectionCalibration:
    """Front features, letterbox placements and annotations of the detection calibration images."""

    def __init__(self, net, data, noise=False):
        from ctc.images import read_rgb
        from ctc.metrics import CocoScorer
        from ctc.tasks.yolov5n import letterbox, to_input

        folder = Path(data) / "coco-train"
        annotations = folder / "annotations" / "instances_train2017.json"
        with open(annotations) as fh:
            images = json.load(fh)["images"]
        self.net = net
        self.image_ids = [entry["id"] for entry in images]
        self.scorer = CocoScorer(annotations, self.image_ids)
        self.features, self.placements = [], []
        for entry in images:
            boxed, placement = letterbox(read_rgb(folder / "train2017" / entry["file_name"]))
            with torch.no_grad():
                levels = net.front(to_input(boxed))
            self.features.append([levels[name] for name in net.names])
            self.placements.append(placement)
        self.noise = fixed_noise(self.features) if noise else [None] * len(self.features)

    def curve(self, estimator, alphas=ALPHAS):
        """{α: AP50 in %} of back(f + α·δ) over the calibration images."""
        deltas = []
        with torch.no_grad():
            for levels, noise in zip(self.features, self.noise):
                deltas.append([perturbation(d, n) for d, n in zip(estimator(levels), noise or [None] * len(levels))])
        return {alpha: self._ap50([[f + alpha * d for f, d in zip(levels, delta)]
                                   for levels, delta in zip(self.features, deltas)])
                for alpha in alphas}

    def _ap50(self, pyramids):
        from ctc.tasks.yolov5n import COCO_CATEGORY_IDS, non_max_suppression, scale_boxes

        records = []
        for image_id, levels, placement in zip(self.image_ids, pyramids, self.placements):
            with torch.no_grad():
                prediction = self.net.back(dict(zip(self.net.names, levels)))
                detections = scale_boxes(non_max_suppression(prediction)[0], placement).numpy()
            records.append({"image": image_id, "prediction": {"detections": [
                {"category_id": COCO_CATEGORY_IDS[int(c)], "bbox": [float(x0), float(y0), float(x1 - x0),
                                                                      float(y1 - y0)], "score": float(s)}
                for x0, y0, x1, y1, s, c in detections]}})
        return self.scorer.stats(self.scorer.evaluation(records, "bbox"))[1]


# -- classification: EfficientNet-Lite on held-back train-images ------------------------------------

class ClassificationCalibration:
    """Front features of the classification calibration crops and their clean top-1 classes."""

    def __init__(self, net, paths, seed=0, noise=False):
        from PIL import Image

        from ctc.training.data import augmented_crops

        crops = []
        for index, path in enumerate(paths):
            with Image.open(path) as image:
                crops.append(net.preprocess(image))
            crops.extend(augmented_crops(path, seed + 1, index, CLASSIFICATION_CROPS, net.input_size))
        self.net = net
        with torch.no_grad():
            self.features = torch.cat([net.front(torch.stack(crops[i:i + 32])) for i in range(0, len(crops), 32)])
            self.clean = net.back(self.features).argmax(dim=1)
        self.noise = fixed_noise(self.features) if noise else None

    def curve(self, estimator, alphas=ALPHAS):
        """{α: top-1 agreement with the clean prediction in %} of back(f + α·δ)."""
        with torch.no_grad():
            delta = torch.cat([estimator(self.features[i:i + 64]) for i in range(0, len(self.features), 64)])
            delta = perturbation(delta, self.noise)
            return {alpha: 100.0 * float((self.net.back(self.features + alpha * delta).argmax(dim=1)
                                          == self.clean).float().mean())
                    for alpha in alphas}


# -- the choice -------------------------------------------------------------------------------------

def drops(curve):
    """{α: relative drop of the metric from α = 0}."""
    clean = curve[0.0]
    return {alpha: (clean - value) / clean if clean else 0.0 for alpha, value in curve.items()}


def just_noticeable_scale(calibration, estimator, curve, tolerance=JUST_NOTICEABLE_DROP, steps=5):
    """κ: the largest scale of δ whose drop stays within the tolerance, from the α grid of `curve`
    refined by `steps` bisections toward the first α that exceeds it (capped at the grid's end)."""
    dropped = drops(curve)
    alphas = sorted(dropped)
    exceeding = [a for a in alphas if dropped[a] > tolerance]
    if not exceeding:
        return alphas[-1]
    high = exceeding[0]
    low = max(a for a in alphas if a < high)          # α = 0 drops nothing
    for _ in range(steps):
        middle = (low + high) / 2
        value = {0.0: curve[0.0], **calibration.curve(estimator, (middle,))}     # the clean value is known
        if drops(value)[middle] <= tolerance:
            low = middle
        else:
            high = middle
    return low


def just_noticeable_size(size, scale, output):
    """The size of the just-noticeable perturbation κ·δ: κ·‖δ‖/‖f‖ (direction), or
    log κ + mean log δ (noise; −∞ when κ = 0)."""
    if output == "noise":
        return float(np.log(scale)) + size if scale > 0 else -np.inf
    return scale * size


def choose(candidates, output="direction"):
    """The λ_t to ship from {λ_t: (curve, size, κ)}, size from perturbation_size: the largest
    just-noticeable perturbation; None when every κ is 0."""
    best = max(candidates, key=lambda lam: just_noticeable_size(candidates[lam][1], candidates[lam][2], output))
    return best if candidates[best][2] > 0 else None


SIZE_NAMES = {"direction": ("‖δ‖/‖f‖", "κ·‖δ‖/‖f‖"), "noise": ("mean log δ", "mean log κδ")}


def curve_table(candidates, chosen, output="direction"):
    """Markdown: one row per λ_t (unscaled δ) with the metric and the drop at every α, and κ."""
    alphas = next(iter(candidates.values()))[0].keys()
    size_name, scaled_name = SIZE_NAMES[output]
    lines = [f"| λ_t | {size_name} | " + " | ".join(f"α = {a:g}" for a in alphas)
             + f" | κ | {scaled_name} | chosen |",
             "|---:|---:|" + "---:|" * len(alphas) + "---:|---:|:---|"]
    for lam, (curve, size, scale) in sorted(candidates.items()):
        cells = [f"{curve[a]:.1f} ({-100 * drops(curve)[a]:+.1f} %)" for a in alphas]
        lines.append(f"| {lam:g} | {size:.3f} | " + " | ".join(cells)
                     + f" | {scale:.3f} | {just_noticeable_size(size, scale, output):.3f} | "
                     + f"{'◀' if lam == chosen else ''} |")
    return "\n".join(lines)


def perturbation_size(estimator, features):
    """What the calibration compares candidates by: the mean relative norm ‖δ‖/‖f‖ (direction) or
    the mean of log δ over every element (noise)."""
    if getattr(estimator, "output", "direction") != "noise":
        return relative_norm(estimator, features)
    with torch.no_grad():
        if isinstance(features, torch.Tensor):
            logs = [torch.log(estimator(features[i:i + 64])).flatten() for i in range(0, len(features), 64)]
        else:
            logs = [torch.log(d).flatten() for levels in features for d in estimator(levels)]
        return float(torch.cat(logs).double().mean())


def relative_norm(estimator, features):
    """Mean over samples of ‖δ‖₂ / ‖f‖₂ (features: a list of pyramids (lists of 1×C×h×w) or an N×C×H×W tensor)."""
    with torch.no_grad():
        if isinstance(features, torch.Tensor):
            delta = torch.cat([estimator(features[i:i + 64]) for i in range(0, len(features), 64)])
            return float((delta.flatten(1).norm(dim=1) / features.flatten(1).norm(dim=1).clamp_min(1e-12)).mean())
        ratios = []
        for levels in features:
            delta = estimator(levels)
            ratios.append(float(torch.sqrt(sum((d ** 2).sum() for d in delta))
                                / torch.sqrt(sum((f ** 2).sum() for f in levels))))
        return float(np.mean(ratios))
