"""Train the FeatJND estimator G_θ against a frozen task network (ARCHITECTURE.md §4.2).

    image ─► random resized crop (scale 0.35–1) + horizontal flip ─► frozen front ─► f
    f ─► G_θ ─► δ (clamped ±10)
    L = λ_t · D_t(f + δ, f) − mean_batch ‖δ‖₂        (Adam, gradient norm clipped to 1)

    --perturbation noise (the noise-tolerance estimator the step allocation uses):
    f ─► G_θ ─► δ = exp(u) > 0,  n i.i.d. uniform of unit variance, fresh every step
    L = λ_t · D_t(f + δ ⊙ n, f) − mean_batch mean_i log δ_i

The paper's estimator learns one direction the head does not see; a quantiser adds
noise of its own shape, i.i.d.-like, in every direction. The noise estimator is trained
on that perturbation, and rewarded with the mean of log δ because a step Δ_i = √12·δ_i
saves −log2 Δ_i bits per element (not ‖δ‖₂, which a few huge values would dominate).

Classification (``--task cls``, EfficientNet-Lite): f is the 1280×7×7 backbone
output (or the 320×7×7 blocks output, ``--split blocks``), D_cls = T²·KL(softmax(back(f)/T) ‖ softmax(back(f + δ)/T)), T = 4,
λ_t = 50, lr 1e-4. No labels are needed: the frozen network's own prediction
on the clean feature is the target.

Why a feature cache (classification only): on 2 CPU cores the frozen backbone
costs ~0.12 s per crop while a step of G_θ (width 32) and the head costs ~2 ms
per sample. So
the backbone runs once: ``--crops`` augmented crops per image are drawn with a
fixed seed (each image's crops from its own generator, seeded by (seed, image
index), so the cache does not depend on batching or threads), their features are
kept in memory (~0.25 MB each; ``--cache FILE`` also keeps them on disk), and
G_θ then trains for many epochs on these fixed crops. This trades augmentation
diversity (K fixed crops instead of fresh ones each epoch) for a step some 50×
cheaper. (The first Lite0 estimator, with the paper's λ_t = 50 and reward ‖δ‖₂,
saturated at ±10 in a nearly image-independent pattern: the history in
encoder/featjnd/weights/README.md. The calibrated ones replaced it.)

YOLOv5n (``--task det --model yolov5n``): one network per level of P3–P5 (64, 128, 256
channels), D_yolo on the Detect head's raw outputs (``ctc.training.losses``), cached
augmented pyramids of the training pool, batches of aligned crops (``run_yolo``).

Calibration (``--lambdas``, with ``--reward relative``: L = λ_t·D − ‖δ‖₂/‖f‖₂): one
estimator per λ_t, each one's task-metric drop at f + α·δ on held-back photos, a scale κ
per candidate that makes α = 1 just noticeable, and the candidate with the largest
just-noticeable perturbation is saved (``ctc.training.featjnd_calibration``). The shipped
estimators were made this way (encoder/featjnd/weights/README.md).

Detection / instance segmentation (``--task det|ins``): the torchvision R50-FPN
split (``ctc.tasks.rcnn_fpn``) with user-given weights; one G_θ is shared by the
five FPN levels (C = 256); D_det / D_ins come from ``ctc.training.losses``;
λ_t = 200, lr 2e-5. Features are too large to cache, so each step runs the
frozen front on one image (batch 1, no augmentation).

Output: ``save_estimator`` writes ``<out>/featjnd_<model>_<sha256[:12]>.safetensors``
with the training settings, the calibration and the final loss in the metadata.

    python -m ctc.training.featjnd --task cls --split blocks --reward relative --lambdas 100,200,400,1000 --epochs 20
    python -m ctc.training.featjnd --task det --model yolov5n \
        --weights ../shared/data/weights/yolov5n_coco.safetensors \
        --steps 600 --batch 8 --reward relative --lambdas 64,256,1024

The noise-tolerance estimators (encoder/featjnd/weights/README.md has the shipped commands):

    python -m ctc.training.featjnd --task cls --split blocks --perturbation noise --lr 1e-3 \
        --lambdas 10,50,250,1250 --epochs 20
"""

