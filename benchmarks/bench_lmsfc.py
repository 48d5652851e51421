"""L-MSFC per 640×640 image: encode and decode wall time, peak memory, decoder start-up, and
decoding with numpy vs torch (identical outputs), on one core.

Inputs are YOLOv5n P3–P5 pyramids (1×64×80×80, 1×128×40×40, 1×256×20×20) of the first
--images annotated coco-mini images, from ../shared/data (the front runs once in this process).
Every timed phase runs in a fresh child process with OMP/OpenBLAS/MKL threads = 1 (--threads to
change it): `encode` = encode_features (FENet + hyper-analysis in float numpy, the integer
hyper-synthesis and DRNet for the reconstruction, entropy coding); `decode numpy` / `decode torch`
= decode_stream with the backend (torch: its import excluded, shown apart). Peak memory is the
child's VmHWM after the timed calls, and its increase over the VmHWM before them. Start-up:
`python -c "import decoder.decoder"` and the first model load (the shipped model's file read and
checks). Targets (encode and decode ≤ 0.25 s per image on one core) are printed with
PASS/MISS.

    .venv/bin/python benchmarks/bench_lmsfc.py [--images 5] [--rate-index 0] [--models yolov5n]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
WEIGHTS = DATA / "weights" / "yolov5n_coco.safetensors"
ENCODE_TARGET_S, DECODE_TARGET_S = 0.25, 0.25      # issue 20: each ≤ 0.25 s per 640×640 image

CHILD = r"""
import json, sys, time, hashlib
import numpy as np
def vm_hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
phase, folder, options = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
files = sorted(__import__("glob").glob(folder + "/*.npz"))
out = {"seconds": []}
if phase == "encode":
    from encoder.encoder import encode_features
    from encoder.options import default_options
    opts = default_options(); opts.update(options)
    tensors = [dict(np.load(f)) for f in files]
    encode_features(tensors[0], opts)        # warm: model load, BLAS start
    before = vm_hwm()
    for f, t in zip(files, tensors):
        start = time.perf_counter(); result = encode_features(t, opts)
        out["seconds"].append(time.perf_counter() - start)
        open(f[:-4] + ".bin", "wb").write(result.stream)
        out.setdefault("bits", []).append(8 * len(result.stream))
else:
    backend = phase.split("-")[1]
    if backend == "torch":
        start = time.perf_counter(); import torch; out["torch_import_s"] = time.perf_counter() - start
    from decoder.decoder import decode_stream
    streams = [open(f[:-4] + ".bin", "rb").read() for f in files]
    decode_stream(streams[0], backend=backend)     # warm: model load
    before = vm_hwm()
    for s in streams:
        start = time.perf_counter(); decoded = decode_stream(s, backend=backend)
        out["seconds"].append(time.perf_counter() - start)
        assert all(c.ok for c in decoded.hash_checks)
        out.setdefault("md5", []).append(hashlib.md5(b"".join(np.ascontiguousarray(a).tobytes()
                                                             for a in decoded.tensors.values())).hexdigest())
out["peak_mb"], out["peak_increase_mb"] = vm_hwm(), vm_hwm() - before
print(json.dumps(out))
"""

STARTUP = r"""
import time; start = time.perf_counter()
import decoder.decoder
imported = time.perf_counter() - start
from common.tools.lmsfc.models import find_model
from encoder.tools.lmsfc.analysis import resolve_model
model = resolve_model(MODEL)
start = time.perf_counter(); find_model(model.hash_bytes); loaded = time.perf_counter() - start
print(imported, loaded)
"""


def pyramids(count):
    """The first `count` annotated coco-mini images' P3–P5, 1×C×H×W float32."""
    import torch
    from ctc.datasets import coco_paths
    from ctc.images import read_rgb
    from ctc.tasks.yolov5n import Yolov5n, letterbox, to_input

    torch.set_num_threads(2)
    net = Yolov5n(WEIGHTS).eval()
    images, annotations = coco_paths(DATA / "coco-mini", {"images": "val2017",
                                                         "annotations": "annotations/instances_val2017.json"})
    with open(annotations) as fh:
        names = sorted(entry["file_name"] for entry in json.load(fh)["images"])[:count]
    out = []
    for name in names:
        boxed, _ = letterbox(read_rgb(images / name))
        with torch.no_grad():
            levels = net.front(to_input(boxed))
        out.append({key: value.numpy() for key, value in levels.items()})
    return names, out


def child(phase, folder, options, threads):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads), PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, "-c", CHILD, phase, folder, json.dumps(options)], env=env,
                            capture_output=True, text=True, cwd=REPO)
    if result.returncode:
        sys.exit(f"bench_lmsfc: {phase} failed:\n{result.stderr}")
    return json.loads(result.stdout.splitlines()[-1])


def median_runs(code, runs, threads):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=str(REPO))
    values = []
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=REPO)
        values.append([float(v) for v in out.stdout.split()])
    return [statistics.median(column) for column in zip(*values)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5)
    parser.add_argument("--rate-index", type=int, default=0)
    parser.add_argument("--models", default="yolov5n", help="LmsfcModels (e.g. the ablation's three models)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if not WEIGHTS.is_file():
        sys.exit(f"bench_lmsfc: needs {WEIGHTS} and the coco-mini images beside the project")

    names, levels = pyramids(args.images)
    options = {"Tool": "lmsfc", "LmsfcModels": args.models, "QP": args.rate_index}
    with tempfile.TemporaryDirectory() as folder:
        for i, pyramid in enumerate(levels):
            np.savez(Path(folder) / f"{i:03d}.npz", **pyramid)
        encode = child("encode", folder, options, args.threads)
        decode_numpy = child("decode-numpy", folder, options, args.threads)
        decode_torch = child("decode-torch", folder, options, args.threads)
    first_model = args.models.split(",")[0]
    import_s, load_s = median_runs(STARTUP.replace("MODEL", repr(first_model)), 5, args.threads)

    bpp = [b / (640 * 640) for b in encode["bits"]]
    identical = decode_numpy["md5"] == decode_torch["md5"]
    print(f"L-MSFC {args.models}, rate index {args.rate_index}, {len(names)} images (640×640 letterboxed "
          f"YOLOv5n P3–P5), {args.threads} thread(s)")
    print(f"  rate: {statistics.mean(bpp):.4f} bpp mean ({min(bpp):.4f}–{max(bpp):.4f})")
    rows = [("encode", encode, ENCODE_TARGET_S), ("decode numpy", decode_numpy, DECODE_TARGET_S),
            ("decode torch", decode_torch, DECODE_TARGET_S)]
    print(f"  {'phase':<14}{'median s':>10}{'max s':>8}{'peak MB':>9}{'+MB':>7}  target")
    for label, result, target in rows:
        seconds = result["seconds"]
        verdict = "PASS" if statistics.median(seconds) <= target else "MISS"
        print(f"  {label:<14}{statistics.median(seconds):>10.3f}{max(seconds):>8.3f}{result['peak_mb']:>9.0f}"
              f"{result['peak_increase_mb']:>7.0f}  ≤ {target:g} s {verdict}")
    print(f"  torch import (excluded above): {decode_torch['torch_import_s']:.2f} s")
    print(f"  decoder start-up: import decoder.decoder {import_s * 1000:.0f} ms, first model load "
          f"{load_s * 1000:.0f} ms (medians of 5 fresh processes)")
    print(f"  numpy and torch outputs identical on every image: {identical}")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
