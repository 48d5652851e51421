"""What the integer decoder costs: L-MSFC's integer DRNet against the same trained weights in
float (torch, no rounding: what a CompressAI-style float decoder would output), at equal rate.

For every annotated coco-mini image and rate index, the stream is coded once (the real
encoder: its bits are the rate of both); its ŷ is decoded by the normative integer DRNet and by
the float DRNet of the training checkpoint; YOLOv5n's back half scores both. Printed: AP50 per
rate point for both, and the BD-rate (AP50 vs bpp, pchip, as the CTC report) of integer vs float:
the rate the integerisation costs (> 0) at equal AP50. The hyper-synthesis is integer in both
(the rate is the stream's), so this isolates DRNet's fixed point.

Needs ../shared (weights, coco-mini) and the checkpoint the training wrote
(out/train_fusion/<model>.ckpt; --checkpoint):

    .venv/bin/python benchmarks/bench_lmsfc_integerisation.py [--model yolov5n] [--images 79]
    .venv/bin/python benchmarks/bench_lmsfc_integerisation.py --model yolov5n-task --rate-points 0,1,2,3,4,6,8,10
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="yolov5n")
    parser.add_argument("--checkpoint", help="default out/train_fusion/<model>.ckpt")
    parser.add_argument("--images", type=int, default=79)
    parser.add_argument("--rate-points", default="-8,-2,4,10,16,22")
    args = parser.parse_args(argv)
    args.checkpoint = args.checkpoint or str(REPO / "out" / "train_fusion" / f"{args.model}.ckpt")
    if not Path(args.checkpoint).is_file():
        sys.exit(f"bench_lmsfc_integerisation: no checkpoint {args.checkpoint} (run ctc.training.fusion)")

    import torch

    from common.tools.lmsfc.arithmetic import FRACTION_BITS
    from common.tools.lmsfc.graph import drnet
    from ctc.config import load_config
    from ctc.datasets import coco_paths, load_samples
    from ctc.feature_cache import FeatureCache
    from ctc.metrics import CocoScorer
    from ctc.runner import _pixels
    from ctc.stats import bd_rate
    from ctc.tasks.evaluation import build_task
    from encoder.tools.lmsfc.analysis import encode_group, resolve_model
    from encoder.tools.lmsfc.network import FusionModel, TorchOps

    torch.set_num_threads(1)
    config = load_config("coco_yolov5n")
    root = DATA / "coco-mini"
    samples = load_samples(config, root)[:args.images]
    task = build_task(config, DATA / "weights" / "yolov5n_coco.safetensors")
    cache = FeatureCache(Path.home() / ".cache" / "fcrs" / "features", task)
    model = resolve_model(args.model)
    gain_init = None if model.gain_exponents is None else [0.0] * len(model.gain_exponents)
    trained = FusionModel(model.family, gain_init)
    stored = torch.load(args.checkpoint, weights_only=False)["models"]
    trained.load_state_dict(stored[args.model] if args.model in stored else next(iter(stored.values())))
    params = trained.params()
    rates = [int(r) for r in args.rate_points.split(",")]
    records = {(kind, r): [] for kind in ("integer", "float") for r in rates}
    bits = {r: 0.0 for r in rates}
    difference = {r: [0.0, 0.0] for r in rates}     # Σ (integer − float)², Σ float² over every value
    pixels = 0
    for number, sample in enumerate(samples):
        tensors, context, _ = cache.of_sample(sample)
        names = list(tensors)
        arrays = [tensors[n][0] for n in names]
        pixels += _pixels(sample.path)
        for r in rates:
            coding = encode_group(model, arrays, r)
            bits[r] += 8 * len(coding.payload)
            integer = {n: (a / 2.0 ** FRACTION_BITS).astype(np.float32)[None]
                       for n, a in zip(names, coding.reconstruction)}
            with torch.no_grad():
                y_hat = torch.from_numpy(coding.y_hat / 2.0 ** FRACTION_BITS).float()[None]
                levels = drnet(TorchOps(params), model.family, y_hat, [a.shape[1:] for a in arrays])
                levels = [level * std.view(1, -1, 1, 1) + mean.view(1, -1, 1, 1)
                          for i, level in enumerate(levels) for mean, std in [trained.normalisation(i)]]
            floating = {n: level.numpy() for n, level in zip(names, levels)}
            for n in names:
                difference[r][0] += float(np.sum((integer[n].astype(np.float64) - floating[n]) ** 2))
                difference[r][1] += float(np.sum(floating[n].astype(np.float64) ** 2))
            for kind, decoded in (("integer", integer), ("float", floating)):
                records[(kind, r)].append({"image": sample.id, "prediction": task.back(decoded, context)})
        print(f"\r{number + 1}/{len(samples)} images", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)

    scorer = CocoScorer(coco_paths(root, config.dataset)[1], [s.id for s in samples])
    ap50 = {key: scorer.stats(scorer.evaluation(recs, "bbox"))[1] for key, recs in records.items()}
    bpp = [bits[r] / pixels for r in rates]
    print(f"L-MSFC {args.model}: integer vs float DRNet, {len(samples)} images, AP50 (%)")
    print(f"  {'rate index':>10} {'bpp':>8} {'integer':>8} {'float':>8} {'Δ':>6}  NRMSE(integer vs float)")
    for r, b in zip(rates, bpp):
        gap = ap50[("integer", r)] - ap50[("float", r)]
        nrmse = math.sqrt(difference[r][0] / difference[r][1])
        print(f"  {r:>10} {b:>8.4f} {ap50[('integer', r)]:>8.2f} {ap50[('float', r)]:>8.2f} {gap:>+6.2f}  {nrmse:.2e}")
    gaps = [ap50[("integer", r)] - ap50[("float", r)] for r in rates]
    print(f"  AP50 integer − float: mean {np.mean(gaps):+.2f}, largest |Δ| {np.max(np.abs(gaps)):.2f} points")
    cost = bd_rate(bpp, [ap50[("float", r)] for r in rates], bpp, [ap50[("integer", r)] for r in rates])
    monotonic = all(np.all(np.diff([ap50[(kind, r)] for r in sorted(rates, reverse=True)]) >= 0)
                    for kind in ("integer", "float"))
    print(f"  BD-rate of the integer decoder vs float (AP50 vs bpp): {cost:+.2f} %"
          + ("" if monotonic else " (AP50 is not monotonic in rate here: the BD-rate is not meaningful; "
                                   "read the per-point Δ)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