import argparse
import json
import math
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ctc.training.data import CROP_RATIO, CROP_SCALE, augmented_crops, image_files
from ctc.training.losses import classification_distortion, featjnd_loss, noise_tolerance_loss, unit_uniform_noise
from encoder.featjnd.estimator import DELTA_LIMIT, LOG_AMPLITUDE_LIMIT, FeatJNDEstimator, save_estimator

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "train-images"
DEFAULT_OUT = REPO / "encoder" / "featjnd" / "weights"
# Detection estimators stay out of the shipped folder: the encoder's default is
# the (single) file there, picked by the glob featjnd_*.safetensors.
DEFAULT_DETECTION_OUT = REPO / "out" / "featjnd"

# task -> (λ_t, learning rate): the paper's defaults
TASK_DEFAULTS = {"cls": (50.0, 1e-4), "det": (200.0, 2e-5), "ins": (200.0, 2e-5)}


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# -- classification data: augmented crops (ctc/training/data.py) -> cached features ---------------

def build_feature_cache(net, paths, crops_per_image, seed, batch=16):
    """Features (float32, N·K×C×h×w) of K augmented crops of every image, in image-then-crop order."""
    features, pending = [], []

    def flush():
        with torch.no_grad():
            features.append(net.front(torch.stack(pending)))
        pending.clear()

    for index, path in enumerate(tqdm(paths, desc="features", unit="image", file=sys.stderr)):
        pending.extend(augmented_crops(path, seed, index, crops_per_image, net.input_size))
        if len(pending) >= batch:
            flush()
    if pending:
        flush()
    return torch.cat(features)


def cached_features(net, paths, args):
    """The feature cache, read from args.cache when it holds the same settings, else built (and saved there)."""
    key = {"model": net.name, **({"split": net.split} if getattr(net, "split", "backbone") != "backbone" else {}),
           "files": [str(p) for p in paths], "crops": args.crops, "seed": args.seed,
           "scale": list(CROP_SCALE), "ratio": list(CROP_RATIO)}
    if args.cache and os.path.isfile(args.cache):
        stored = torch.load(args.cache, map_location="cpu", weights_only=True)
        if stored.get("key") == repr(key):
            print(f"features: {len(stored['features'])} from cache {args.cache}")
            return stored["features"]
        print(f"features: cache {args.cache} was built with other settings; rebuilding")
    features = build_feature_cache(net, paths, args.crops, args.seed)
    if args.cache:
        os.makedirs(os.path.dirname(os.path.abspath(args.cache)), exist_ok=True)
        torch.save({"key": repr(key), "features": features}, args.cache)
    return features


# -- the training loop -----------------------------------------------------------------------------

def optimise(estimator, epoch_items, step_outputs, steps, lr, lambda_t, clip=1.0, log=print):
    """Adam on G_θ, gradients clipped to `clip`, for `steps` steps.

    epoch_items() gives the next epoch's items in order; step_outputs(item) -> (D_t, δ, f), δ being
    a batch tensor of deltas, a {level: delta} dict of one image's or a list of batched levels,
    and f the features when the reward is ‖δ‖/‖f‖ (None: the paper's ‖δ‖). A noise estimator
    (output "noise") is trained with noise_tolerance_loss instead, and its history's delta_norm is
    the mean of log δ. Returns the per-epoch history [{epoch, steps, loss, distortion, delta_norm,
    saturated}, ...].
    """
    noise = estimator.output == "noise"
    optimiser = torch.optim.Adam(estimator.parameters(), lr=lr)
    estimator.train()
    history, done, epoch = [], 0, 0
    bar = tqdm(total=steps, desc="train", unit="step", file=sys.stderr)
    while done < steps:
        epoch += 1
        sums, count = np.zeros(4), 0
        for item in epoch_items():
            if done >= steps:
                break
            d, delta, features = step_outputs(item)
            loss = noise_tolerance_loss(d, delta, lambda_t) if noise else featjnd_loss(d, delta, lambda_t, features)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(estimator.parameters(), clip)
            optimiser.step()
            norm, saturated = _log_amplitude_statistics(delta) if noise else _delta_statistics(delta)
            sums += (loss.item(), d.item(), norm, saturated)
            count += 1
            done += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.1f}", D=f"{d.item():.4f}", delta=f"{norm:.0f}")
        mean = sums / count
        history.append({"epoch": epoch, "steps": done, "loss": mean[0], "distortion": mean[1],
                        "delta_norm": mean[2], "saturated": mean[3]})
        log(f"epoch {epoch:3d}  steps {done:6d}  loss {mean[0]:10.3f}  D {mean[1]:.5f}  "
            f"{'mean log delta' if noise else '|delta|_2'} {mean[2]:8.2f}  saturated {mean[3]:.3f}")
    bar.close()
    estimator.eval()
    return history


