"""Train FCM-LM's hyperprior baseline on one feature type (ctc/baselines/hyperprior.py).

    training pool (313 photos of ../shared/data; never the 79 annotated coco-mini images) ─►
    --views random resized crops + flips per photo ─► the CTC task's front (DINOv2-S tokens,
    TAEF2 latent of a 256×256 crop) ─► features (cached, float16)
    batch of maps, a rate index r per map ─► hyperprior ─► f̂
    L = bits per feature point + λ(r) · MSE(f, f̂) / Var(f)        (bmshj2018's rate + λ·MSE)

λ(r) falls geometrically from --lambda-top (r = 0, the finest) to --lambda-bottom; the MSE is on
the feature values the task sees (the network's input is normalised per channel, its output
de-normalised), divided by the pool's variance so that λ means the same on every feature type.
The learning rate follows a cosine from --lr to --lr / 20. Held-out pool photos (every 24th,
plain front, no augmentation) give the learning curve: bits per feature point and NMSE per rate
index, from the real entropy coder at the end.

Checkpoints every --checkpoint-every steps (atomically): the same command resumes. The result is
a content-hash named safetensors in ctc/baselines/models/ whose header records the command.

    python -m ctc.training.hyperprior --feature dinov2s --seed 0
    python -m ctc.training.hyperprior --feature taef2 --seed 0
    python -m ctc.training.hyperprior --feature smollm2 --seed 0

SmolLM2's hidden states have no photo pool: they are trained on the standard library's
docstrings as ARC-style prompts (text_features; ARC itself is evaluation only).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ctc.baselines.hyperprior import STRIDE, Layout, build_network, save_model
from ctc.training.data import CACHE, random_resized_crop, split_pool, training_pool

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
GAIN_LR_SCALE = 10.0
# per feature type: the pool photos' crop side, the token grid, channels, widths (N, M, Nh) and
# the training crop of the map (a multiple of STRIDE)
FEATURES = {"dinov2s": {"crop": 448, "grid": (16, 16), "channels": 384, "widths": (160, 384, 96), "map_crop": 8},
            "taef2": {"crop": 256, "grid": None, "channels": 32, "widths": (96, 64, 64), "map_crop": 16},
            # tokens in rows of 16 (no patch grid); trained on 64-token pieces of docstring prompts
            "smollm2": {"grid": (0, 16), "channels": 576, "widths": (96, 576, 64), "map_crop": 0}}
RUN_ONLY_OPTIONS = ("--out", "--max-steps", "--checkpoint-every")    # not in the model file's command
TEXT_PIECE = 300                 # characters of docstring per prompt (ARC's prompts are 45 tokens or so)
TEXT_CHUNK = 64                  # tokens per training map (4 rows of 16)
TEXT_HELD_OUT = 20               # every 20th chunk is held out


def task_front(feature, data):
    """(front(rgb) -> one feature array, plain view of a photo) for a feature type."""
    from ctc.images import read_rgb
    from ctc.tasks.evaluation import LatentTask, SaliencyTask

    if feature == "dinov2s":
        task = SaliencyTask()
        return (lambda rgb: task.front(rgb)[0]["tokens"]), read_rgb
    task = LatentTask(str(data / "weights" / "taesd"), {"crop": 256})
    return (lambda rgb: task.front(rgb)[0]["latent"]), (lambda path: task.input_view(read_rgb(path)))


def text_features():
    """SmolLM2's last-layer hidden states of the standard library's docstrings (ctc/training/data.py),
    as 'Question: <piece>\nAnswer:' prompts of TEXT_PIECE characters, cut into TEXT_CHUNK tokens:
    (training chunks, held-out chunks)."""
    import textwrap

    from ctc.tasks.smollm2 import SmolLM2
    from ctc.training.data import docstring_texts

    net = SmolLM2()
    hidden = []
    for text in docstring_texts(8000, members=True):
        for piece in textwrap.wrap(text, TEXT_PIECE):
            ids = net.tokenizer(f"Question: {piece}\nAnswer:", add_special_tokens=False).input_ids
            with torch.no_grad():
                hidden.append(net.front(torch.tensor([ids]))[0].numpy().astype(np.float16))
    tokens = np.concatenate(hidden)
    chunks = tokens[:len(tokens) // TEXT_CHUNK * TEXT_CHUNK].reshape(-1, TEXT_CHUNK, tokens.shape[1])
    held = np.arange(len(chunks)) % TEXT_HELD_OUT == TEXT_HELD_OUT - 1
    return chunks[~held], chunks[held]


def pool_features(args):
    """(training features, held-out features): float16 arrays, cached on disk by (feature, views, seed)."""
    from PIL import Image

    cache = CACHE.parent / "hyperprior_train" / f"{args.feature}_views{args.views}_seed{args.seed}.npz"
    if cache.is_file():
        with np.load(cache) as held:
            return held["train"], held["held"]
    if args.feature == "smollm2":
        train, held = text_features()
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, train=train, held=held)
        return train, held
    front, plain_view = task_front(args.feature, Path(args.data))
    train_paths, held_paths = split_pool(training_pool(Path(args.data)))
    train = []
    start = time.perf_counter()
    for index, path in enumerate(train_paths):
        rng = np.random.default_rng([args.seed, index])
        with Image.open(path) as image:
            image = image.convert("RGB")
            for _ in range(args.views):
                crop = random_resized_crop(image, rng, FEATURES[args.feature]["crop"])
                train.append(front(np.asarray(crop)).astype(np.float16))
        if index % 50 == 0:
            print(f"features: {index + 1}/{len(train_paths)} photos, {time.perf_counter() - start:.0f} s", flush=True)
    held = [front(plain_view(path)).astype(np.float16) for path in held_paths]
    cache.parent.mkdir(parents=True, exist_ok=True)
    partial = cache.with_suffix(".partial.npz")
    np.savez(partial, train=np.stack(train), held=np.stack(held))
    partial.replace(cache)
    return np.stack(train), np.stack(held)


def padded_maps(features, layout, mean, std):
    """N feature arrays -> N×C×H×W normalised maps, zero-padded to multiples of STRIDE."""
    maps = np.stack([layout.to_map(f.astype(np.float32)) for f in features])
    maps = (maps - mean[:, None, None]) / std[:, None, None]
    rows, cols = layout.padded_size(features.shape[1:])
    padded = np.zeros(maps.shape[:2] + (rows, cols), np.float32)
    padded[:, :, :maps.shape[2], :maps.shape[3]] = maps
    mask = np.zeros((1, 1, rows, cols), np.float32)
    mask[..., :maps.shape[2], :maps.shape[3]] = 1
    if layout.grid is not None:            # the [CLS] row's unused places are padding too
        h, w = layout.grid
        prefix = features.shape[1] - h * w
        mask[..., h:, :] = 0
        for i in range(prefix):
            mask[0, 0, h + i // w, i % w] = 1
    return padded, mask


def lambdas(args):
    return [args.lambda_top * (args.lambda_bottom / args.lambda_top) ** (r / (args.rates - 1))
            for r in range(args.rates)]


def loss_terms(network, x, mask, rates, std, variance, points):
    """(bits per feature point, NMSE) per map of a batch."""
    recon, y_likelihoods, z_likelihoods = network(x, rates)
    bits = -(torch.log2(y_likelihoods).sum(dim=(1, 2, 3)) + torch.log2(z_likelihoods).sum(dim=(1, 2, 3)))
    error = ((recon - x) * std) ** 2 * mask
    return bits / points, error.sum(dim=(1, 2, 3)) / points / variance


def validate(network, held, mask, std, variance, points, rates):
    """Per rate index: (bits per feature point of the real streams, NMSE) on the held-out maps."""
    network.update(force=True)
    network.eval()
    rows = []
    with torch.no_grad():
        for r in range(rates):
            bits = error = 0.0
            for x in held:
                y_string, z_string, recon = network.compress(x[None], r)
                bits += 8 * (len(y_string) + len(z_string))
                error += float((((recon[0] - x) * std[0]) ** 2 * mask[0]).sum()) / points / variance
            rows.append((bits / len(held) / points, error / len(held)))
    network.train()
    return rows


def train(args):
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    spec = FEATURES[args.feature]
    layout = Layout(spec["channels"], spec["grid"])
    train_features, held_features = pool_features(args)
    points = int(np.prod(train_features.shape[1:]))
    flat = train_features.astype(np.float32).reshape(-1, spec["channels"]) if spec["grid"] else \
        train_features.astype(np.float32).transpose(0, 2, 3, 1).reshape(-1, spec["channels"])
    mean, std = flat.mean(axis=0), flat.std(axis=0) + 1e-6
    variance = float(flat.var())
    del flat
    maps, mask = padded_maps(train_features, layout, mean, std)
    held, _ = padded_maps(held_features, layout, mean, std)
    maps, mask, held = torch.from_numpy(maps), torch.from_numpy(mask), torch.from_numpy(held)
    std_t = torch.from_numpy(std)[None, :, None, None]
    lams = torch.tensor(lambdas(args))
    print(f"{args.feature}: {len(maps)} training maps {tuple(maps.shape[1:])}, {len(held)} held out, "
          f"{points} feature points each, pool variance {variance:.4g}", flush=True)

    network = build_network(spec["channels"], args.n, args.m, args.n_hyper, args.rates)
    parameters = [p for name, p in network.named_parameters() if not name.endswith(".quantiles")]
    aux_parameters = [p for name, p in network.named_parameters() if name.endswith(".quantiles")]
    # the gains move in the log domain, octaves apart: a step of --lr would take them thousands of steps
    optimiser = torch.optim.Adam([{"params": [p for p in parameters if p is not network.log_gain]},
                                  {"params": [network.log_gain], "lr_scale": GAIN_LR_SCALE}], lr=args.lr)
    aux_optimiser = torch.optim.Adam(aux_parameters, lr=1e-3)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = out / f"hyperprior-{args.feature}.ckpt"
    step, curve = 0, []
    rng = np.random.default_rng(args.seed)
    if checkpoint.is_file():
        state = torch.load(checkpoint, weights_only=False)
        network.load_state_dict(state["network"], strict=False)
        optimiser.load_state_dict(state["optimiser"])
        aux_optimiser.load_state_dict(state["aux_optimiser"])
        step, curve, rng = state["step"], state["curve"], state["rng"]
        torch.set_rng_state(state["torch_rng"])
        print(f"resumed at step {step}", flush=True)
    stop = min(args.steps, step + args.max_steps) if args.max_steps else args.steps
    start = time.perf_counter()
    while step < stop:
        for group in optimiser.param_groups:
            group["lr"] = group.get("lr_scale", 1.0) * args.lr * (
                0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / args.steps)))
        batch = torch.from_numpy(rng.integers(0, len(maps), args.batch))
        rates = torch.from_numpy(rng.integers(0, args.rates, args.batch))
        x, crop_mask = maps[batch], mask
        if args.map_crop:                        # random aligned crops (a latent map: either direction)
            side = min(args.map_crop, *x.shape[2:])
            top, left = (STRIDE * int(rng.integers(0, (full - side) // STRIDE + 1)) for full in x.shape[2:])
            x = x[:, :, top:top + side, left:left + side]
            crop_mask = mask[:, :, top:top + side, left:left + side]
            if spec["grid"] is None and rng.random() < 0.5:
                x, crop_mask = x.flip(3), crop_mask.flip(3)
        crop_points = max(1, int(crop_mask.sum())) * x.shape[1]
        bpfp, nmse = loss_terms(network, x, crop_mask, rates, std_t, variance, crop_points)
        loss = (bpfp + lams[rates] * nmse).mean()
        optimiser.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimiser.step()
        aux_loss = network.aux_loss()
        aux_optimiser.zero_grad()
        aux_loss.backward()
        aux_optimiser.step()
        step += 1
        if step % 100 == 0:
            print(f"step {step}: loss {loss.item():.4f} bpfp {bpfp.mean().item():.4f} nmse {nmse.mean().item():.5f} "
                  f"aux {aux_loss.item():.1f} ({time.perf_counter() - start:.0f} s)", flush=True)
        if step % args.checkpoint_every == 0 or step == stop:
            if step % args.validate_every == 0 or step == args.steps:
                rows = validate(network, held, mask, std_t, variance, points, args.rates)
                curve.append({"step": step, "held_out": rows})
                print("held out (bpfp, nmse) per rate: " + ", ".join(f"({b:.3f}, {e:.4f})" for b, e in rows), flush=True)
            state = {"network": network.state_dict(), "optimiser": optimiser.state_dict(),
                     "aux_optimiser": aux_optimiser.state_dict(), "step": step, "curve": curve, "rng": rng,
                     "torch_rng": torch.get_rng_state()}
            partial = checkpoint.with_suffix(".partial")
            torch.save(state, partial)
            partial.replace(checkpoint)
    if step < args.steps:
        print(f"stopped at step {step} of {args.steps}; the same command continues from the checkpoint")
        return
    export(args, network, layout, mean, std, curve)


def result_arguments(argv):
    """The command-line arguments that shape the model: without where checkpoints go and how a
    run was cut into calls, so that a resumed or relocated run writes the same file."""
    kept, skip = [], False
    for argument in argv:
        if skip:
            skip = False
            continue
        name = argument.split("=")[0]
        if name in RUN_ONLY_OPTIONS:
            skip = "=" not in argument
            continue
        kept.append(argument)
    return kept


def export(args, network, layout, mean, std, curve):
    network.update(force=True)
    meta = {"feature": args.feature, "channels": layout.channels, "grid": list(layout.grid) if layout.grid else None,
            "widths": [args.n, args.m, args.n_hyper], "lambdas": lambdas(args),
            "mean": [float(v) for v in mean], "std": [float(v) for v in std],
            "command": "python -m ctc.training.hyperprior " + " ".join(result_arguments(sys.argv[1:])),
            "held_out_curve": curve[-1]["held_out"] if curve else None}
    print(f"wrote {save_model(network, meta)}")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--feature", required=True, choices=sorted(FEATURES))
    parser.add_argument("--data", default=str(DATA), help="../shared/data: its 313-photo training pool")
    parser.add_argument("--views", type=int, default=4, help="augmented crops per pool photo")
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--max-steps", type=int, default=0, help="stop after this many steps of this call (0: all)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--map-crop", type=int, help="train on aligned crops of the map of this side (0: whole "
                        "maps; default: the feature type's)")
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--rates", type=int, default=6, help="rate indices (gain-table rows)")
    parser.add_argument("--lambda-top", type=float, default=512.0)
    parser.add_argument("--lambda-bottom", type=float, default=0.5)
    parser.add_argument("--n", type=int, help="g_a / g_s width (default: the feature type's)")
    parser.add_argument("--m", type=int, help="latent channels (default: the feature type's)")
    parser.add_argument("--n-hyper", type=int, help="hyper-latent channels (default: the feature type's)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--checkpoint-every", type=int, default=250)
    parser.add_argument("--validate-every", type=int, default=1000)
    parser.add_argument("--out", default=str(CACHE.parent / "hyperprior_train"), help="checkpoints")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def with_defaults(args):
    """The feature type's widths and training crop where the command line leaves them out."""
    spec = FEATURES[args.feature]
    for name, value in zip(("n", "m", "n_hyper"), spec["widths"]):
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.map_crop is None:
        args.map_crop = spec["map_crop"]
    return args


if __name__ == "__main__":
    train(with_defaults(parse_args()))
