"""Image anchor (MPEG-VCM track 2 style): the input image is coded with a standard codec,
decoded, and the whole network runs on the decoded image.

    RGB image (as read from disk) ─► YCbCr, BT.601 full range (JFIF), numpy ─► 4:2:0 (2×2 means)
    ─► x265 intra, 8 bits, one picture at QP ─► libde265-dec265 ─► chroma repeated 2×2
    ─► RGB ─► the network's own preprocessing ─► whole network ─► prediction

Rate: bits of the HEVC stream per input pixel, bpp = 8 · len(stream) / (W · H) of the
image as read (before the network's resize and crop). The picture is padded by edge
replication to multiples of 8 (and at least 64 × 64, one x265 CTU); the decoded picture
is cropped back, so the crop size travels outside the HEVC stream (a few bits a real
system would signal in the conformance window; not counted).

x265 gets the feature anchor's flags (`--ipratio 1` so that --qp is the intra picture's
QP, `--no-info` so that no 2,200-byte version SEI is counted, one thread) with the 8-bit
4:2:0 still-picture profile, and `--range full --colormatrix bt470bg` to label the colour
conversion in the stream's VUI.

    python -m ctc.image_anchor --data ../shared/data/imagenet-dev --qps 22,27,32,37,42,47 --limit 50

Its table comes from a CTC run of the image anchor alone (ctc/runner.py, the records' bpp,
image_psnr, predictions and times), so it is what `ctc run` reports for this tool.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.codepoints import InnerCodec
from common.tools.video_anchor.inner_decoder import decode_picture, decoder_version
from encoder.tools.video_anchor.inner_encoder import encode_picture

# BT.601 full range (JFIF): Y, Cb, Cr in 0..255 from R, G, B in 0..255.
RGB_TO_YCBCR = np.array([[0.299, 0.587, 0.114],
                         [-0.168735892, -0.331264108, 0.5],
                         [0.5, -0.418687589, -0.081312411]])
YCBCR_TO_RGB = np.linalg.inv(RGB_TO_YCBCR)
CHROMA_OFFSET = np.array([0.0, 128.0, 128.0])
X265_IMAGE_ARGS = ("--range", "full", "--colormatrix", "bt470bg")
MIN_PICTURE_SIZE = 64
ALIGNMENT = 8


@dataclass
class CodedImage:
    decoded: np.ndarray       # H×W×3 uint8 RGB, the input's size
    bits: int                 # HEVC stream bits
    bpp: float                # bits per input pixel
    encode_seconds: float
    decode_seconds: float
    encoder_info: str


def rgb_to_ycbcr(rgb):
    """H×W×3 uint8 RGB -> H×W×3 float64 Y, Cb, Cr (BT.601 full range, not rounded)."""
    return rgb.astype(np.float64) @ RGB_TO_YCBCR.T + CHROMA_OFFSET


def ycbcr_to_rgb(ycbcr):
    """H×W×3 Y, Cb, Cr -> H×W×3 uint8 RGB (rounded, clipped)."""
    rgb = (ycbcr - CHROMA_OFFSET) @ YCBCR_TO_RGB.T
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def padded_size(samples):
    return max(MIN_PICTURE_SIZE, -(-samples // ALIGNMENT) * ALIGNMENT)


def to_planes_420(rgb):
    """[Y, Cb, Cr] uint8 planes of the image padded by edge replication; chroma as 2×2 means."""
    height, width = rgb.shape[:2]
    padded = np.pad(rgb, ((0, padded_size(height) - height), (0, padded_size(width) - width), (0, 0)), mode="edge")
    ycbcr = rgb_to_ycbcr(padded)
    luma = ycbcr[..., 0]
    h, w = luma.shape
    chroma = ycbcr[..., 1:].reshape(h // 2, 2, w // 2, 2, 2).mean(axis=(1, 3))
    to_u8 = lambda plane: np.clip(np.rint(plane), 0, 255).astype(np.uint8)
    return [to_u8(luma), to_u8(chroma[..., 0]), to_u8(chroma[..., 1])]


def from_planes_420(planes, height, width):
    """H×W×3 uint8 RGB from decoded [Y, Cb, Cr] planes: chroma repeated 2×2, then cropped."""
    luma, cb, cr = (p.astype(np.float64) for p in planes)
    up = lambda plane: plane.repeat(2, axis=0).repeat(2, axis=1)[:luma.shape[0], :luma.shape[1]]
    ycbcr = np.stack([luma, up(cb), up(cr)], axis=-1)[:height, :width]
    return ycbcr_to_rgb(ycbcr)


def code_image(rgb, qp):
    """Code an H×W×3 uint8 RGB image with x265 at `qp`, decode it with libde265-dec265."""
    height, width = rgb.shape[:2]
    planes = to_planes_420(rgb)
    start = time.perf_counter()
    inner = encode_picture("hevc", planes, 8, qp, chroma_format="420", extra_args=X265_IMAGE_ARGS)
    encode_seconds = time.perf_counter() - start
    start = time.perf_counter()
    decoded = decode_picture(InnerCodec.HEVC, inner.data, planes[0].shape[1], planes[0].shape[0], 8, "420")
    decode_seconds = time.perf_counter() - start
    bits = 8 * len(inner.data)
    return CodedImage(decoded=from_planes_420(decoded, height, width), bits=bits, bpp=bits / (height * width),
                      encode_seconds=encode_seconds, decode_seconds=decode_seconds, encoder_info=inner.encoder_info)


def psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    repo = Path(__file__).resolve().parents[1]
    parser.add_argument("--data", type=Path, default=repo.parent / "shared" / "data" / "imagenet-dev",
                        help="image folder with labels.csv (default ../shared/data/imagenet-dev)")
    parser.add_argument("--model", default="efficientnet-lite0", help="classifier (default efficientnet-lite0)")
    parser.add_argument("--qps", default="22,27,32,37,42,47", help="x265 QPs (default 22,27,32,37,42,47)")
    parser.add_argument("--limit", type=int, help="use only the first N images (default: all)")
    parser.add_argument("--workers", type=int, default=1, help="runner workers (default 1)")
    parser.add_argument("--out", type=Path, help="run folder, kept and resumable (default: a temporary folder)")
    args = parser.parse_args(argv)
    from common.errors import exit_code_of

    return exit_code_of("image_anchor", lambda: _table(args))


def _table(args):
    import json
    import tempfile

    from ctc.records import REFERENCE_TOOL, RecordStore
    from ctc.runner import run_generated

    qps = [int(q) for q in args.qps.split(",")]
    raw = {"name": "image_anchor", "dataset": {"kind": "image_folder"},
           "task": {"network": args.model, "split": "backbone"},
           "tools": {"image_anchor": {"kind": "image", "rate_points": qps}}, "anchor": "image_anchor",
           "report": {"metrics": ["top1", "agreement"], "bootstrap": 0}}
    with tempfile.TemporaryDirectory() as scratch:
        out = args.out or Path(scratch)
        _, _, wall, _ = run_generated(raw, out, args.data, workers=args.workers, limit=args.limit,
                                      progress=sys.stderr.isatty())
        store = RecordStore(out)
        reference = {r["image"]: r for r in store.read(REFERENCE_TOOL)}
        coded = {(json.loads(r["point"])["QP"], r["image"]): r for r in store.read("image_anchor")}
    images = sorted(reference)
    labels = np.array([reference[i]["label"] for i in images])
    uncompressed = np.array([reference[i]["prediction"]["top5"][0] for i in images])
    from encoder.tools.video_anchor.inner_encoder import encoder_version

    print(f"Image anchor: {len(images)} images of {args.data}, {args.model}, {encoder_version('hevc')} / "
          f"{decoder_version(InnerCodec.HEVC)}, 8-bit 4:2:0 intra, {wall:.0f} s")
    print(f"uncompressed: top-1 {np.mean(uncompressed == labels) * 100:.1f} %")
    print(f"{'QP':>3} {'bpp':>7} {'PSNR dB':>8} {'top-1 %':>8} {'agree %':>8} {'enc ms':>7} {'dec ms':>7}")
    for qp in qps:
        rows = [coded[qp, i] for i in images]
        predicted = np.array([r["prediction"]["top5"][0] for r in rows])
        mean = {key: np.mean([r[key] for r in rows]) for key in ("bpp", "image_psnr", "encode_s", "decode_s")}
        print(f"{qp:>3} {mean['bpp']:>7.4f} {mean['image_psnr']:>8.2f} {np.mean(predicted == labels) * 100:>8.1f} "
              f"{np.mean(predicted == uncompressed) * 100:>8.1f} {mean['encode_s'] * 1000:>7.1f} "
              f"{mean['decode_s'] * 1000:>7.1f}")
    print("(bpp = HEVC stream bits / input pixels; PSNR over RGB at the input size; agree = same top-1 as the "
          "uncompressed image)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
