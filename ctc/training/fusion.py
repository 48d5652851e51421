"""Train an L-MSFC fusion codec on YOLOv5n P3–P5 (ARCHITECTURE.md §4.3).

    training pool (../shared/data: train-images, coco-train, the 80 unannotated coco-mini
    photos; never the 79 annotated ones) ─► random scale (long side 320–640) + flip ─►
    letterbox ─► frozen YOLOv5n front ─► P3, P4, P5 (cached, float16)
    random aligned crops ─► FusionModel ─► L = bpp + λ(r) · Σ_i w_i · MSE(p_i, p̂_i)

One model covers every rate point: each sample draws a rate index r (latent step
Δ = 2^(r/8)) from [--rate-min, --rate-max] and λ(r) = λ_0 · 2^(−r/4), so the
distortion weight follows Δ² as the step does. bpp is bits per input-image pixel
(of the crop), w_i = 1 / E[p_i²] on the training pool. The last --qat-fraction of
the steps simulate the decoder's integer arithmetic (straight-through).

--ablation trains the no-fusion codec instead: one single-level model per level
(its own FENet, hyperprior and DRNet, E = L − 1 − i + --extra-stages stages, so every latent
has the fusion model's resolution), trained together under the
same loss, widths chosen for about the fusion model's size.

Checkpoints (every --checkpoint-every steps, atomically) make the run resumable:
run the same command again. The result goes through encoder/tools/lmsfc/model_file.py:
content-hash named safetensors in common/tools/lmsfc/models/.

    python -m ctc.training.fusion --weights ../shared/data/weights/yolov5n_coco.safetensors \
        --name yolov5n --steps 6000 --seed 0
"""

import argparse
import math
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ctc.training.data import cached_pyramids, random_crop, split_pool, training_pool
from common.tools.lmsfc.graph import Family, layer_shapes
from encoder.tools.lmsfc.model_file import DEFAULT_MODEL_DIR, save_model
from encoder.tools.lmsfc.network import FusionModel

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data"
YOLO_CHANNELS = (64, 128, 256)


def make_family(args, channels=YOLO_CHANNELS, extra_stages=None):
    return Family(channels=tuple(channels), trunk=args.trunk, latent=args.latent, hyper=args.hyper,
                  extra_stages=args.extra_stages if extra_stages is None else extra_stages)


def build_models(args):
    """{name: FusionModel}: the fusion model, or one single-level model per level (--ablation)."""
    if not args.ablation:
        return {args.name: FusionModel(make_family(args))}
    models = {}
    levels = len(YOLO_CHANNELS)
    for i, channels in enumerate(YOLO_CHANNELS):
        models[f"{args.name}-level{i}"] = FusionModel(make_family(args, (channels,),
                                                                  extra_stages=levels - 1 - i + args.extra_stages))
    return models


def parameter_count(family):
    return sum(math.prod(shape) + shape[0] for shape in layer_shapes(family).values())


def batch_loss(models, crops, rates, lam, level_weights, simulate, image_pixels):
    """(loss, bpp, weighted distortion) of a batch."""
    levels = [torch.from_numpy(np.stack([c[i] for c in crops]).astype(np.float32)) for i in range(3)]
    bits = torch.zeros(len(crops))
    distortion = torch.zeros(len(crops))
    if len(models) == 1:
        (model,) = models.values()
        groups = [(model, list(range(3)))]
    else:
        groups = [(model, [i]) for i, model in enumerate(models.values())]
    for model, members in groups:
        recon, y_bits, z_bits = model([levels[i] for i in members], rates, simulate)
        bits = bits + y_bits + z_bits
        for i, r in zip(members, recon):
            distortion = distortion + level_weights[i] * ((r - levels[i]) ** 2).flatten(1).mean(1)
    bpp = bits / image_pixels
    loss = (bpp + lam * distortion).mean()
    return loss, float(bpp.detach().mean()), float(distortion.detach().mean())


