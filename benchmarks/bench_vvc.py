"""The feature anchor's inner codecs side by side: x265, VTM and VVenC presets on the same packed features.

What it measures: real features are packed by the video anchor exactly as the CTC does
(min-max 10-bit levels, all tensors in one 4:0:0 frame) and coded through
``encode_features`` with each inner encoder at each QP:

* ``effnet``: EfficientNet-Lite0 backbone features (1280×7×7: a 280×224 picture) of
  ``--effnet-images`` photos scikit-image ships;
* ``yolo``: YOLOv5n P3–P5 (64×80×80, 128×40×40, 256×20×20: one 640×1120 picture) of the
  first ``--yolo-images`` annotated coco-mini images, when ``--weights`` and ``--coco``
  exist.

Encoders: ``hevc`` (x265), ``vtm`` (VTM's EncoderAppStatic with MPEG's encoder_intra_vtm.cfg)
and ``vvenc-<preset>`` (vvencFFapp) for each of ``--presets``; those not on PATH are left
out. Each stream is decoded with every available decoder of its standard (libde265-dec265;
VTM's DecoderAppStatic and VVdeC's vvdecapp) and checked bit-identical to the encoder's
reconstruction (and, for VVC, to the other decoder's output).

Per encoder and picture kind: mean bits, feature SNR = −10·log10(NRMSE²) in dB, mean wall
time of the external encoder alone per picture (``TensorReport.inner_seconds``) and of
``decode_stream`` per decoder, then BD-rate (pchip, ``bjontegaard``) of every encoder
against every other over the QP points, on (bits, feature SNR), by the CTC's BD-rate rule (ctc/stats.py). Times are on one core,
one picture at a time (the encoders run single-threaded).

Run (about 10 minutes on this machine: VTM dominates, ~35 s per YOLOv5n frame at QP 37):

    PATH=../shared/tools/vvc/bin:$PATH .venv/bin/python benchmarks/bench_vvc.py \\
        --weights ../shared/data/weights/yolov5n_coco.safetensors --coco ../shared/data/coco-mini
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from common.tools.video_anchor.inner_decoder import HEVC_DECODER, VVC_DECODER_VARIABLE, VVC_DECODERS  # noqa: E402
from encoder.tools.video_anchor.inner_encoder import INNER_ENCODERS  # noqa: E402

EFFNET_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg")


def effnet_features(count):
    import torch
    from PIL import Image
    from skimage import data as skdata

    from ctc.tasks.efficientnet_lite import EfficientNetLiteSplit

    net = EfficientNetLiteSplit("efficientnet-lite0")
    folder = Path(skdata.__file__).parent
    features = []
    for name in EFFNET_PHOTOS[:count]:
        with torch.no_grad():
            image = Image.open(folder / name).convert("RGB")
            features.append({"": net.front(net.preprocess(image)[None])[0].numpy()})
    return features


def yolo_features(weights, coco, count):
    from ctc.coco import load_coco
    from ctc.images import read_rgb
    from ctc.tasks.evaluation import YoloTask

    task = YoloTask("neck", weights, {})
    images = load_coco(Path(coco) / "val2017", Path(coco) / "annotations" / "instances_val2017.json")[:count]
    return [task.front(read_rgb(path))[0] for _, path in images]


def available_encoders(presets):
    encoders = []
    for name, (_, program) in INNER_ENCODERS.items():
        if shutil.which(program) is None:
            print(f"(leaving out {name}: {program} not on PATH)")
            continue
        encoders += [f"vvenc-{preset}" for preset in presets] if name == "vvenc" else [name]
    return encoders


def code(tensors, encoder, qp):
    """(bits, NRMSE, encoder seconds, {decoder: seconds}) of one picture; decoders checked."""
    from ctc.runner import feature_error
    from decoder.decoder import decode_stream
    from encoder.encoder import encode_features
    from encoder.options import default_options

    options = default_options()
    name, _, preset = encoder.partition("-")
    options.update(Tool="anchor", InnerCodec=name, QP=qp, AnchorPacking="frame", InnerCodecInfo=False)
    if preset:
        options["VvencPreset"] = preset
    result = encode_features(tensors, options)
    decode_seconds = {}
    decoders = {"libde265": HEVC_DECODER} if name == "hevc" else VVC_DECODERS
    for decoder, program in decoders.items():
        if shutil.which(program) is None:
            continue
        os.environ[VVC_DECODER_VARIABLE] = decoder      # read for VVC streams only
        start = time.perf_counter()
        decoded = decode_stream(result.stream)
        decode_seconds[decoder] = time.perf_counter() - start
        os.environ.pop(VVC_DECODER_VARIABLE)
        for tensor, array in decoded.tensors.items():
            if not np.array_equal(array, result.reconstruction[tensor]):
                sys.exit(f"{encoder} QP {qp}: {decoder} does not reproduce the encoder's reconstruction")
    nrmse = feature_error(tensors, result.reconstruction)["nrmse"]
    return 8 * len(result.stream), nrmse, sum(r.inner_seconds for r in result.reports), decode_seconds


def bd_rate(anchor_rates, anchor_snr, test_rates, test_snr):
    """BD-rate of test against anchor in % by the CTC's rule (ctc/stats.py: pchip over log rate,
    envelopes, integrated over the quality range both cover; NaN without overlap)."""
    from ctc.stats import bd_rate as ctc_bd_rate

    return ctc_bd_rate(anchor_rates, anchor_snr, test_rates, test_snr)


def run_kind(label, features, encoders, qps):
    print(f"\n## {label}: {len(features)} picture(s), QPs {', '.join(map(str, qps))}\n")
    curves = {}
    print("| encoder | QP | bits | feature SNR dB | encode s / picture | decode s / picture |")
    print("|---|---:|---:|---:|---:|---|")
    for encoder in encoders:
        rates, snrs = [], []
        for qp in qps:
            results = [code(tensors, encoder, qp) for tensors in features]
            bits = float(np.mean([r[0] for r in results]))
            snr = float(np.mean([-20 * np.log10(r[1]) for r in results]))
            encode_s = float(np.mean([r[2] for r in results]))
            decoders = {d: float(np.mean([r[3][d] for r in results])) for d in results[0][3]}
            rates.append(bits)
            snrs.append(snr)
            print(f"| {encoder} | {qp} | {bits:,.0f} | {snr:.2f} | {encode_s:.2f} | "
                  + ", ".join(f"{d} {s:.3f}" for d, s in decoders.items()) + " |", flush=True)
        curves[encoder] = (rates, snrs)
    print("\nBD-rate (bits at equal feature SNR) of the row's encoder against the column's, %:\n")
    print("| vs | " + " | ".join(encoders) + " |")
    print("|---|" + "---:|" * len(encoders))
    for row in encoders:
        cells = [("—" if row == column else f"{bd_rate(*curves[column], *curves[row]):+.1f}") for column in encoders]
        print(f"| {row} | " + " | ".join(cells) + " |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--effnet-images", type=int, default=2, help="scikit-image photos for EfficientNet features")
    parser.add_argument("--effnet-qps", default="22,27,32,37", help="QPs for the 280×224 EfficientNet pictures")
    parser.add_argument("--weights", default=str(REPO.parent / "shared/data/weights/yolov5n_coco.safetensors"))
    parser.add_argument("--coco", default=str(REPO.parent / "shared/data/coco-mini"))
    parser.add_argument("--yolo-images", type=int, default=1, help="coco-mini images for YOLOv5n P3-P5 frames")
    parser.add_argument("--yolo-qps", default="27,32,37,42", help="QPs for the 640×1120 YOLOv5n frames")
    parser.add_argument("--presets", default="faster,medium", help="VVenC presets")
    args = parser.parse_args(argv)

    import torch
    torch.set_num_threads(1)
    encoders = available_encoders(args.presets.split(","))
    print(f"# Inner codecs of the feature anchor ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs)")
    run_kind("EfficientNet-Lite0 1280×7×7 (280×224 picture)", effnet_features(args.effnet_images), encoders,
             [int(q) for q in args.effnet_qps.split(",")])
    if args.yolo_images > 0 and os.path.isfile(args.weights) and os.path.isdir(args.coco):
        run_kind("YOLOv5n P3–P5 (640×1120 picture)", yolo_features(args.weights, args.coco, args.yolo_images),
                 encoders, [int(q) for q in args.yolo_qps.split(",")])
    elif args.yolo_images > 0:
        print("\n(YOLOv5n frames left out: --weights or --coco not found)")


if __name__ == "__main__":
    main()
