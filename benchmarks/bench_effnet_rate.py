"""Rate–distortion of token-wise SQ on EfficientNet-Lite0 backbone features, against the HEVC anchor.

What it measures: a CTC run (benchmarks/ctc_sweep.py: the configuration is written from
the settings, ctc/runner.py runs it on the local pool or on Ray) codes every image's
backbone feature (1280×7×7 float32, after the head conv/BN/ReLU6, from the runner's
feature cache) with cfg/uniform.cfg for each QP of a sweep and each RoundingOffset
(one CTC tool per offset), DecodedFeatureHash on, decodes every stream with
``decode_stream`` and checks its MD5. Per image: bits = 8 × len(stream) (the whole
stream: header, parameter set, tensor data unit and MD5 unit) and NRMSE = ||f − f̂||₂ /
||f||₂ with f̂ the decoded feature. Per setting it prints the mean bits per image, bits
per feature point, the mean NRMSE, the top-1 accuracy against the labels and the top-1
agreement with the uncompressed features' prediction, from the classifier head
(average pool + linear) run on the decoded features — all read from the run's records.

Then, per RoundingOffset, the mean-bits-vs-mean-NRMSE curve is interpolated
(monotone PCHIP of log(bits) against NRMSE) at the NRMSE of the HEVC feature
anchor measured on the same 200 images (x265 all-intra 10-bit 4:0:0, channels
tiled 32×40, --ipratio 1 --no-info, QP 32 and 42): 49,835 bits per image at
NRMSE 0.106 and 19,295 bits per image at NRMSE 0.328; the bit saving is
1 − FCRS bits / HEVC bits.

Run (a few minutes on 2 cores; on 50 images 97 s here, the old loop 88 s: every stream is decoded now):

    .venv/bin/python benchmarks/bench_effnet_rate.py
    .venv/bin/python benchmarks/bench_effnet_rate.py --qps 44:72:2 --offsets 0.5,0.35 --workers 2
    .venv/bin/python benchmarks/bench_effnet_rate.py --limit 10 --qps 44:72:8 --backend ray
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "imagenet-dev"
# HEVC feature anchor on the same 200 images: (mean NRMSE, mean bits per image, x265 QP)
HEVC_ANCHOR = ((0.106, 49_835, 32), (0.328, 19_295, 42))


def parse_qps(text):
    """'44:72:2' (inclusive) or '44,48,52'."""
    if ":" in text:
        parts = [int(p) for p in text.split(":")]
        start, stop, step = parts[0], parts[1], parts[2] if len(parts) > 2 else 1
        return list(range(start, stop + (1 if step > 0 else -1), step))
    return [int(q) for q in text.split(",")]


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
    from ctc_sweep import add_runner_arguments, imagenet_config, run_sweep

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA,
                    help=f"image folder with labels.csv (default {DEFAULT_DATA})")
    ap.add_argument("--qps", default="44:72:2",
                    help="QP sweep: start:stop:step (inclusive) or a list (default 44:72:2)")
    ap.add_argument("--offsets", default="0.5,0.35", help="RoundingOffset values (default 0.5,0.35)")
    ap.add_argument("--limit", type=int, help="use only the first N images (default: all)")
    add_runner_arguments(ap)
    args = ap.parse_args(argv)

    offsets = [float(o) for o in args.offsets.split(",")]
    qps = parse_qps(args.qps)
    tools = {f"offset_{o:g}": {"cfg": "cfg/uniform.cfg", "options": {"RoundingOffset": o}, "rate_points": qps}
             for o in offsets}
    sweep = run_sweep(imagenet_config("bench_effnet_rate", tools), args, args.data, args.limit)
    tool_of = dict(zip(offsets, tools))
    n_img, n_cfg = len(sweep.images), len(offsets) * len(qps)
    points = sweep.feature_points
    checked, coded = sweep.md5_checks()
    encode_ms = np.mean([sweep.field(tool_of[o], q, "encode_s").mean() for o in offsets for q in qps]) * 1000

    print(f"EfficientNet-Lite0 backbone features: {n_img} images of {args.data}, each 1280×7×7 = {points:,} "
          "feature points")
    print(f"uncompressed: top-1 {np.mean(sweep.reference_top1 == sweep.labels) * 100:.1f} %")
    print(f"{n_img * n_cfg:,} encodes ({n_cfg} settings × {n_img} images) in {sweep.wall:.0f} s wall with "
          f"{args.workers} {args.backend} worker(s) ({encode_ms:.1f} ms per encode); "
          f"decoded with MD5 OK: {checked} of {coded} streams")
    print()
    print("Sweep (bits = whole stream incl. MD5 unit, mean per image; NRMSE mean of per-image ||f−f̂||/||f||)")
    print(f"{'QP':>4} {'offset':>6} {'bits/image':>11} {'bits/pt':>8} {'NRMSE':>8} {'top-1 %':>8} {'agree %':>8}")
    mean_bits, mean_nrmse, top1, agree = {}, {}, {}, {}
    for o in offsets:
        for q in qps:
            tool = tool_of[o]
            predicted = sweep.top1(tool, q)
            mean_bits[o, q] = sweep.field(tool, q, "bits").mean()
            mean_nrmse[o, q] = sweep.field(tool, q, "nrmse").mean()
            top1[o, q] = np.mean(predicted == sweep.labels) * 100
            agree[o, q] = np.mean(predicted == sweep.reference_top1) * 100
            print(f"{q:>4} {o:>6.2f} {mean_bits[o, q]:>11,.0f} {mean_bits[o, q] / points:>8.4f} "
                  f"{mean_nrmse[o, q]:>8.4f} {top1[o, q]:>8.1f} {agree[o, q]:>8.1f}")
        if o != offsets[-1]:
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
    from common.errors import exit_code_of

    raise SystemExit(exit_code_of("bench_effnet_rate", main))