def _delta_statistics(delta):
    """(mean ‖δ‖₂ per image, share of δ values at the clamp) of a batch tensor, one image's level dict
    or a list of batched levels."""
    with torch.no_grad():
        if isinstance(delta, dict):
            flat = torch.cat([level.flatten() for level in delta.values()])
            return float(flat.norm()), float((flat.abs() >= DELTA_LIMIT).float().mean())
        if isinstance(delta, list):
            per_sample = torch.cat([level.flatten(1) for level in delta], dim=1)
            return (float(per_sample.norm(dim=1).mean()), float((per_sample.abs() >= DELTA_LIMIT).float().mean()))
        return (float(delta.flatten(1).norm(dim=1).mean()), float((delta.abs() >= DELTA_LIMIT).float().mean()))


def _log_amplitude_statistics(delta):
    """(mean log δ, share of values at the amplitude limits) of a noise estimator's batch tensor or
    list of batched levels."""
    with torch.no_grad():
        levels = delta if isinstance(delta, list) else [delta]
        logs = torch.cat([torch.log(level).flatten() for level in levels])
        return float(logs.mean()), float((logs.abs() >= LOG_AMPLITUDE_LIMIT - 1e-4).float().mean())


def perturb(features, delta, output, generator):
    """f + δ for a direction estimator; f + δ ⊙ n, n fresh unit-variance uniform noise drawn from
    `generator`, for a noise estimator."""
    if output == "noise":
        return features + delta * unit_uniform_noise(delta, generator)
    return features + delta


def train_on_features(estimator, features, distortion, steps, batch, lr, lambda_t, seed, clip=1.0, log=print,
                      relative=False):
    """Train estimator on cached features; distortion(f, δ) -> batch-mean D_t.

    Batches follow one seeded permutation per epoch. relative: reward ‖δ‖/‖f‖ instead of ‖δ‖.
    Returns the per-epoch history (see optimise).
    """
    order = torch.Generator().manual_seed(seed)
    per_epoch = math.ceil(len(features) / batch)

    def batches():
        permutation = torch.randperm(len(features), generator=order)
        return (features[permutation[start:start + batch]] for start in range(0, per_epoch * batch, batch))

    def outputs(f):
        delta = estimator(f)
        return distortion(f, delta), delta, f if relative else None

    return optimise(estimator, batches, outputs, steps, lr, lambda_t, clip, log)


