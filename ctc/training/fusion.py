"""Train an L-MSFC fusion codec on YOLOv5n P3–P5 (ARCHITECTURE.md §4.3).

    training pool (../shared/data: train-images, coco-train, the 80 unannotated coco-mini
    photos; never the 79 annotated ones) ─► random scale (long side 320–640) + flip ─►
    letterbox ─► frozen YOLOv5n front ─► P3, P4, P5 (cached, float16)
    random aligned crops ─► FusionModel ─► p̂
    L = bpp + λ(r) · (--task-weight · D_yolo(Detect(p̂) ‖ Detect(p)) + --mse-weight · Σ_i w_i · MSE(p_i, p̂_i)
                      + --jnd-weight · Σ_i w_i · mean(a_i · (p_i − p̂_i)² / δ_i^(2s)))

One model covers every rate point. Two schemes:

* gain units (--rates R > 0; the task-aware models): rate index r ∈ [0, R) selects a row of a learned
  gain table (per channel of y, its latent step exponent; model_file.py), r = 0 the finest;
  λ(r) falls geometrically from --lambda-top to --lambda-bottom, so each row learns its own
  trade-off and quality follows rate;
* one shared step (--rates 0, the first shipped models): r ∈ [--rate-min, --rate-max],
  latent step Δ = 2^(r/8), λ(r) = λ_0 · 2^(−r/4).

D_yolo is FeatJND's detection distortion on YOLOv5n's Detect head (ctc/training/losses.py:
objectness and class KL weighted by the clean objectness, box loss on confident anchors;
the head is two 1×1 convolutions away, so the task loss costs little); --task-weight 0
gives the paper's reconstruction loss alone. bpp is bits per input-image pixel (of the
crop), w_i = 1 / E[p_i²] on the training pool. The JND-weighted error (--jnd-weight) divides each
element's error by its noise tolerance δ = G(p), the noise-tolerance FeatJND estimator
(--jnd-estimator, fixed; ctc/training/featjnd.py --perturbation noise) run on the clean crop:
(p − p̂)/δ is the error in units of just-noticeable noise; s = --jnd-strength follows δ part way
(1: fully; 0.5, the default, as the encoder's separable allocation does with JndMapStrength: at
s = 1 the held-out AP50 agreement was 2 % after 1,000 steps, the tolerant elements' errors left
unchecked). a_i = 1 / E[δ^−2s] over the training pool's level i makes the weights average 1, as
plain MSE's do, so the same λ ladder applies; they are clipped to [1e-3, 1e3]. Each level is normalised per channel with
training-pool statistics (part of the model). The learning rate warms up, then follows a
cosine to --lr-final; the crops grow from --crop to --crop-late for the last
--late-fraction of the steps (batch --batch-late); the last --qat-fraction simulate the
decoder's integer arithmetic (straight-through). --init continues from a model file (the
first shipped models were trained with MSE alone): the warm start computes what the file
computes (but at the zero padding of FENet's input convolutions), the normalisation and the
gain table are added around it; --widen-from grows a fusion model's trunk, latent and
hyper-latent the same way. Every --validate-every steps the
held-out pool photos give the learning curve: bpp, distortion and AP50 of the detections
on p̂ against those on p (the uncompressed detections, score ≥ 0.25, as ground truth).

--ablation trains the no-fusion codec instead: one single-level model per level
(its own FENet, hyperprior and DRNet, E = L − 1 − i + --extra-stages stages, so every latent
has the fusion model's resolution), trained together under the
same loss, widths chosen for about the fusion model's size.

--extra-stages -1 puts y one level up (stride 16 on YOLOv5n, P5 joining from below; signalled
since stream version 2). --checkerboard adds a two-pass checkerboard context model (the anchors'
symbols refine the other half's mean and scale, He et al. 2021): an entropy-model ablation of
docs/results/lmsfc.md, measured on the training side (rate from the likelihoods, the held-out
learning curve) and not exported, since the bitstream does not signal it.

Checkpoints (every --checkpoint-every steps, atomically) make the run resumable:
run the same command again. The same command trains on a GPU (--device cuda) and on several
GPUs or nodes under torchrun (DistributedDataParallel: every rank draws its own batch, the
gradients are averaged, rank 0 validates, checkpoints and saves):

    torchrun --nproc_per_node 8 -m ctc.training.fusion --device cuda --images /data/coco/train2017 ...

The result goes through encoder/tools/lmsfc/model_file.py: content-hash named safetensors in
common/tools/lmsfc/models/, whose README lists the commands of the shipped models, e.g.

    python -m ctc.training.fusion --name yolov5n-task --init yolov5n --rates 11 --task-weight 1 \
        --mse-weight 0.1 --steps 7000 --lr 2e-4 ... --seed 0
"""