def train(args):
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    pool = training_pool(Path(args.data))
    train_paths, held_paths = split_pool(pool)
    pyramids = cached_pyramids(args.weights, train_paths, args.seed, args.augmentations, "train")
    held = cached_pyramids(args.weights, held_paths, args.seed, 1, "held")
    level_weights = [1.0 / float(np.mean([np.mean(p[i].astype(np.float32) ** 2) for p in pyramids[:200]]))
                     for i in range(3)]
    models = build_models(args)
    parameters = [p for m in models.values() for p in m.parameters()]
    optimiser = torch.optim.Adam(parameters, lr=args.lr)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = out / f"{args.name}{'-ablation' if args.ablation else ''}.ckpt"
    start_step, history = 0, []
    if checkpoint.exists():
        state = torch.load(checkpoint, weights_only=False)
        for name, model in models.items():
            model.load_state_dict(state["models"][name])
        optimiser.load_state_dict(state["optimiser"])
        start_step, history = state["step"], state["history"]
        random.setstate(state["python_rng"])
        torch.set_rng_state(state["torch_rng"])
        print(f"resumed at step {start_step}")
    else:
        random.seed(args.seed)
    print(f"models: {', '.join(f'{n} ({parameter_count(m.family):,} parameters)' for n, m in models.items())}; "
          f"{len(pyramids)} training pyramids, {len(held)} held out; level weights {level_weights}")
    image_pixels = float((8 * args.crop) ** 2)
    qat_start = int(args.steps * (1 - args.qat_fraction))
    bar = tqdm(range(start_step, args.steps), initial=start_step, total=args.steps, desc="train",
               file=sys.stderr, mininterval=10)
    for step in bar:
        lr = args.lr * (0.1 if step >= int(0.85 * args.steps) else 1.0)
        for group in optimiser.param_groups:
            group["lr"] = lr
        crops = [random_crop(pyramids[random.randrange(len(pyramids))], random, args.crop) for _ in range(args.batch)]
        rates = torch.tensor([random.randint(args.rate_min, args.rate_max) for _ in range(args.batch)],
                             dtype=torch.float32)
        lam = args.lmbda * 2.0 ** (-rates / 4)
        loss, bpp, distortion = batch_loss(models, crops, rates, lam, level_weights, step >= qat_start,
                                           image_pixels)
        optimiser.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimiser.step()
        history.append((step, float(loss), bpp, distortion))
        if step % 50 == 0:
            bar.set_postfix(loss=f"{float(loss):.4f}", bpp=f"{bpp:.4f}", D=f"{distortion:.4f}")
        if (step + 1) % args.checkpoint_every == 0 or step + 1 == args.steps:
            state = {"models": {n: m.state_dict() for n, m in models.items()}, "optimiser": optimiser.state_dict(),
                     "step": step + 1, "history": history, "python_rng": random.getstate(),
                     "torch_rng": torch.get_rng_state()}
            temporary = checkpoint.with_suffix(".tmp")
            torch.save(state, temporary)
            os.replace(temporary, checkpoint)
    report = validate(models, held, level_weights, args)
    print(f"held-out (rate index: bpp, distortion): {report}")
    for name, model in models.items():
        command = "python -m ctc.training.fusion " + " ".join(sys.argv[1:])
        path = save_model(model, Path(args.model_dir), name, {"command": command, "seed": args.seed,
                                                             "steps": args.steps, "validation": report})
        print(f"saved {path}: {report}")


def validate(models, held, level_weights, args):
    """{rate index: (bpp, weighted distortion)} on the held-out pyramids (whole images, the
    integer arithmetic simulated), estimated from the models' likelihoods."""
    report = {}
    with torch.no_grad():
        for rate in range(args.rate_min, args.rate_max + 1, 8):
            bpp, distortion = [], []
            for pyramid in held:
                image_pixels = float(64 * pyramid[0].shape[1] * pyramid[0].shape[2])
                _, b, d = batch_loss(models, [pyramid], torch.tensor([float(rate)]), 0.0, level_weights, True,
                                     image_pixels)
                bpp.append(b)
                distortion.append(d)
            report[rate] = (round(float(np.mean(bpp)), 5), round(float(np.mean(distortion)), 5))
    return report


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m ctc.training.fusion", description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default=str(DATA / "weights" / "yolov5n_coco.safetensors"))
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--name", default="yolov5n", help="model name (the file is <name>-<hash>.safetensors)")
    parser.add_argument("--ablation", action="store_true", help="train the no-fusion ablation")
    parser.add_argument("--trunk", type=int, default=48)
    parser.add_argument("--latent", type=int, default=128)
    parser.add_argument("--hyper", type=int, default=48)
    parser.add_argument("--extra-stages", type=int, default=0, help="E: stride-2 stages from the last level to y")
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crop", type=int, default=40, help="P3 crop side (×8 image pixels)")
    parser.add_argument("--augmentations", type=int, default=3)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--lmbda", type=float, default=4.0, help="λ_0: λ(r) = λ_0 · 2^(−r/4)")
    parser.add_argument("--rate-min", type=int, default=-8)
    parser.add_argument("--rate-max", type=int, default=24)
    parser.add_argument("--qat-fraction", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--checkpoint-every", type=int, default=250)
    parser.add_argument("--out", default=str(REPO / "out" / "train_fusion"), help="checkpoint folder")
    parser.add_argument("--model-dir", default=str(DEFAULT_MODEL_DIR))
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    start = time.time()
    train(args)
    print(f"done in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