def run_classification(args, net=None):
    """Train G_θ for an EfficientNet-Lite classifier (net: an already built one); returns (weight path, history).

    With --lambdas, every fifth photo is held back for the calibration (ctc/training/featjnd_calibration.py)
    and one estimator per λ_t is trained; the calibrated one is saved.
    """
    from ctc.training.featjnd_calibration import CLASSIFICATION_HOLDOUT_STRIDE, ClassificationCalibration, split_every
    from ctc.tasks.efficientnet_lite import EfficientNetLiteSplit

    seed_everything(args.seed)
    net = net if net is not None else EfficientNetLiteSplit(args.model, split=args.split)
    net.requires_grad_(False)          # frozen task network, eval mode (set by the class)
    paths = image_files(args.data)
    if not paths:
        raise FileNotFoundError(f"no .jpg/.jpeg/.png images below {args.data}")
    paths, held = split_every(paths, CLASSIFICATION_HOLDOUT_STRIDE) if args.lambdas else (paths, [])
    features = cached_features(net, paths, args)
    steps_per_epoch = math.ceil(len(features) / args.batch)
    steps = args.steps if args.steps else args.epochs * steps_per_epoch
    print(f"data: {len(paths)} images in {args.data}, {args.crops} crops each -> {len(features)} features "
          f"{tuple(features.shape[1:])}; {steps} steps of batch {args.batch} "
          f"({steps / steps_per_epoch:.1f} epochs)" + (f"; {len(held)} photos held back to calibrate" if held else ""))

    temperature = args.temperature
    noise = torch.Generator().manual_seed(args.seed)

    def distortion(f, delta):
        with torch.no_grad():
            clean = net.back(f)
        return classification_distortion(clean, net.back(perturb(f, delta, args.perturbation, noise)),
                                         temperature=temperature)

    def train_one(lambda_t):
        torch.manual_seed(args.seed)       # the estimator's initial weights
        noise.manual_seed(args.seed)
        estimator = FeatJNDEstimator(features.shape[1], width=args.width, num_blocks=args.blocks,
                                     output=args.perturbation)
        history = train_on_features(estimator, features, distortion, steps, args.batch, args.lr, lambda_t,
                                    args.seed, relative=args.reward == "relative")
        return estimator, history

    name = (net.name if net.split == "backbone" else f"{net.name}-{net.split}") + _name_suffix(args)
    metadata = {
        "task": "cls", "model": net.name, "split": net.split, "steps": steps,
        "epochs": f"{steps / steps_per_epoch:.2f}", "batch": args.batch, "seed": args.seed, "lr": args.lr,
        "temperature": temperature, "grad_clip": 1.0, "reward": args.reward,
        "data": f"{len(paths)} images from {Path(args.data).name}/, {args.crops} random resized crops each "
                f"({net.input_size}px, scale {CROP_SCALE}, ratio 3/4..4/3, h-flip p=0.5), features cached once",
        **_kind_metadata(args),
    }   # no timings: the same seed gives the same weights and the same metadata
    if not args.lambdas:
        estimator, history = train_one(args.lambda_t)
        return _save(estimator, history, args, f"featjnd_{name}", dict(metadata, lambda_t=args.lambda_t)), history
    calibration = ClassificationCalibration(net, held, args.seed, noise=args.perturbation == "noise")
    print(f"calibration: {len(held)} held-back photos × {len(calibration.features) // len(held)} crops "
          f"= {len(calibration.features)} features; metric: top-1 agreement with the clean prediction")
    return calibrate(args, train_one, calibration, calibration.features, f"featjnd_{name}", metadata,
                     "top-1 agreement (%)")


def _kind_metadata(args):
    """A noise estimator's metadata entry (the paper's estimators' metadata stays as it was, so
    their committed commands still give the same files)."""
    return {"perturbation": "noise: f + delta * n, n i.i.d. uniform of unit variance; reward mean log delta"} \
        if args.perturbation == "noise" else {}


def _name_suffix(args):
    """The estimator file name's mark of its kind: noise estimators are `<network>-noise`, so both
    kinds can be shipped side by side."""
    return "-noise" if args.perturbation == "noise" else ""


