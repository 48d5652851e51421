"""Where an L-MSFC model's quality binds: the rate, or the transform itself.

For each model set (one fusion model, or the three single-level models of an ablation) on the 13
held-out pool photos of the training (whole pictures, the integer arithmetic simulated, rate
from the models' likelihoods): bpp, weighted feature MSE, D_yolo and AP50 of the detections
against the uncompressed ones, at a spread of rate indices, and once more with y unquantised
(row "y"): the transform's own loss, which no rate can beat. When the finest rate indices sit at
the "y" row while their bits still grow, the model is limited by its capacity, not its rate.

The models are read from their files (float encoder layers, integer decoder layers as
w_int / 2^s), so this runs on shipped models without their checkpoints. Needs ../shared.

    .venv/bin/python benchmarks/bench_lmsfc_capacity.py --models yolov5n-task \
        --models yolov5n-task-nofusion-level0,yolov5n-task-nofusion-level1,yolov5n-task-nofusion-level2
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


def loaded_models(names):
    """{name: FusionModel} of a comma-separated model set, read back from the model files."""
    from encoder.tools.lmsfc.analysis import resolve_model
    from encoder.tools.lmsfc.model_file import initialise_from
    from encoder.tools.lmsfc.network import FusionModel

    models = {}
    for name in (n.strip() for n in names.split(",") if n.strip()):
        source = resolve_model(name)
        rows = None if source.gain_exponents is None else [0.0] * len(source.gain_exponents)
        model = FusionModel(source.family, rows)
        if all(norm is not None for norm in source.level_normalisation):
            model.set_normalisation(*zip(*source.level_normalisation))
        initialise_from(model, source.path)
        models[name] = model.eval()
    return models


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", action="append", required=True,
                        help="a model set: one fusion model, or an ablation's models comma-separated (repeatable)")
    parser.add_argument("--weights", default=str(DATA / "weights" / "yolov5n_coco.safetensors"))
    args = parser.parse_args(argv)
    if not Path(args.weights).is_file():
        sys.exit(f"bench_lmsfc_capacity: YOLOv5n weights not found at {args.weights}")

    import torch

    from ctc.tasks.yolov5n import Yolov5n
    from ctc.training.data import cached_pyramids, split_pool, training_pool
    from ctc.training.fusion import mse_level_weights, parse_args, validate

    torch.set_num_threads(1)
    train_paths, held_paths = split_pool(training_pool(DATA))
    held = cached_pyramids(args.weights, held_paths, 0, 1, "held")
    level_weights = mse_level_weights(cached_pyramids(args.weights, train_paths, 0, 3, "train"))
    detector = Yolov5n(args.weights, split="neck").eval()
    head = (lambda levels: detector.head_logits(dict(zip(detector.names, levels))))
    print(f"{len(held)} held-out pool photos; AP50 against the uncompressed detections (score ≥ 0.25)")
    print(f"{'models':<40} {'rate':>5} {'bpp':>8} {'MSE':>7} {'D_yolo':>8} {'AP50':>6}")
    for names in args.models:
        models = loaded_models(names)
        rows = next(iter(models.values())).num_rates
        settings = parse_args(["--rates", str(rows)])
        report = validate(models, held, level_weights, settings, head, detector)
        label = names if len(names) <= 40 else names[:37] + "…"
        for rate, point in report.items():
            print(f"{label:<40} {rate:>5} {point['bpp']:>8.4f} {point['mse']:>7.4f} {point['d_yolo']:>8.5f} "
                  f"{point['ap50']:>6.2f}")
    print("(rate \"y\": y unquantised, the transform's floor; its bpp is not a coding rate)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
