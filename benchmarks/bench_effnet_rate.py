"""Rate–distortion of token-wise SQ on EfficientNet-Lite0 backbone features, against the HEVC anchor.

What it measures: every image's backbone feature (1280×7×7 float32, after the
head conv/BN/ReLU6, cached by ``benchmarks/extract_effnet_features.py``) is
coded with ``encoder.encoder.encode_features`` for each QP of a sweep and each
RoundingOffset, DecodedFeatureHash on. Per image: bits = 8 × len(stream) (the
whole stream: header, parameter set, tensor data unit and MD5 unit) and
NRMSE = ||f − f̂||₂ / ||f||₂ with f̂ the decoded feature
(``EncodeResult.reconstruction``, which is what the decoder outputs; the first
``--verify-decode`` images are also run through ``decode_stream`` and compared
bit for bit). Per setting it prints the mean bits per image, bits per feature
point, the mean NRMSE, the top-1 accuracy against the labels and the top-1
agreement with the uncompressed features' prediction, from the classifier head
(``EfficientNetLiteSplit().back``: average pool + linear) run on the decoded
features.

Then, per RoundingOffset, the mean-bits-vs-mean-NRMSE curve is interpolated
(monotone PCHIP of log(bits) against NRMSE) at the NRMSE of the HEVC feature
anchor measured on the same 200 images (x265 all-intra 10-bit 4:0:0, channels
tiled 32×40, --ipratio 1 --no-info, QP 32 and 42): 49,835 bits per image at
NRMSE 0.106 and 19,295 bits per image at NRMSE 0.328; the bit saving is
1 − FCRS bits / HEVC bits.

The features come from the cache folder (``--cache``, default
/tmp/fcrs_feats/imagenet_dev_lite0: one <stem>.npy per image, labels.json,
uncompressed_top1.json). When it is missing, the script first extracts it from
``--data`` (default: ../shared/data/imagenet-dev next to the repository) with
extract_effnet_features.py's code (needs torch and the packaged Lite0 weights).

Run (about 2 minutes on 2 cores with the cache present):

    .venv/bin/python benchmarks/bench_effnet_rate.py
    .venv/bin/python benchmarks/bench_effnet_rate.py --qps 44:72:2 --offsets 0.5,0.35 --workers 2
    .venv/bin/python benchmarks/bench_effnet_rate.py --cache /tmp/my_cache --data ../shared/data/imagenet-dev
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "imagenet-dev"
DEFAULT_CACHE = Path("/tmp/fcrs_feats/imagenet_dev_lite0")
# HEVC feature anchor on the same 200 images: (mean NRMSE, mean bits per image, x265 QP)
HEVC_ANCHOR = ((0.106, 49_835, 32), (0.328, 19_295, 42))


def parse_qps(text):
    """'44:72:2' (inclusive) or '44,48,52'."""
    if ":" in text:
        parts = [int(p) for p in text.split(":")]
        start, stop, step = parts[0], parts[1], parts[2] if len(parts) > 2 else 1
        return list(range(start, stop + (1 if step > 0 else -1), step))
    return [int(q) for q in text.split(",")]


def ensure_cache(cache, data, model, split="backbone"):
    if (cache / "labels.json").is_file() and (cache / "uncompressed_top1.json").is_file():
        return
    print(f"feature cache {cache} missing: extracting from {data} ...", flush=True)
    import extract_effnet_features

    rc = extract_effnet_features.main(["--data", str(data), "--out", str(cache), "--model", model,
                                       "--split", split])
    if rc:
        raise SystemExit(f"feature extraction failed ({rc})")


# -- worker ---------------------------------------------------------------------------

_CONFIGS = None
_VERIFY = 0


@contextlib.contextmanager
def worker_pool(workers, initializer, initargs):
    """Start `workers` processes now (callers do so before importing torch, so the forked workers
    stay torch-free) and yield imap(function, jobs): the results in completion order, with an
    images-done counter on a terminal. With one worker everything runs in this process."""
    pool = mp.Pool(workers, initializer, initargs) if workers > 1 else None

    def imap(function, jobs):
        results = pool.imap_unordered(function, jobs) if pool else (initializer(*initargs) or map(function, jobs))
        progress = sys.stderr.isatty()
        for done, result in enumerate(results, 1):
            yield result
            if progress:
                print(f"\r{done}/{len(jobs)} images", end="", file=sys.stderr, flush=True)
        if progress:
            print(file=sys.stderr)

    try:
        yield imap
    finally:
        if pool:
            pool.close()
            pool.join()


def _init_worker(configs, verify):
    global _CONFIGS, _VERIFY
    _CONFIGS, _VERIFY = configs, verify


def code_image(job):
    """All (offset, QP) settings of one image: bits, NRMSE, decoded features, decode check."""
    from encoder.encoder import encode_features
    from encoder.options import default_options

    index, path = job
    f = np.load(path)
    f64 = f.astype(np.float64)
    norm = np.linalg.norm(f64)
    bits = np.zeros(len(_CONFIGS), dtype=np.int64)
    nrmse = np.zeros(len(_CONFIGS))
    decoded = np.zeros((len(_CONFIGS),) + f.shape, dtype=f.dtype)
    checked = 0
    start = time.perf_counter()
    for i, (offset, qp) in enumerate(_CONFIGS):
        options = default_options()
        options.update(QP=qp, RoundingOffset=offset, DecodedFeatureHash=True)
        result = encode_features({"": f}, options)
        rec = result.reconstruction[""]
        bits[i] = 8 * len(result.stream)
        nrmse[i] = np.linalg.norm(rec.astype(np.float64) - f64) / norm
        decoded[i] = rec
        if index < _VERIFY:
            from decoder.decoder import decode_stream

            out = decode_stream(result.stream)
            same = np.array_equal(out.tensors[""], rec) and all(c.ok for c in out.hash_checks)
            if not same:
                raise RuntimeError(f"{path}: decoder output differs from the encoder's reconstruction "
                                   f"(QP {qp}, offset {offset})")
            checked += 1
    return index, bits, nrmse, decoded, checked, time.perf_counter() - start


# -- interpolation --------------------------------------------------------------------

def bits_at_nrmse(nrmse, bits, target):
    """Mean bits at a target NRMSE: monotone PCHIP of log(bits) vs NRMSE; None outside the sweep."""
    order = np.argsort(nrmse)
    x, y = np.asarray(nrmse)[order], np.log(np.asarray(bits, dtype=float)[order])
    keep = np.concatenate([[True], np.diff(x) > 0])
    x, y = x[keep], y[keep]
    # keep the curve monotone (more bits, less error): drop points that break it
    mono = [0]
    for i in range(1, len(x)):
        if y[i] < y[mono[-1]]:
            mono.append(i)
    x, y = x[mono], y[mono]
    if len(x) < 2 or not (x[0] <= target <= x[-1]):
        return None
    try:
        from scipy.interpolate import PchipInterpolator

        return float(np.exp(PchipInterpolator(x, y)(target)))
    except ImportError:
        return float(np.exp(np.interp(target, x, y)))


def value_at_nrmse(nrmse, values, target):
    order = np.argsort(nrmse)
    x = np.asarray(nrmse)[order]
    if not (x[0] <= target <= x[-1]):
        return None
    return float(np.interp(target, x, np.asarray(values, dtype=float)[order]))


# -- main -----------------------------------------------------------------------------

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help=f"feature cache (default {DEFAULT_CACHE})")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA,
                    help=f"image folder with labels.csv, used only to fill a missing cache (default {DEFAULT_DATA})")
    ap.add_argument("--model", default="efficientnet-lite0", help="classifier (default efficientnet-lite0)")
    ap.add_argument("--qps", default="44:72:2", help="QP sweep: start:stop:step (inclusive) or a list (default 44:72:2)")
    ap.add_argument("--offsets", default="0.5,0.35", help="RoundingOffset values (default 0.5,0.35)")
    ap.add_argument("--workers", type=int, default=2, help="worker processes over images (default 2)")
    ap.add_argument("--limit", type=int, help="use only the first N images (default: all)")
    ap.add_argument("--verify-decode", type=int, default=5, metavar="N",
                    help="also run decode_stream on the first N images and check it equals the reconstruction "
                         "(default 5)")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    ensure_cache(args.cache, args.data, args.model)
    labels = json.loads((args.cache / "labels.json").read_text())
    uncompressed = json.loads((args.cache / "uncompressed_top1.json").read_text())
    stems = sorted(labels)[: args.limit] if args.limit else sorted(labels)
    paths = [args.cache / f"{s}.npy" for s in stems]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise SystemExit(f"{len(missing)} cached features missing, e.g. {missing[0]}; delete {args.cache} "
                         "to re-extract")
    offsets = [float(o) for o in args.offsets.split(",")]
    qps = parse_qps(args.qps)
    configs = [(o, q) for o in offsets for q in qps]
    n_img, n_cfg = len(stems), len(configs)
    label_arr = np.array([labels[s] for s in stems])
    ref_arr = np.array([uncompressed[s] for s in stems])
    shape = np.load(paths[0]).shape
    points = int(np.prod(shape))

    bits = np.zeros((n_cfg, n_img), dtype=np.int64)
    nrmse = np.zeros((n_cfg, n_img))
    pred = np.zeros((n_cfg, n_img), dtype=np.int64)
    checked = 0
    worker_seconds = 0.0

    # The pool is started before torch is imported, so the workers stay torch-free.
    jobs = list(enumerate(paths))
    with worker_pool(args.workers, _init_worker, (configs, args.verify_decode)) as imap:
        import torch

        from ctc.tasks.efficientnet_lite import EfficientNetLiteSplit

        torch.set_num_threads(1)
        net = EfficientNetLiteSplit(args.model)
        for i, b, e, decoded, c, sec in imap(code_image, jobs):
            bits[:, i], nrmse[:, i] = b, e
            with torch.no_grad():
                pred[:, i] = net.back(torch.from_numpy(decoded)).argmax(1).numpy()
            checked += c
            worker_seconds += sec
    wall = time.perf_counter() - t0

    print(f"EfficientNet-Lite0 backbone features: {n_img} images of {args.cache}, each "
          f"{'×'.join(map(str, shape))} = {points:,} feature points")
    print(f"uncompressed: top-1 {np.mean(ref_arr == label_arr) * 100:.1f} %, "
          f"exact zeros {np.mean([np.mean(np.load(p) == 0) for p in paths]) * 100:.1f} %")
    print(f"{n_img * n_cfg:,} encodes ({n_cfg} settings × {n_img} images) in {wall:.0f} s wall with "
          f"{args.workers} worker(s) ({worker_seconds / (n_img * n_cfg) * 1000:.1f} ms per encode); "
          f"decode_stream checked identical on {checked} streams")
    print()
    print("Sweep (bits = whole stream incl. MD5 unit, mean per image; NRMSE mean of per-image ||f−f̂||/||f||)")
    print(f"{'QP':>4} {'offset':>6} {'bits/image':>11} {'bits/pt':>8} {'NRMSE':>8} {'top-1 %':>8} {'agree %':>8}")
    mean_bits, mean_nrmse, top1, agree = {}, {}, {}, {}
    for k, (o, q) in enumerate(configs):
        mean_bits[o, q] = bits[k].mean()
        mean_nrmse[o, q] = nrmse[k].mean()
        top1[o, q] = np.mean(pred[k] == label_arr) * 100
        agree[o, q] = np.mean(pred[k] == ref_arr) * 100
        print(f"{q:>4} {o:>6.2f} {mean_bits[o, q]:>11,.0f} {mean_bits[o, q] / points:>8.4f} "
              f"{mean_nrmse[o, q]:>8.4f} {top1[o, q]:>8.1f} {agree[o, q]:>8.1f}")
        if k + 1 < n_cfg and configs[k + 1][0] != o:
            print()
    print()

    print("Against the HEVC feature anchor (x265 all-intra 10-bit 4:0:0, channels tiled 32×40, "
          "--ipratio 1 --no-info), same images")
    print(f"{'NRMSE':>6} {'HEVC QP':>7} {'HEVC bits':>10} {'offset':>6} {'FCRS bits':>10} {'bits/pt':>8} "
          f"{'saving':>8} {'HEVC/FCRS':>9} {'top-1 %':>8} {'agree %':>8}")
    for target, anchor_bits, anchor_qp in HEVC_ANCHOR:
        for o in offsets:
            xs = [mean_nrmse[o, q] for q in qps]
            ours = bits_at_nrmse(xs, [mean_bits[o, q] for q in qps], target)
            if ours is None:
                print(f"{target:>6.3f} {anchor_qp:>7} {anchor_bits:>10,} {o:>6.2f} "
                      f"{'n/a: NRMSE outside the sweep':>30}")
                continue
            t1 = value_at_nrmse(xs, [top1[o, q] for q in qps], target)
            ag = value_at_nrmse(xs, [agree[o, q] for q in qps], target)
            print(f"{target:>6.3f} {anchor_qp:>7} {anchor_bits:>10,} {o:>6.2f} {ours:>10,.0f} "
                  f"{ours / points:>8.4f} {(1 - ours / anchor_bits) * 100:>7.1f}% {anchor_bits / ours:>8.2f}× "
                  f"{t1:>8.1f} {ag:>8.1f}")
    print("(FCRS bits interpolated: monotone PCHIP of log(mean bits) vs mean NRMSE over the QP sweep; "
          "top-1/agreement interpolated linearly in NRMSE; saving = 1 − FCRS/HEVC)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