import argparse
import hashlib
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

from common.tools.lmsfc.graph import Family, layer_shapes
from ctc.training.data import (HELD_OUT, CachedPyramids, StreamingPyramids, cached_pyramids, image_files, split_pool,
                               training_pool)
from encoder.tools.lmsfc.model_file import DEFAULT_MODEL_DIR, initialise_from, save_model
from encoder.tools.lmsfc.network import FusionModel, widened_from

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data"
YOLO_CHANNELS = (64, 128, 256)


def make_family(args, channels=YOLO_CHANNELS, extra_stages=None):
    return Family(channels=tuple(channels), trunk=args.trunk, latent=args.latent, hyper=args.hyper,
                  extra_stages=args.extra_stages if extra_stages is None else extra_stages)


def gain_init(args):
    """Initial latent exponent of each rate index: --gain-top … --gain-bottom, evenly spaced."""
    if not args.rates:
        return None
    return [args.gain_top + (args.gain_bottom - args.gain_top) * r / max(1, args.rates - 1)
            for r in range(args.rates)]


def build_models(args):
    """{name: FusionModel}: the fusion model, or one single-level model per level (--ablation)."""
    if not args.ablation:
        return {args.name: FusionModel(make_family(args), gain_init(args), args.checkerboard)}
    models = {}
    levels = len(YOLO_CHANNELS)
    for i, channels in enumerate(YOLO_CHANNELS):
        family = make_family(args, (channels,), extra_stages=levels - 1 - i + args.extra_stages)
        models[f"{args.name}-level{i}"] = FusionModel(family, gain_init(args))
    return models


def initial_files(args, models):
    """{model name: file} of --init: one model file, or (ablation) a comma-separated file per level."""
    from encoder.tools.lmsfc.analysis import resolve_model

    names = [n.strip() for n in args.init.split(",") if n.strip()]
    if len(names) != len(models):
        raise SystemExit(f"--init names {len(names)} model(s); this run trains {len(models)}")
    return {name: resolve_model(file).path for name, file in zip(models, names)}


def widened_model(args, model):
    """--widen-from: the named model file grown to this run's trunk, latent and hyper channels
    (widened_from: the same reconstruction to start with), with `model`'s normalisation."""
    from encoder.tools.lmsfc.analysis import resolve_model

    if args.ablation or args.init:
        raise SystemExit("--widen-from grows one fusion model; it takes neither --ablation nor --init")
    source = resolve_model(args.widen_from)
    narrow = FusionModel(source.family, gain_init(args))
    narrow.set_normalisation(*zip(*(model.normalisation(i) for i in range(model.family.num_levels))))
    initialise_from(narrow, source.path)
    return widened_from(narrow, model.family)


def mse_level_weights(pyramids):
    """w_i = 1 / E[p_i²] per level over (a sample of) the pyramids: the weighted MSE's weights."""
    return [1.0 / float(np.mean([np.mean(p[i].astype(np.float32) ** 2) for p in pyramids[:200]]))
            for i in range(3)]


def level_statistics(pyramids):
    """Per level, the per-channel mean and standard deviation over (a sample of) the pyramids."""
    stats = []
    for i in range(3):
        values = np.concatenate([p[i].astype(np.float32).reshape(p[i].shape[0], -1) for p in pyramids[:200]], axis=1)
        stats.append((values.mean(axis=1), np.maximum(values.std(axis=1), 1e-3)))
    return stats


def lambdas(args, rates):
    """λ of each sample's rate index."""
    if not args.rates:
        return args.lmbda * 2.0 ** (-rates / 4)
    fraction = rates / max(1, args.rates - 1)
    return args.lambda_top * (args.lambda_bottom / args.lambda_top) ** fraction


