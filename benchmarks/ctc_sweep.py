"""Benchmarks as CTC runs: a benchmark's settings become a CTC configuration, `ctc/runner.py`
codes, decodes and evaluates them (the local pool or Ray: the same records), and the
benchmark reads its numbers back from the records.

    settings ─► imagenet_config(tools) ─► runner.run (records, resumable with --out)
             ─► Sweep: per (tool, rate point) arrays over images: bits, nrmse, top-1, agreement, ...

So a benchmark measures what `ctc run` measures, with the runner's feature cache, its MD5
check of every decode and its workers, instead of a loop of its own.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def add_runner_arguments(parser, workers=2, run_folder_flag="--out"):
    """--workers, --backend, --address, the run folder (run_folder_flag, into args.run_folder) and
    --feature-cache."""
    parser.add_argument("--workers", type=int, default=workers, help=f"runner workers (default {workers})")
    parser.add_argument("--backend", choices=("local", "ray"), default="local",
                        help="runner backend: local worker processes (default) or a Ray cluster")
    parser.add_argument("--address", help="--backend ray: the cluster to join (default: a local instance)")
    parser.add_argument(run_folder_flag, dest="run_folder", type=Path, help="run folder, kept (an interrupted run resumes "
                        "there; default: a temporary folder)")
    parser.add_argument("--feature-cache", type=Path,
                        help="the runner's feature cache (default ~/.cache/fcrs/features)")


def imagenet_config(name, tools, description="", split="backbone", network="efficientnet-lite0"):
    """The raw CTC configuration: the image folder's labels, an EfficientNet-Lite `network` split at `split`."""
    return {"name": name, "description": description, "dataset": {"kind": "image_folder"},
            "task": {"network": network, "split": split}, "tools": tools,
            "anchor": next(iter(tools)), "report": {"metrics": ["top1", "agreement"], "bootstrap": 0}}


def runner_backend(args):
    """None (the local pool) or the RayBackend that add_runner_arguments' options ask for."""
    from common.errors import ConfigError

    if args.address and args.backend != "ray":
        raise ConfigError("--address names a Ray cluster: it needs --backend ray")
    if args.backend != "ray":
        return None
    from ctc.ray_backend import RayBackend

    return RayBackend(args.address, args.workers)


def run_sweep(raw, args, data, limit=None):
    """Runs (or resumes) the configuration with the runner; returns its Sweep."""
    from ctc.datasets import load_samples
    from ctc.runner import run_generated

    backend = runner_backend(args)
    with tempfile.TemporaryDirectory() as scratch:
        out = args.run_folder or Path(scratch) / "run"
        config, written, wall, mismatches = run_generated(
            raw, out, data, workers=args.workers, limit=limit, cache_root=args.feature_cache,
            progress=sys.stderr.isatty(), backend=backend)
        if mismatches:
            sys.exit(f"{mismatches} decodes did not match the encoder's MD5")
        # this run's images only: a kept --out folder may hold records of more
        images = [sample.id for sample in load_samples(config, Path(data) if data else None)[:limit or None]]
        return Sweep(config, out, wall, images, written)


def point_key(point):
    """The runner's key of a rate point: a QP, or a mapping of FCRS options."""
    return json.dumps(point if isinstance(point, dict) else {"QP": point}, sort_keys=True)


class Sweep:
    """The records of a run as arrays over images: reference fields, and field(tool, point, name)
    of the coded records (point: a QP or the rate point's options)."""

    def __init__(self, config, out, wall, images, written):
        from ctc.records import REFERENCE_TOOL, RecordStore

        store = RecordStore(out)
        wanted = set(images)
        reference = sorted((r for r in store.read(REFERENCE_TOOL) if r["image"] in wanted), key=lambda r: r["image"])
        self.config = config
        self.images = [r["image"] for r in reference]
        self.labels = np.array([r["label"] for r in reference])
        self.reference_top1 = np.array([r["prediction"]["top5"][0] for r in reference])
        self.feature_points = reference[0]["feature_points"]
        self.wall = wall              # of this invocation, which computed `written` records
        self.written = written
        self._coded = {}
        for tool in config.tools:
            for record in store.read(tool.name):
                self._coded[tool.name, record["point"], record["image"]] = record

    def field(self, tool, point, name, default=None):
        """The field of every image's record; `default` where a record lacks it (None: required)."""
        key = point_key(point)
        records = [self._coded[tool, key, image] for image in self.images]
        return np.array([record[name] if default is None else record.get(name, default) for record in records])

    def top1(self, tool, point):
        key = point_key(point)
        return np.array([self._coded[tool, key, image]["prediction"]["top5"][0] for image in self.images])

    def md5_checks(self):
        return sum(record["md5"] == "ok" for record in self._coded.values()), len(self._coded)
