"""The HEVC feature anchor against the token-wise tool on EfficientNet-Lite0 backbone features.

What it measures: a CTC run (benchmarks/ctc_sweep.py: the configuration is written from
the settings, ctc/runner.py runs it on the local pool or on Ray) codes every image's
backbone feature (1280×7×7 float32, from the runner's feature cache)

* with the video anchor (cfg/anchor_hevc.cfg: min-max 10-bit levels, 1280 tiles of
  7×7 in 40 columns × 32 rows, a 280×224 4:0:0 picture, x265 intra with
  --ipratio 1 --no-info, libde265-dec265) at each anchor QP (``--anchor-qps``, default 22,27,32,37,42,47),
  InnerCodecInfo off (the ~21-byte version string would be the only anchor-only
  overhead; the versions are printed here instead), and
* with the token-wise tool (cfg/uniform.cfg: uniform steps, RoundingOffset 0.5) at
  each QP of a sweep (``--tokenwise-qps``, default -56:72:4) that spans the anchor's
  NRMSE range and reaches the anchor's highest rate (the token-wise tool needs
  very fine steps, NRMSE ~1e-5, to spend as many bits as the anchor at QP 22),

both through ``encode_features`` with DecodedFeatureHash on, and every stream is
decoded with ``decode_stream`` and its MD5 (of the encoder's reconstruction) checked.
Everything is read back from the run's records. Per setting: mean bits per image (8 × len(stream): header,
parameter set, tensor data unit, MD5 unit), for the anchor also the inner HEVC
stream's bits; mean NRMSE = ||f − f̂||₂ / ||f||₂; top-1 and top-1 agreement with the
uncompressed prediction from the classifier head (``EfficientNetLiteSplit().back``)
on the decoded features; mean wall time per feature of ``encode_features`` (for the
anchor this includes x265 and the in-loop libde265 decode that gives the encoder its
reconstruction and MD5; x265 alone, ``TensorReport.inner_seconds``, is shown too) and
of ``decode_stream`` (for the anchor: writing the inner stream, libde265-dec265,
reading and unpacking its picture).

Side by side, per anchor QP: the token-wise tool's mean bits at the anchor's mean
NRMSE (monotone PCHIP of log bits vs NRMSE over the sweep) and the saving
1 − token-wise / anchor; the token-wise NRMSE at the anchor's mean bits (linear in
log bits); the two sweep QPs whose mean bits bracket the anchor's, with their bits
and NRMSE; token-wise encode / decode times interpolated at the anchor's NRMSE.

Images are spread over ``--workers`` runner workers (default 2, one per core; the times
are per feature inside one worker, so they include some contention with the other
worker). ``--limit N`` uses the first N images of ``--data``.

Run (about 5 minutes on 2 cores for the 200 images; as long as the old loop: 129 s vs 132 s on 50):

    .venv/bin/python benchmarks/bench_anchor.py
    .venv/bin/python benchmarks/bench_anchor.py --limit 20 --tokenwise-qps=-8:72:8    # quick smoke run
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

from bench_effnet_rate import DEFAULT_DATA, bits_at_nrmse, parse_qps  # noqa: E402
from ctc_sweep import add_runner_arguments, imagenet_config, run_sweep  # noqa: E402


def interpolate(x, y, target):
    """y at x = target, linear, x sorted ascending; None outside."""
    order = np.argsort(x)
    x, y = np.asarray(x, float)[order], np.asarray(y, float)[order]
    return float(np.interp(target, x, y)) if x[0] <= target <= x[-1] else None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA,
                    help=f"image folder with labels.csv (default {DEFAULT_DATA})")
    ap.add_argument("--anchor-qps", default="22,27,32,37,42,47", help="x265 QPs (default 22,27,32,37,42,47)")
    ap.add_argument("--tokenwise-qps", default="-56:72:4",
                    help="token-wise QP sweep, start:stop:step or a list; write --tokenwise-qps=-56:72:4 when it "
                         "starts with a minus (default -56:72:4)")
    ap.add_argument("--limit", type=int, help="use only the first N images (default: all)")
    add_runner_arguments(ap)
    args = ap.parse_args(argv)

    from common.codepoints import InnerCodec
    from common.tools.video_anchor.inner_decoder import decoder_version
    from encoder.tools.video_anchor.inner_encoder import encoder_version

    versions = f"{encoder_version('hevc')}, {decoder_version(InnerCodec.HEVC)}"
    anchor_qps, tokenwise_qps = parse_qps(args.anchor_qps), parse_qps(args.tokenwise_qps)
    tools = {"anchor": {"cfg": "cfg/anchor_hevc.cfg", "options": {"InnerCodecInfo": 0}, "rate_points": anchor_qps},
             "tokenwise": {"cfg": "cfg/uniform.cfg", "rate_points": tokenwise_qps}}
    sweep = run_sweep(imagenet_config("bench_anchor", tools), args, args.data, args.limit)
    settings = [("anchor", q) for q in anchor_qps] + [("tokenwise", q) for q in tokenwise_qps]
    n_img, n_set = len(sweep.images), len(settings)
    points = sweep.feature_points
    keys = ("bits", "inner_bits", "nrmse", "encode_s", "inner_encode_s", "decode_s")
    mean = {k: np.array([sweep.field(tool, q, k).mean() if tool == "anchor" or not k.startswith("inner") else 0.0
                         for tool, q in settings]) for k in keys}
    predicted = np.array([sweep.top1(tool, q) for tool, q in settings])
    top1 = (predicted == sweep.labels).mean(axis=1) * 100
    agree = (predicted == sweep.reference_top1).mean(axis=1) * 100
    rows = {s: k for k, s in enumerate(settings)}
    checked, coded = sweep.md5_checks()

    print(f"EfficientNet-Lite0 backbone features: {n_img} images of {args.data}, each 1280×7×7 = {points:,} "
          f"feature points; uncompressed top-1 {np.mean(sweep.reference_top1 == sweep.labels) * 100:.1f} %")
    print(f"{n_img * n_set:,} encodes + decodes ({n_set} settings × {n_img} images), MD5 OK on {checked} of "
          f"{coded} decodes, in {sweep.wall:.0f} s wall with {args.workers} {args.backend} worker(s); {versions}")
    print("bits = whole stream incl. 18-byte MD5 unit, mean per image; NRMSE = mean per-image ||f−f̂||/||f||; "
          "times = mean wall ms per feature")
    print()
    print("HEVC feature anchor (cfg/anchor_hevc.cfg, InnerCodecInfo 0; encode = x265 + in-loop libde265)")
    print(f"{'QP':>3} {'bits':>8} {'HEVC bits':>9} {'bits/pt':>8} {'NRMSE':>9} {'top-1 %':>7} {'agree %':>7} "
          f"{'enc ms':>7} {'x265 ms':>7} {'dec ms':>7}")
    for q in anchor_qps:
        k = rows["anchor", q]
        print(f"{q:>3} {mean['bits'][k]:>8,.0f} {mean['inner_bits'][k]:>9,.0f} {mean['bits'][k] / points:>8.4f} "
              f"{mean['nrmse'][k]:>9.4g} {top1[k]:>7.1f} {agree[k]:>7.1f} {mean['encode_s'][k] * 1000:>7.1f} "
              f"{mean['inner_encode_s'][k] * 1000:>7.1f} {mean['decode_s'][k] * 1000:>7.1f}")
    print()
    print("Token-wise SQ (cfg/uniform.cfg: uniform steps, RoundingOffset 0.5)")
    print(f"{'QP':>3} {'bits':>8} {'bits/pt':>8} {'NRMSE':>9} {'top-1 %':>7} {'agree %':>7} {'enc ms':>7} "
          f"{'dec ms':>7}")
    for q in tokenwise_qps:
        k = rows["tokenwise", q]
        print(f"{q:>3} {mean['bits'][k]:>8,.0f} {mean['bits'][k] / points:>8.4f} {mean['nrmse'][k]:>9.4g} "
              f"{top1[k]:>7.1f} {agree[k]:>7.1f} {mean['encode_s'][k] * 1000:>7.1f} {mean['decode_s'][k] * 1000:>7.1f}")
    print()

    tw = [rows["tokenwise", q] for q in tokenwise_qps]
    tw_bits, tw_nrmse = mean["bits"][tw], mean["nrmse"][tw]
    print("Side by side at the anchor's points (token-wise interpolated over its sweep)")
    print(f"{'QP':>3} {'anchor bits':>11} {'NRMSE':>7} | {'TW bits @NRMSE':>14} {'saving':>7} {'TW agree':>8} "
          f"{'TW enc':>6} {'TW dec':>6} | {'TW NRMSE @bits':>14} | bracketing TW QPs: QP bits NRMSE")
    for q in anchor_qps:
        k = rows["anchor", q]
        bits, err = mean["bits"][k], mean["nrmse"][k]
        at_nrmse = bits_at_nrmse(tw_nrmse, tw_bits, err)
        at_bits = interpolate(np.log(tw_bits), tw_nrmse, np.log(bits))
        above = [i for i in range(len(tw)) if tw_bits[i] >= bits]
        below = [i for i in range(len(tw)) if tw_bits[i] < bits]
        bracket = []
        for group, pick in ((above, max), (below, min)):
            if group:
                i = pick(group, key=lambda j: tokenwise_qps[j])
                bracket.append(f"{tokenwise_qps[i]} {tw_bits[i]:,.0f} {tw_nrmse[i]:.3g}")
        bracket = "  /  ".join(bracket)
        if at_nrmse is None:
            left = f"{'n/a (NRMSE outside the sweep)':>48}"
        else:
            enc = interpolate(tw_nrmse, mean["encode_s"][tw] * 1000, err)
            dec = interpolate(tw_nrmse, mean["decode_s"][tw] * 1000, err)
            ag = interpolate(tw_nrmse, agree[tw], err)
            left = (f"{at_nrmse:>14,.0f} {(1 - at_nrmse / bits) * 100:>6.1f}% {ag:>8.1f} {enc:>6.1f} {dec:>6.1f}")
        right = f"{at_bits:>14.4g}" if at_bits is not None else f"{'n/a':>14}"
        print(f"{q:>3} {bits:>11,.0f} {err:>7.4f} | {left} | {right} | {bracket}")
    print("(TW = token-wise; TW bits @NRMSE: monotone PCHIP of log mean bits vs mean NRMSE; saving = 1 − TW/anchor; "
          "TW agree / enc / dec ms interpolated linearly in NRMSE; TW NRMSE @bits: linear in log bits)")
    return 0


if __name__ == "__main__":
    from common.errors import exit_code_of

    raise SystemExit(exit_code_of("bench_anchor", main))