def learning_rate(args, step):
    """Linear warm-up over --warmup steps, then a cosine from --lr down to --lr-final."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    progress = (step - args.warmup) / max(1, args.steps - args.warmup)
    return args.lr_final + 0.5 * (args.lr - args.lr_final) * (1 + math.cos(math.pi * progress))


def crop_schedule(args, step):
    """(P3 crop side, batch) of a step: small crops first, larger ones for the last --late-fraction."""
    if step >= int(args.steps * (1 - args.late_fraction)):
        return args.crop_late, args.batch_late
    return args.crop, args.batch


def parameter_count(family):
    return sum(math.prod(shape) + shape[0] for shape in layer_shapes(family).values())


JND_WEIGHT_RANGE = 1e3      # the JND weights a/δ^2s are clipped to [1/range, range]


def load_jnd_estimator(name):
    """(the noise-tolerance estimator --jnd-estimator names, its file name)."""
    from encoder.featjnd.allocation import weights_path
    from encoder.featjnd.estimator import load_estimator

    path = weights_path(name)
    estimator = load_estimator(path)
    if estimator.output != "noise":
        raise SystemExit(f"--jnd-estimator {name}: {path} is not a noise-tolerance estimator")
    return estimator, os.path.basename(path)


class JndWeights:
    """The per-element weights a_i/δ^2s of the JND-weighted error, from a fixed noise-tolerance
    estimator; a_i = 1 / E[δ^−2s] over a sample of the training pyramids (in log form: the
    weights span many octaves)."""

    def __init__(self, estimator, sample, device, strength=1.0):
        self.estimator = estimator.to(device)
        self.device = device
        self.exponent = -2.0 * strength
        logs = [[], [], []]
        for pyramid in sample:
            for i, delta in enumerate(self.deltas([torch.from_numpy(level.astype(np.float32))[None]
                                                   for level in pyramid])):
                logs[i].append(torch.logsumexp(self.exponent * torch.log(delta).flatten().double(), 0)
                               - math.log(delta.numel()))
        # log a_i = −log E[δ^−2s] over the sample (each pyramid's mean, then their mean)
        self.log_scales = [-float(torch.logsumexp(torch.stack(values), 0) - math.log(len(values)))
                           for values in logs]

    def deltas(self, levels):
        with torch.no_grad():
            return self.estimator([level.to(self.device) for level in levels])

    def __call__(self, levels):
        """[a_i / δ^2s, one N×C×H×W tensor per level] of a batch of clean levels."""
        limit = math.log(JND_WEIGHT_RANGE)
        return [torch.exp(torch.clamp(scale + self.exponent * torch.log(delta), -limit, limit))
                for scale, delta in zip(self.log_scales, self.deltas(levels))]


def per_sample_task_distortion(head, levels, recon):
    """D_yolo of each sample (N,) between Detect(p̂) and Detect(p)."""
    from ctc.training.losses import yolo_detection_distortion

    with torch.no_grad():
        clean = head(levels)
    coded = head(recon)
    return torch.stack([yolo_detection_distortion([c[n:n + 1] for c in clean], [c[n:n + 1] for c in coded])
                        for n in range(levels[0].shape[0])])


def batch_loss(models, crops, rates, lam, level_weights, simulate, image_pixels, head=None, weights=(0.0, 1.0, 0.0),
               quantise=True, jnd=None):
    """(loss, bpp, weighted MSE, D_yolo, reconstruction) of a batch; the distortion is
    weights[0] · D_yolo + weights[1] · weighted MSE + weights[2] · JND-weighted MSE (D_yolo only when
    a head is given, the JND term only with `jnd`, a JndWeights)."""
    device = next(next(iter(models.values())).parameters()).device
    levels = [torch.from_numpy(np.stack([c[i] for c in crops]).astype(np.float32)).to(device) for i in range(3)]
    rates, lam = rates.to(device), torch.as_tensor(lam).to(device)
    bits = torch.zeros(len(crops), device=device)
    distortion = torch.zeros(len(crops), device=device)
    recon_levels = [None] * 3
    element_weights = jnd(levels) if jnd is not None and len(weights) > 2 and weights[2] else None
    jnd_distortion = torch.zeros(len(crops), device=device)
    if len(models) == 1:
        (model,) = models.values()
        groups = [(model, list(range(3)))]
    else:
        groups = [(model, [i]) for i, model in enumerate(models.values())]
    for model, members in groups:
        recon, y_bits, z_bits = model([levels[i] for i in members], rates, simulate, quantise)
        bits = bits + y_bits + z_bits
        for i, r in zip(members, recon):
            error = (r - levels[i]) ** 2
            distortion = distortion + level_weights[i] * error.flatten(1).mean(1)
            if element_weights is not None:
                jnd_distortion = jnd_distortion + level_weights[i] * (element_weights[i] * error).flatten(1).mean(1)
            recon_levels[i] = r
    bpp = bits / image_pixels
    task = torch.zeros(len(crops), device=device) if head is None else per_sample_task_distortion(head, levels,
                                                                                                 recon_levels)
    jnd_term = weights[2] * jnd_distortion if element_weights is not None else 0.0
    loss = (bpp + lam * (weights[0] * task + weights[1] * distortion + jnd_term)).mean()
    return (loss, float(bpp.detach().mean()), float(distortion.detach().mean()), float(task.detach().mean()),
            recon_levels)


def distributed_setup(args):
    """(rank, world size, device). Under torchrun (WORLD_SIZE > 1) joins the process group: gloo
    on CPU, NCCL on GPUs, one GPU per local rank."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = args.device
    if world == 1:
        return 0, 1, torch.device(device)
    import torch.distributed as dist

    dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    if device == "cuda":
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        torch.cuda.set_device(device)
    return dist.get_rank(), world, torch.device(device)