def calibrate(args, train_one, calibration, norm_features, prefix, metadata, metric):
    """Train one estimator per λ_t of --lambdas, measure each one's drop curve on the calibration
    set, save the chosen one (ctc.training.featjnd_calibration.choose); returns (path, its history)."""
    from ctc.training.featjnd_calibration import (SIZE_NAMES, choose, curve_table, drops, just_noticeable_scale,
                                                  just_noticeable_size, perturbation_size)

    def curve_text(curve):
        return ", ".join(f"α {a:g}: {v:.2f} ({-100 * drops(curve)[a]:+.1f} %)" for a, v in curve.items())

    candidates, trained = {}, {}
    for lambda_t in args.lambdas:
        estimator, history = train_one(lambda_t)
        curve = calibration.curve(estimator)
        scale = just_noticeable_scale(calibration, estimator, curve)
        candidates[lambda_t] = (curve, perturbation_size(estimator, norm_features), scale)
        trained[lambda_t] = (estimator, history)
        print(f"λ_t {lambda_t:g}: {SIZE_NAMES[args.perturbation][0]} {candidates[lambda_t][1]:.3f}, "
              f"κ {scale:.3f}; {curve_text(curve)}")
    chosen = choose(candidates, args.perturbation)
    if chosen is None:
        raise SystemExit("train_featjnd: every candidate's smallest tested perturbation is noticeable")
    curve, size, scale = candidates[chosen]
    estimator, history = trained[chosen]
    estimator.set_scale(scale)
    shipped = calibration.curve(estimator)
    table = curve_table(candidates, chosen, args.perturbation)
    perturbed_by = "f + α·δ ⊙ n (n fixed unit-variance uniform noise)" if args.perturbation == "noise" else "f + α·δ"
    report = (f"{metric} at {perturbed_by} on the calibration set (δ before the scale κ; in brackets the relative "
              f"change from α = 0):\n\n{table}\n\nShipped: λ_t = {chosen:g}, δ scaled by κ = {scale:.3f}; "
              f"its own curve: {curve_text(shipped)}\n")
    print("\n" + report)
    if args.calibration_report:
        from common.featio import write_text
        write_text(args.calibration_report, report)
    metadata = dict(metadata, lambda_t=chosen, calibration_lambdas=",".join(f"{v:g}" for v in args.lambdas),
                    calibration_scale=f"{scale:.4f}",
                    calibration_curve=json.dumps({f"{a:g}": round(v, 3) for a, v in shipped.items()}),
                    **({"mean_log_delta": f"{just_noticeable_size(size, scale, 'noise'):.4f}"}
                       if args.perturbation == "noise" else {"relative_delta_norm": f"{scale * size:.4f}"}))
    return _save(estimator, history, args, prefix, metadata), history


def _save(estimator, history, args, prefix, metadata):
    final = history[-1]
    metadata = dict(metadata, final_loss=f"{final['loss']:.4f}", final_distortion=f"{final['distortion']:.6f}",
                    final_delta_norm=f"{final['delta_norm']:.3f}", final_saturated=f"{final['saturated']:.4f}")
    os.makedirs(args.out, exist_ok=True)
    path = save_estimator(estimator, args.out, prefix, metadata)
    print(f"saved {path} ({os.path.getsize(path) / 1e6:.1f} MB)")
    return path


# -- detection / instance segmentation -------------------------------------------------------------

def coco_image_files(images, annotations):
    """The images of a COCO folder, restricted to those the annotation file lists (when given)."""
    paths = image_files(images)
    if annotations:
        import json
        with open(annotations) as fh:
            listed = {entry["file_name"] for entry in json.load(fh)["images"]}
        paths = [p for p in paths if p.name in listed]
    return paths


