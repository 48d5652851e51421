"""The HEVC feature anchor against the token-wise tool on EfficientNet-Lite0 backbone features.

What it measures: every image's backbone feature (1280×7×7 float32, cached by
``benchmarks/extract_effnet_features.py``) is coded

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
decoded with ``decode_stream`` and checked bit-identical to the encoder's
reconstruction. Per setting: mean bits per image (8 × len(stream): header,
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

Images are spread over ``--workers`` processes (default 2, one per core; the times
are per feature inside one worker, so they include some contention with the other
worker). The features come from ``--cache`` (default /tmp/fcrs_feats/imagenet_dev_lite0,
extracted from ``--data`` first when missing); ``--limit N`` uses the first N images.

Run (about 5 minutes on 2 cores for the 200 images):

    .venv/bin/python benchmarks/bench_anchor.py
    .venv/bin/python benchmarks/bench_anchor.py --limit 20 --tokenwise-qps=-8:72:8    # quick smoke run
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402

from bench_effnet_rate import (DEFAULT_CACHE, DEFAULT_DATA, bits_at_nrmse, ensure_cache, parse_qps,  # noqa: E402
                              worker_pool)

_SETTINGS = None


def _init_worker(settings):
    global _SETTINGS
    _SETTINGS = settings


def _setting_options(tool, qp):
    from encoder.options import default_options
    options = default_options()
    options.update(QP=qp, DecodedFeatureHash=True)
    if tool == "anchor":
        options.update(Tool="anchor", InnerCodec="hevc", InnerCodecInfo=False)
    return options


def code_image(job):
    """Every (tool, QP) setting of one image: bits, inner bits, NRMSE, times, decoded features."""
    from decoder.decoder import decode_stream
    from encoder.encoder import encode_features

    index, path = job
    f = np.load(path)
    f64 = f.astype(np.float64)
    norm = np.linalg.norm(f64)
    n = len(_SETTINGS)
    out = dict(bits=np.zeros(n, np.int64), inner_bits=np.zeros(n, np.int64), nrmse=np.zeros(n),
               encode_s=np.zeros(n), inner_encode_s=np.zeros(n), decode_s=np.zeros(n),
               decoded=np.zeros((n,) + f.shape, f.dtype))
    for i, (tool, qp) in enumerate(_SETTINGS):
        start = time.perf_counter()
        result = encode_features({"": f}, _setting_options(tool, qp))
        out["encode_s"][i] = time.perf_counter() - start
        start = time.perf_counter()
        decoded = decode_stream(result.stream)
        out["decode_s"][i] = time.perf_counter() - start
        rec = decoded.tensors[""]
        if not (np.array_equal(rec, result.reconstruction[""]) and all(c.ok for c in decoded.hash_checks)):
            raise RuntimeError(f"{path}: decoded features differ from the encoder's reconstruction ({tool} QP {qp})")
        out["bits"][i] = 8 * len(result.stream)
        out["inner_bits"][i] = result.reports[0].inner_bits
        out["inner_encode_s"][i] = result.reports[0].inner_seconds
        out["nrmse"][i] = np.linalg.norm(rec.astype(np.float64) - f64) / norm
        out["decoded"][i] = rec
    return index, out


def interpolate(x, y, target):
    """y at x = target, linear, x sorted ascending; None outside."""
    order = np.argsort(x)
    x, y = np.asarray(x, float)[order], np.asarray(y, float)[order]
    return float(np.interp(target, x, y)) if x[0] <= target <= x[-1] else None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help=f"feature cache (default {DEFAULT_CACHE})")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="image folder, only to fill a missing cache")
    ap.add_argument("--model", default="efficientnet-lite0", help="classifier (default efficientnet-lite0)")
    ap.add_argument("--anchor-qps", default="22,27,32,37,42,47", help="x265 QPs (default 22,27,32,37,42,47)")
    ap.add_argument("--tokenwise-qps", default="-56:72:4",
                    help="token-wise QP sweep, start:stop:step or a list; write --tokenwise-qps=-56:72:4 when it "
                         "starts with a minus (default -56:72:4)")
    ap.add_argument("--workers", type=int, default=2, help="worker processes over images (default 2)")
    ap.add_argument("--limit", type=int, help="use only the first N images (default: all)")
    args = ap.parse_args(argv)

    from common.codepoints import InnerCodec
    from common.tools.video_anchor.inner_decoder import decoder_version
    from encoder.tools.video_anchor.inner_encoder import encoder_version

    t0 = time.perf_counter()
    versions = f"{encoder_version('hevc')}, {decoder_version(InnerCodec.HEVC)}"
    ensure_cache(args.cache, args.data, args.model)
    labels = json.loads((args.cache / "labels.json").read_text())
    uncompressed = json.loads((args.cache / "uncompressed_top1.json").read_text())
    stems = sorted(labels)[: args.limit] if args.limit else sorted(labels)
    paths = [args.cache / f"{s}.npy" for s in stems]
    anchor_qps, tokenwise_qps = parse_qps(args.anchor_qps), parse_qps(args.tokenwise_qps)
    settings = [("anchor", q) for q in anchor_qps] + [("tokenwise", q) for q in tokenwise_qps]
    n_img, n_set = len(paths), len(settings)
    label_arr = np.array([labels[s] for s in stems])
    ref_arr = np.array([uncompressed[s] for s in stems])
    shape = np.load(paths[0]).shape
    points = int(np.prod(shape))
    keys = ("bits", "inner_bits", "nrmse", "encode_s", "inner_encode_s", "decode_s")
    table = {k: np.zeros((n_set, n_img)) for k in keys}
    pred = np.zeros((n_set, n_img), dtype=np.int64)

    jobs = list(enumerate(paths))
    with worker_pool(args.workers, _init_worker, (settings,)) as imap:
        import torch

        from ctc.tasks.efficientnet_lite import EfficientNetLiteSplit

        torch.set_num_threads(1)
        net = EfficientNetLiteSplit(args.model)
        for i, out in imap(code_image, jobs):
            for k in keys:
                table[k][:, i] = out[k]
            with torch.no_grad():
                pred[:, i] = net.back(torch.from_numpy(out["decoded"])).argmax(1).numpy()
    wall = time.perf_counter() - t0

    mean = {k: table[k].mean(axis=1) for k in keys}
    top1 = (pred == label_arr).mean(axis=1) * 100
    agree = (pred == ref_arr).mean(axis=1) * 100
    rows = {s: k for k, s in enumerate(settings)}

    print(f"EfficientNet-Lite0 backbone features: {n_img} images of {args.cache}, each "
          f"{'×'.join(map(str, shape))} = {points:,} feature points; uncompressed top-1 "
          f"{np.mean(ref_arr == label_arr) * 100:.1f} %")
    print(f"{n_img * n_set:,} encodes + decodes ({n_set} settings × {n_img} images), all decodes bit-identical to "
          f"the encoders' reconstructions, in {wall:.0f} s wall with {args.workers} worker(s); {versions}")
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
    raise SystemExit(main())