def training_sources(args, detector, device):
    """(source of training crops, held-out pyramids): the cached pool of ../shared/data, or
    (--images) any image folder with the front run on the fly, every 24th image held out."""
    if args.images:
        try:
            paths = image_files(args.images)
        except FileNotFoundError as error:
            raise SystemExit(f"ctc.training.fusion: {error}") from None
        train_paths, held_paths = split_pool(paths) if len(paths) >= 2 * HELD_OUT else (paths, paths[:1])
        source = StreamingPyramids(train_paths, detector, device)
        return source, StreamingPyramids(held_paths, detector, device).sample(len(held_paths))
    train_paths, held_paths = split_pool(training_pool(Path(args.data)))
    source = CachedPyramids(cached_pyramids(args.weights, train_paths, args.seed, args.augmentations, "train"))
    return source, cached_pyramids(args.weights, held_paths, args.seed, 1, "held")


def parameter_digest(models):
    """SHA-256 (16 hex digits) of every model's parameters and buffers, to compare ranks."""
    digest = hashlib.sha256()
    for name, model in models.items():
        for key, value in sorted(model.state_dict().items()):
            digest.update(f"{name}.{key}".encode())
            digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def train(args):
    from torch.nn.parallel import DistributedDataParallel

    from ctc.tasks.yolov5n import Yolov5n

    rank, world, device = distributed_setup(args)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    detector = Yolov5n(args.weights, split="neck").eval().to(device)
    for parameter in detector.parameters():
        parameter.requires_grad_(False)
    source, held = training_sources(args, detector, device)
    statistics_sample = source.sample(200)
    level_weights = mse_level_weights(statistics_sample)
    statistics = level_statistics(statistics_sample)
    head = (lambda levels: detector.head_logits(dict(zip(detector.names, levels))))
    loss_weights = (args.task_weight, args.mse_weight, args.jnd_weight)
    jnd, jnd_file = None, ""
    if args.jnd_weight:
        estimator, jnd_file = load_jnd_estimator(args.jnd_estimator)
        jnd = JndWeights(estimator, statistics_sample, device, args.jnd_strength)
    models = build_models(args)
    for name, model in models.items():
        levels = [int(name.rsplit("level", 1)[1])] if args.ablation else range(3)
        model.set_normalisation([statistics[i][0] for i in levels], [statistics[i][1] for i in levels])
    if args.init:
        for name, file in initial_files(args, models).items():
            initialise_from(models[name], file)
    if args.widen_from:
        models = {args.name: widened_model(args, models[args.name])}
    for model in models.values():
        model.to(device)
    gains = [m.gain_exponents for m in models.values() if m.gain_exponents is not None]
    network = [p for m in models.values() for p in m.parameters() if all(p is not g for g in gains)]
    optimiser = torch.optim.Adam([{"params": network, "lr": args.lr, "scale": 1.0},
                                  {"params": gains, "lr": args.gain_lr, "scale": args.gain_lr / args.lr}])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = out / f"{args.name}{'-ablation' if args.ablation else ''}.ckpt"
    rank_state = checkpoint.with_name(f"{checkpoint.name}.rank{rank}")      # each rank's random streams
    start_step, history, curve = 0, [], []
    random.seed(args.seed + 1_000_003 * rank)        # rank 0 draws what a single process draws
    torch.manual_seed(args.seed + rank)              # the noise, whether or not the cache was built
    if checkpoint.exists():
        state = torch.load(checkpoint, weights_only=False, map_location=device)
        for name, model in models.items():
            model.load_state_dict(state["models"][name])
        optimiser.load_state_dict(state["optimiser"])
        start_step, history, curve = state["step"], state["history"], state.get("curve", [])
        streams = torch.load(rank_state, weights_only=False) if rank and rank_state.exists() else state
        random.setstate(streams["python_rng"])
        torch.set_rng_state(streams["torch_rng"])
        print(f"resumed at step {start_step}")
    trained = {n: DistributedDataParallel(m) if world > 1 else m for n, m in models.items()}
    if rank == 0:
        print(f"models: {', '.join(f'{n} ({parameter_count(m.family):,} parameters)' for n, m in models.items())}; "
              f"{type(source).__name__}, {len(held)} held out; {world} process(es) on {device}; "
              f"level weights {level_weights}" + (f"; JND weights from {jnd_file}, log a {jnd.log_scales}"
                                                   if jnd else ""))
    qat_start = int(args.steps * (1 - args.qat_fraction))
    stop = min(args.steps, args.stop_at or args.steps)
    bar = tqdm(range(start_step, stop), initial=start_step, total=args.steps, desc="train",
               file=sys.stderr, mininterval=10, disable=rank > 0)
    for step in bar:
        for group in optimiser.param_groups:
            group["lr"] = learning_rate(args, step) * group["scale"]
        crop, batch = crop_schedule(args, step)
        crops = [source.draw(random, crop) for _ in range(batch)]
        rate_low, rate_high = (0, args.rates - 1) if args.rates else (args.rate_min, args.rate_max)
        rates = torch.tensor([random.randint(rate_low, rate_high) for _ in range(batch)], dtype=torch.float32)
        loss, bpp, distortion, task, _ = batch_loss(trained, crops, rates, lambdas(args, rates), level_weights,
                                                    step >= qat_start, float((8 * crop) ** 2),
                                                    head if args.task_weight else None, loss_weights, jnd=jnd)
        optimiser.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(network, 1.0)
        optimiser.step()
        history.append((step, float(loss.detach()), bpp, distortion, task))
        if step % 50 == 0:
            bar.set_postfix(loss=f"{float(loss.detach()):.4f}", bpp=f"{bpp:.4f}", D=f"{distortion:.4f}",
                            T=f"{task:.4f}")
        last = step + 1 == args.steps
        if rank == 0 and args.validate_every and ((step + 1) % args.validate_every == 0 or last):
            point = {"step": step + 1, **validate(models, held, level_weights, args, head, detector)}
            curve.append(point)
            print(f"\nheld-out at step {step + 1}: {json.dumps(point)}", flush=True)
        if (step + 1) % args.checkpoint_every == 0 or step + 1 == stop:
            streams = {"python_rng": random.getstate(), "torch_rng": torch.get_rng_state()}
            if rank == 0:
                state = {"models": {n: m.state_dict() for n, m in models.items()},
                         "optimiser": optimiser.state_dict(), "step": step + 1, "history": history, "curve": curve,
                         **streams}
                atomic_save(state, checkpoint)
            else:
                atomic_save(streams, rank_state)
    if stop < args.steps:
        print(f"stopped at step {stop} of {args.steps}; the same command continues from the checkpoint")
        return
    if world > 1:
        print(f"rank {rank} parameter digest {parameter_digest(models)}", flush=True)
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
        if rank:
            return
    for model in models.values():
        model.cpu()
    report = curve[-1] if curve else validate(models, held, level_weights, args, head, detector.cpu())
    curve_file = out / f"{checkpoint.stem}_curve.json"
    curve_file.write_text(json.dumps(curve, indent=1) + "\n")
    print(f"held-out: {json.dumps(report)}; learning curve in {curve_file}")
    if args.checkerboard:
        print("not exported: the checkerboard context is a training-side ablation (the bitstream does not signal "
              "it); the checkpoint and the learning curve hold the result")
        return
    for name, model in models.items():
        command = "python -m ctc.training.fusion " + " ".join(sys.argv[1:])
        path = save_model(model, Path(args.model_dir), name, {"command": command, "seed": args.seed,
                                                             "steps": args.steps, "validation": report})
        print(f"saved {path}")