def run_detection(args):
    """Train one G_θ shared by the FPN levels of a torchvision R50-FPN; returns (weight path, history).

    Per step: one image (3×H×W in 0..1; the network's transform resizes it), the
    frozen front gives levels p2..p6, δ = G_θ(f) per level, proposals come from
    the clean feature and stay fixed, D = detection_distortion (det) or
    instance_distortion with the mask head on the first --mask-rois proposals
    (ins), and L = λ_t·D − ‖δ‖₂ over all levels together.
    """
    from ctc.coco import load_image
    from ctc.training.losses import detection_distortion, instance_distortion
    from ctc.tasks.rcnn_fpn import RcnnFpnSplit

    if not args.weights:
        raise SystemExit("train_featjnd: --task det|ins needs --weights (a torchvision R50-FPN state_dict)")
    seed_everything(args.seed)
    kind = "mask" if args.task == "ins" else "faster"
    options = {"min_size": args.min_size} if args.min_size else {}
    net = RcnnFpnSplit(kind, args.weights, **options)     # frozen, always in eval mode
    paths = coco_image_files(args.coco_images, args.coco_annotations)
    if not paths:
        raise FileNotFoundError(f"no images in {args.coco_images}")
    steps = args.steps if args.steps else args.epochs * len(paths)
    print(f"data: {len(paths)} images in {args.coco_images}; {steps} steps of one image "
          f"({steps / len(paths):.1f} epochs)")

    torch.manual_seed(args.seed)
    estimator = FeatJNDEstimator(256, width=args.width, num_blocks=args.blocks)
    order = torch.Generator().manual_seed(args.seed)

    def outputs(index):
        with torch.no_grad():
            clean, image_sizes, _ = net.front([load_image(paths[index])])
            proposals = net.proposals(clean, image_sizes)
        deltas = {name: estimator(f) for name, f in clean.items()}
        perturbed = {name: clean[name] + deltas[name] for name in clean}
        if args.task == "ins":
            d = instance_distortion(net, clean, perturbed, image_sizes, proposals,
                                    mask_proposals=[boxes[:args.mask_rois] for boxes in proposals])
        else:
            d = detection_distortion(net, clean, perturbed, image_sizes, proposals)
        return d, deltas, None

    history = optimise(estimator, lambda: torch.randperm(len(paths), generator=order).tolist(), outputs, steps,
                       args.lr, args.lambda_t)
    model = f"{kind}-rcnn-r50-fpn"
    final = history[-1]
    metadata = {"task": args.task, "model": model, "steps": steps, "seed": args.seed, "lambda_t": args.lambda_t,
                "lr": args.lr, "grad_clip": 1.0, "task_weights": os.path.basename(args.weights),
                "data": f"{len(paths)} images from {Path(args.coco_images).name}/, one image per step, "
                        f"no augmentation" + (f", min_size {args.min_size}" if args.min_size else ""),
                "final_loss": f"{final['loss']:.4f}", "final_distortion": f"{final['distortion']:.6f}",
                "final_delta_norm": f"{final['delta_norm']:.3f}", "final_saturated": f"{final['saturated']:.4f}"}
    os.makedirs(args.out, exist_ok=True)
    path = save_estimator(estimator, args.out, f"featjnd_{model}", metadata)
    print(f"saved {path} ({os.path.getsize(path) / 1e6:.1f} MB)")
    return path, history


# -- YOLOv5n (one-stage detection) ------------------------------------------------------------------

def detection_pool(data):
    """The training photos: the detection training pool without coco-train, whose 80 annotated
    photos calibrate (ctc.training.featjnd_calibration.DetectionCalibration)."""
    from ctc.training.data import training_pool

    coco_train = Path(data) / "coco-train"
    return [p for p in training_pool(Path(data)) if coco_train not in p.parents]


