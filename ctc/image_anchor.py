"""Image anchor table (MPEG-VCM track 2 style): the image anchor alone (ctc/image_codec.py:
x265 intra on the photo, libde265, the whole network on the decoded picture) run through the
CTC runner over an image folder, one row per QP.

    python -m ctc.image_anchor --data ../shared/data/imagenet-dev --qps 22,27,32,37,42,47 --limit 50

Its table comes from a CTC run of the image anchor alone (ctc/runner.py, the records' bpp,
image_psnr, predictions and times), so it is what `ctc run` reports for this tool.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from common.codepoints import InnerCodec
from common.tools.video_anchor.inner_decoder import decoder_version


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