def atomic_save(state, path):
    temporary = path.with_name(path.name + ".tmp")
    torch.save(state, temporary)
    os.replace(temporary, path)


def validation_rates(args):
    if args.rates:
        return sorted({0, args.rates // 3, (2 * args.rates) // 3, args.rates - 1})
    return list(range(args.rate_min, args.rate_max + 1, 8))


def detections(detector, levels):
    """K × 6 detections (input pixels) of one pyramid."""
    from ctc.tasks.yolov5n import non_max_suppression

    return non_max_suppression(detector.back(dict(zip(detector.names, levels))))[0]


def agreement_ap50(clean, coded):
    """AP50 (%) of the coded detections against the clean ones with score ≥ 0.25 as ground truth,
    over the images of the two lists (pycocotools)."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    truth = {"images": [{"id": i} for i in range(len(clean))], "categories": [{"id": c} for c in range(80)],
             "annotations": []}
    results = []
    for image, (reference, detected) in enumerate(zip(clean, coded)):
        for x0, y0, x1, y1, score, cls in reference.tolist():
            if score >= 0.25:
                truth["annotations"].append({"id": len(truth["annotations"]) + 1, "image_id": image,
                                             "category_id": int(cls), "bbox": [x0, y0, x1 - x0, y1 - y0],
                                             "area": (x1 - x0) * (y1 - y0), "iscrowd": 0})
        results += [{"image_id": image, "category_id": int(cls), "bbox": [x0, y0, x1 - x0, y1 - y0],
                     "score": score} for x0, y0, x1, y1, score, cls in detected.tolist()]
    if not truth["annotations"] or not results:
        return 0.0
    with contextlib.redirect_stdout(io.StringIO()):
        ground = COCO()
        ground.dataset = truth
        ground.createIndex()
        evaluation = COCOeval(ground, ground.loadRes(results), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return round(100 * float(evaluation.stats[1]), 2)


def validate(models, held, level_weights, args, head, detector):
    """{"rate index": {bpp, mse, d_yolo, ap50}} on the held-out pyramids (whole images, the integer
    arithmetic simulated), estimated from the models' likelihoods; AP50 against the uncompressed
    detections. "y": the same with y unquantised (the transform's floor: what no rate beats)."""
    report = {}
    with torch.no_grad():
        device = next(detector.parameters()).device
        clean = [detections(detector, [torch.from_numpy(level[None].astype(np.float32)).to(device)
                                       for level in pyramid]) for pyramid in held]
        for rate in validation_rates(args) + ["y"]:
            bpp, distortion, task, coded = [], [], [], []
            for pyramid in held:
                image_pixels = float(64 * pyramid[0].shape[1] * pyramid[0].shape[2])
                index = torch.tensor([float(0 if rate == "y" else rate)])
                _, b, d, t, recon = batch_loss(models, [pyramid], index, 0.0, level_weights, True, image_pixels,
                                               head, quantise=rate != "y")
                bpp.append(b)
                distortion.append(d)
                task.append(t)
                coded.append(detections(detector, recon))
            report[str(rate)] = {"bpp": round(float(np.mean(bpp)), 5), "mse": round(float(np.mean(distortion)), 5),
                                 "d_yolo": round(float(np.mean(task)), 5), "ap50": agreement_ap50(clean, coded)}
    return report


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m ctc.training.fusion", description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default=str(DATA / "weights" / "yolov5n_coco.safetensors"))
    parser.add_argument("--data", default=str(DATA), help="../shared/data: its 313-photo pool, features cached")
    parser.add_argument("--images", default="", help="train on this image folder instead (any layout, searched "
                                                     "recursively; features computed on the fly, no cache)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (under torchrun: one GPU per rank)")
    parser.add_argument("--name", default="yolov5n", help="model name (the file is <name>-<hash>.safetensors)")
    parser.add_argument("--ablation", action="store_true", help="train the no-fusion ablation")
    parser.add_argument("--init", default="", help="start from these model files or names (ablation: one per "
                                                   "level, comma-separated)")
    parser.add_argument("--widen-from", default="", help="start from this fusion model file or name, grown to "
                                                         "--trunk / --latent / --hyper (Net2WiderNet, zero fan-out)")
    parser.add_argument("--trunk", type=int, default=48)
    parser.add_argument("--latent", type=int, default=128)
    parser.add_argument("--hyper", type=int, default=48)
    parser.add_argument("--extra-stages", type=int, default=0, help="E: stride-2 stages from the last level to y "
                                                                    "(-1: y at the second-to-last level's size)")
    parser.add_argument("--checkerboard", action="store_true", help="add a checkerboard context model (an "
                                                                    "ablation: not exported)")
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crop", type=int, default=40, help="P3 crop side (×8 image pixels)")
    parser.add_argument("--crop-late", type=int, default=64, help="P3 crop side for the last --late-fraction")
    parser.add_argument("--batch-late", type=int, default=4)
    parser.add_argument("--late-fraction", type=float, default=0.0)
    parser.add_argument("--augmentations", type=int, default=3)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--lr-final", type=float, default=1e-4, help="the cosine's end")
    parser.add_argument("--warmup", type=int, default=100, help="steps of linear learning-rate warm-up")
    parser.add_argument("--task-weight", type=float, default=0.0, help="weight of D_yolo in the distortion")
    parser.add_argument("--mse-weight", type=float, default=1.0, help="weight of the weighted feature MSE")
    parser.add_argument("--jnd-weight", type=float, default=0.0, help="weight of the JND-weighted feature error "
                        "Σ_i w_i · mean(a_i ((p − p̂) / δ)²), δ from --jnd-estimator")
    parser.add_argument("--jnd-strength", type=float, default=0.5, help="s: the JND weights are δ^−2s (1 follows "
                        "the tolerance fully)")
    parser.add_argument("--jnd-estimator", default="yolov5n-neck-noise",
                        help="the noise-tolerance FeatJND estimator giving δ (a shipped name or a path)")
    parser.add_argument("--rates", type=int, default=0, help="R: rate indices of the gain table (0: one shared "
                                                             "step, r the latent exponent)")
    parser.add_argument("--lambda-top", type=float, default=256.0, help="λ at rate index 0 (gain units)")
    parser.add_argument("--lambda-bottom", type=float, default=0.25, help="λ at rate index R − 1 (gain units)")
    parser.add_argument("--gain-top", type=float, default=-16.0, help="initial latent exponent at rate index 0")
    parser.add_argument("--gain-bottom", type=float, default=24.0, help="initial latent exponent at R − 1")
    parser.add_argument("--gain-lr", type=float, default=0.02, help="learning rate of the gain table (ladder steps)")
    parser.add_argument("--lmbda", type=float, default=4.0, help="λ_0 without gain units: λ(r) = λ_0 · 2^(−r/4)")
    parser.add_argument("--rate-min", type=int, default=-8)
    parser.add_argument("--rate-max", type=int, default=24)
    parser.add_argument("--qat-fraction", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--checkpoint-every", type=int, default=250)
    parser.add_argument("--stop-at", type=int, default=0, help="stop after this step, checkpointed (a job slot's "
                                                               "end); the same command without it continues")
    parser.add_argument("--validate-every", type=int, default=0, help="held-out learning-curve points (0: at the end)")
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