def run_yolo(args):
    """Train a PyramidJNDEstimator (one network per level P3, P4, P5) against the YOLOv5n head;
    returns (weight path, history).

    The frozen front runs once per augmented photo (ctc.training.fusion's cache: long side 320–640,
    flip, float16); each step draws --batch aligned random crops (P3 side --crop), δ per level,
    D = yolo_detection_distortion of the head's raw outputs, reward ‖δ‖/‖f‖ over the levels.
    """
    from ctc.training.featjnd_calibration import DetectionCalibration
    from ctc.training.losses import yolo_detection_distortion
    from ctc.tasks.yolov5n import Yolov5n
    from ctc.training.data import cached_pyramids, random_crop
    from encoder.featjnd.estimator import PyramidJNDEstimator

    if not args.weights:
        raise SystemExit("train_featjnd: --model yolov5n needs --weights "
                         "(../shared/data/weights/yolov5n_coco.safetensors)")
    seed_everything(args.seed)
    net = Yolov5n(args.weights, split="neck")
    channels = [conv.in_channels for conv in net.model[24].m]      # P3, P4, P5 as the Detect head takes them
    data = Path(args.data).parent if Path(args.data).name == "train-images" else Path(args.data)
    paths = detection_pool(data)
    pyramids = cached_pyramids(args.weights, paths, args.seed, args.augmentations, "featjnd-train")
    per_epoch = max(1, len(pyramids) // args.batch)
    steps = args.steps if args.steps else args.epochs * per_epoch
    print(f"data: {len(paths)} photos × {args.augmentations} augmentations = {len(pyramids)} pyramids; "
          f"{steps} steps of {args.batch} crops (P3 {args.crop}², {8 * args.crop} px)")

    def train_one(lambda_t):
        torch.manual_seed(args.seed)
        estimator = PyramidJNDEstimator(channels, width=args.width, num_blocks=args.blocks, output=args.perturbation)
        rng = random.Random(args.seed)
        noise = torch.Generator().manual_seed(args.seed)

        def batches():
            for _ in range(per_epoch):
                crops = [random_crop(pyramids[rng.randrange(len(pyramids))], rng, args.crop)
                         for _ in range(args.batch)]
                yield [torch.from_numpy(np.stack([c[i] for c in crops]).astype(np.float32)) for i in range(3)]

        def outputs(levels):
            deltas = estimator(levels)
            features = dict(zip(net.names, levels))
            with torch.no_grad():
                clean = net.head_logits(features)
            perturbed = net.head_logits({name: perturb(f, d, args.perturbation, noise)
                                         for (name, f), d in zip(features.items(), deltas)})
            return yolo_detection_distortion(clean, perturbed), deltas, (levels if args.reward == "relative" else None)

        history = optimise(estimator, batches, outputs, steps, args.lr, lambda_t)
        return estimator, history

    metadata = {"task": "det", "model": "yolov5n", "split": "neck", "steps": steps, "batch": args.batch,
                "crop": args.crop, "seed": args.seed, "lr": args.lr, "grad_clip": 1.0, "reward": args.reward,
                "task_weights": os.path.basename(args.weights),
                "data": f"{len(paths)} pool photos (train-images, unannotated coco-mini; coco-train held back), "
                        f"{args.augmentations} augmentations each (long side 320-640, flip), features cached once",
                **_kind_metadata(args)}
    prefix = "featjnd_yolov5n-neck" + _name_suffix(args)
    if not args.lambdas:
        estimator, history = train_one(args.lambda_t)
        return _save(estimator, history, args, prefix, dict(metadata, lambda_t=args.lambda_t)), history
    calibration = DetectionCalibration(net, data, noise=args.perturbation == "noise")
    print(f"calibration: {len(calibration.image_ids)} annotated coco-train photos; metric: bbox AP50")
    return calibrate(args, train_one, calibration, calibration.features, prefix, metadata,
                     "bbox AP50 (%)")


# -- command line ----------------------------------------------------------------------------------

def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m ctc.training.featjnd", description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=sorted(TASK_DEFAULTS), default="cls",
                        help="task head the estimator is trained against")
    parser.add_argument("--model", default="", help="task network: efficientnet-lite0/1/2 (cls; default lite0), "
                        "yolov5n or the R50-FPN (det; default R50-FPN, which --task ins always uses)")
    parser.add_argument("--split", default="backbone", choices=("backbone", "blocks"),
                        help="EfficientNet-Lite split point (cls): backbone (1280×7×7) or blocks (320×7×7)")
    parser.add_argument("--perturbation", default="direction", choices=("direction", "noise"),
                        help="what δ must stay unnoticeable as: f + δ (the paper's) or f + δ ⊙ n with i.i.d. "
                             "unit-variance uniform noise n (the step allocation's estimator; reward mean log δ)")
    parser.add_argument("--reward", default="absolute", choices=("absolute", "relative"),
                        help="the ‖δ‖ term of --perturbation direction: absolute ‖δ‖₂ (the paper's) or relative "
                             "‖δ‖₂/‖f‖₂")
    parser.add_argument("--lambdas", default="", help="comma list of λ_t: train one estimator each, calibrate "
                        "(α = 1 just noticeable, ctc/training/featjnd_calibration.py) and save the chosen one")
    parser.add_argument("--calibration-report", default="", help="markdown file for the calibration curve table")
    parser.add_argument("--augmentations", type=int, default=3, help="augmented photos per pool photo (yolov5n)")
    parser.add_argument("--crop", type=int, default=40, help="P3 crop side per training sample (yolov5n; ×8 px)")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="training images (all .jpg/.jpeg/.png below it)")
    parser.add_argument("--crops", type=int, default=12, help="augmented crops per image in the feature cache (cls)")
    parser.add_argument("--cache", default="", help="optional file keeping the feature cache between runs (cls)")
    parser.add_argument("--epochs", type=int, default=30, help="passes over the cached features (when --steps is 0)")
    parser.add_argument("--steps", type=int, default=0, help="optimiser steps (overrides --epochs)")
    parser.add_argument("--batch", type=int, default=32, help="features per step (cls)")
    parser.add_argument("--lr", type=float, default=None, help="Adam learning rate (default: 1e-4 cls, 2e-5 det/ins)")
    parser.add_argument("--lambda-t", type=float, default=None,
                        help="distortion weight λ_t (default: 50 cls, 200 det/ins)")
    parser.add_argument("--temperature", type=float, default=4.0, help="KL temperature T (cls)")
    parser.add_argument("--width", type=int, default=32,
                        help="estimator bottleneck width (32: the shipped Lite0 estimator, 3 MB; 64: 6 MB)")
    parser.add_argument("--blocks", type=int, default=2, help="estimator residual blocks")
    parser.add_argument("--seed", type=int, default=0, help="seeds crops, data order and initial weights")
    parser.add_argument("--out", default="", help="folder for the weight file (default: encoder/featjnd/weights "
                        "for cls, out/featjnd for det/ins)")
    parser.add_argument("--weights", default="", help="task network weights (det/ins: R50-FPN state_dict or "
                        "YOLOv5n safetensors)")
    parser.add_argument("--coco-images", default=str(REPO.parent / "shared" / "data" / "coco-mini" / "val2017"),
                        help="COCO image folder (det/ins)")
    parser.add_argument("--coco-annotations", default="", help="COCO instances JSON restricting the images (det/ins)")
    parser.add_argument("--min-size", type=int, default=0, help="shorter image side for R50-FPN (det/ins; 0: 800)")
    parser.add_argument("--mask-rois", type=int, default=32, help="proposals per image the mask loss uses (ins)")
    args = parser.parse_args(argv)
    lambda_t, lr = TASK_DEFAULTS[args.task]
    args.lambda_t = lambda_t if args.lambda_t is None else args.lambda_t
    args.lr = lr if args.lr is None else args.lr
    if args.model == "yolov5n" and args.task != "det":
        parser.error("--model yolov5n needs --task det")
    if args.perturbation == "noise" and args.task != "cls" and args.model != "yolov5n":
        parser.error("--perturbation noise is built for --task cls and --model yolov5n")
    args.model = args.model or ("efficientnet-lite0" if args.task == "cls" else "rcnn-r50-fpn")
    try:
        args.lambdas = [float(v) for v in args.lambdas.split(",") if v.strip()]
    except ValueError:
        parser.error(f"--lambdas: not a comma list of numbers: {args.lambdas!r}")
    # YOLOv5n estimators are shipped (the encoder's JndWeights names them); R-CNN ones are experiments
    shipped = args.task == "cls" or args.model == "yolov5n"
    args.out = args.out or str(DEFAULT_OUT if shipped else DEFAULT_DETECTION_OUT)
    return args


def main(argv=None):
    args = parse_args(argv)
    start = time.perf_counter()
    run = run_classification if args.task == "cls" else run_yolo if args.model == "yolov5n" else run_detection
    run(args)
    print(f"wall time {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
