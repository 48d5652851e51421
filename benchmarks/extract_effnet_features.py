"""Extract EfficientNet-Lite features (backbone or blocks split) of an image folder to a cache.

Writes, into --out: one float32 ``<stem>.npy`` per image (C×H×W, 1280×7×7 for
Lite0), ``labels.json`` (stem -> ground-truth class index) and
``uncompressed_top1.json`` (stem -> class predicted from the uncompressed
features). The folder must hold a ``labels.csv`` (file, class_index, wnid, name).

    python benchmarks/extract_effnet_features.py \
        --data shared/data/imagenet-dev --out /tmp/fcrs_feats/imagenet_dev_lite0
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from ctc.datasets import read_labels_csv  # noqa: E402
from ctc.tasks.efficientnet_lite import EfficientNetLiteSplit  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="image folder with labels.csv")
    ap.add_argument("--out", required=True, help="cache folder to write")
    ap.add_argument("--model", default="efficientnet-lite0", help="efficientnet-lite0|1|2")
    ap.add_argument("--batch", type=int, default=25, help="images per forward pass")
    ap.add_argument("--split", default="backbone", help="split point: backbone (1280×7×7) or blocks (320×7×7)")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    net = EfficientNetLiteSplit(args.model, split=args.split)
    items = read_labels_csv(args.data)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    labels, top1 = {}, {}
    correct = 0
    n_zero = n_total = 0
    fmin, fmax, fsum, fsq = np.inf, -np.inf, 0.0, 0.0
    for i in range(0, len(items), args.batch):
        chunk = items[i : i + args.batch]
        x = torch.stack([net.preprocess(Image.open(p)) for p, _ in chunk])
        with torch.no_grad():
            feats = net.front(x)
            pred = net.back(feats).argmax(1).tolist()
        for (path, label), f, c in zip(chunk, feats.numpy(), pred):
            f = np.ascontiguousarray(f, dtype=np.float32)
            np.save(out / f"{path.stem}.npy", f)
            labels[path.stem], top1[path.stem] = label, int(c)
            correct += int(c == label)
            n_zero += int((f == 0).sum())
            n_total += f.size
            fmin, fmax = min(fmin, float(f.min())), max(fmax, float(f.max()))
            fsum += float(f.sum(dtype=np.float64))
            fsq += float((f.astype(np.float64) ** 2).sum())
        print(f"\r{min(i + args.batch, len(items))}/{len(items)}", end="", file=sys.stderr)
    print(file=sys.stderr)

    (out / "labels.json").write_text(json.dumps(labels, indent=0))
    (out / "uncompressed_top1.json").write_text(json.dumps(top1, indent=0))
    stats = {
        "model": net.name,
        "images": len(items),
        "feature_shape": list(net.feature_shape),
        "top1": correct / max(1, len(items)),
        "zero_fraction": n_zero / max(1, n_total),
        "min": fmin,
        "max": fmax,
        "mean": fsum / max(1, n_total),
        "rms": (fsq / max(1, n_total)) ** 0.5,
        "seconds": time.perf_counter() - t0,
    }
    print(json.dumps(stats, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
