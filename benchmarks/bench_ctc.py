"""CTC runner throughput and memory: `ctc run` on growing image counts, worker counts and backends.

For each (images, workers, backend) it runs `ctc run` in a fresh interpreter on a fresh run
folder (the feature cache is warmed first, so only coding and evaluation are timed) and
prints wall time, records per second, the speed-up of the workers, the peak resident
memory of the parent (the process that writes the records) and of the largest process
(the parent or a local pool worker; Ray's actors belong to Ray's processes, not to the
parent, and are not counted). Peak memory should not grow with the number of images:
records stream to disk and each worker holds one image's features.

The Ray backend (`--backend ray`, a local Ray instance started by the run itself, one actor
per worker) runs beside the local pool when Ray is installed. Its rows add the time it
costs over the local pool at the same images and workers, per record; the closing lines
split that into a fixed start-up (Ray, the actors' task networks) and a per-record cost,
from the smallest and the largest image count.

--check-identical N runs the shipped imagenet_effnet_lite0 on N images with each backend
(two workers each, separate feature caches) and compares every record, timing fields
excepted; exit status 1 when any differs. ../shared/tools/vvc/bin joins PATH when present
(its VVC anchor), as in `make test`.

    .venv/bin/python benchmarks/bench_ctc.py [--data ../shared/data/imagenet-dev] [--counts 25,50,100,200]
        [--workers 1,2] [--backends local,ray] [--check-identical 25]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
VVC_BIN = SHARED / "tools" / "vvc" / "bin"

# The token-wise tools of imagenet_effnet_lite0 at two rate points (no external codecs: this
# measures the runner, not x265).
TOOLS = {"uniform": {"cfg": "cfg/uniform.cfg", "rate_points": [64, 76]},
         "featjnd": {"cfg": "cfg/featjnd.cfg", "rate_points": [64, 76]}}


def write_config(folder):
    raw = yaml.safe_load((REPO / "ctc" / "cfg" / "imagenet_effnet_lite0.yaml").read_text())
    raw.update(name="bench_ctc", tools=TOOLS, anchor="uniform")
    raw["report"].update(bootstrap=0, baselines=[])      # its baselines are tools this config drops
    path = Path(folder) / "bench_ctc.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def ctc_run_args(config, data, out, cache, images, workers, backend):
    return ["run", str(config), "--data", str(data), "--limit", str(images), "--workers", str(workers),
            "--out", str(out), "--cache", str(cache), "--backend", backend, "--no-progress", "--no-report"]


def run_here(args):
    """(wall seconds, records written) of `ctc` called in this process; exits on failure."""
    sys.path.insert(0, str(REPO))
    from ctc.cli import main

    printed, errors = io.StringIO(), io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(errors):
        status = main(args)
    wall = time.perf_counter() - start
    if status != 0:
        sys.exit(f"bench_ctc: ctc {' '.join(args)} failed: {errors.getvalue().strip()}")
    return wall, int(printed.getvalue().split(" records written")[0].rsplit(" ", 1)[-1])


def measure(args):
    """(wall s, records, parent peak MiB, largest process peak MiB) of one `ctc run` in a fresh
    interpreter: ru_maxrss is a running maximum, so every measurement gets its own."""
    probe = subprocess.run([sys.executable, __file__, "--single", *args], capture_output=True, text=True, cwd=REPO)
    if probe.returncode != 0:
        sys.exit(probe.stderr.strip())
    wall, records, parent, largest = (float(v) for v in probe.stdout.split())
    return wall, int(records), parent, largest


def throughput(args):
    counts = [int(c) for c in args.counts.split(",")]
    workers = [int(w) for w in args.workers.split(",")]
    backends = args.backends.split(",")
    if "ray" in backends and importlib.util.find_spec("ray") is None:
        print("Ray is not installed (pip install -e '.[distributed]'): local pool only")
        backends = [b for b in backends if b != "ray"]
    with tempfile.TemporaryDirectory() as folder:
        config, cache = write_config(folder), Path(folder) / "cache"
        measure(ctc_run_args(config, args.data, Path(folder) / "warm", cache, max(counts), max(workers), "local"))
        print(f"ctc run, token-wise tools at 2 rate points each ({sum(len(t['rate_points']) for t in TOOLS.values())} "
              f"records per image + the reference), warm feature cache, no report, {os.cpu_count()} CPUs")
        print(f"{'images':>6} {'workers':>7} {'backend':>7} {'records':>7} {'wall s':>7} {'rec/s':>6} {'speed-up':>8} "
              f"{'parent MiB':>10} {'largest MiB':>11} {'vs local':>9} {'ms/rec':>7}")
        walls = {}
        for count in counts:
            for backend in backends:
                base = None
                for n in workers:
                    out = Path(folder) / f"run_{count}_{n}_{backend}"
                    wall, records, parent, largest = measure(ctc_run_args(config, args.data, out, cache, count, n,
                                                                        backend))
                    walls[count, n, backend] = wall, records
                    base = base or wall
                    extra = ms = ""
                    if backend != "local" and (count, n, "local") in walls:
                        over = wall - walls[count, n, "local"][0]
                        extra, ms = f"{over:+8.1f}s", f"{1000 * over / records:7.0f}"
                    print(f"{count:>6} {n:>7} {backend:>7} {records:>7} {wall:>7.1f} {records / wall:>6.1f} "
                          f"{base / wall:>7.2f}× {parent:>10.0f} {largest:>11.0f} {extra:>9} {ms:>7}",
                          flush=True)
        for backend in (b for b in backends if b != "local"):
            for n in workers:
                print(overhead_line(walls, counts, n, backend))


def overhead_line(walls, counts, workers, backend):
    """The backend's cost over the local pool as start-up + per record, from the extreme counts."""
    small, large = min(counts), max(counts)
    if small == large or (small, workers, "local") not in walls:
        return f"{backend}, {workers} workers: one image count, no split of start-up and per-record cost"
    over = {c: walls[c, workers, backend][0] - walls[c, workers, "local"][0] for c in (small, large)}
    records = {c: walls[c, workers, backend][1] for c in (small, large)}
    per_record = (over[large] - over[small]) / (records[large] - records[small])
    start_up = over[small] - per_record * records[small]
    return (f"{backend}, {workers} worker{'s' * (workers != 1)}: start-up {start_up:+.1f} s, "
            f"{1000 * per_record:+.1f} ms per record over the local pool ({small}→{large} images)")


def check_identical(args):
    """Records of imagenet_effnet_lite0 on N images, local pool vs Ray: equal but for timing fields."""
    sys.path.insert(0, str(REPO))
    from ctc.config import load_config
    from ctc.records import TIMING_FIELDS, records_without_timing

    if VVC_BIN.is_dir():
        os.environ["PATH"] = f"{VVC_BIN}{os.pathsep}{os.environ['PATH']}"
    tools = [tool.name for tool in load_config("imagenet_effnet_lite0").tools]
    with tempfile.TemporaryDirectory() as folder:
        runs = {}
        for backend in ("local", "ray"):
            out = Path(folder) / backend
            wall, written = measure(ctc_run_args("imagenet_effnet_lite0", args.data, out, Path(folder) / f"cache_{backend}",
                                                 args.check_identical, 2, backend))[:2]
            runs[backend] = records_without_timing(out, tools)
            print(f"{backend:>5}: {written} records in {wall:.1f} s ({out.name}, own feature cache)")
        differing = [(tool, a.get("image"), a.get("point")) for tool in runs["local"]
                     for a, b in zip(runs["local"][tool], runs["ray"][tool]) if a != b]
        counts = {backend: sum(map(len, records.values())) for backend, records in runs.items()}
        same_keys = all(len(runs["local"][t]) == len(runs["ray"][t]) for t in runs["local"])
        print(f"imagenet_effnet_lite0, {args.check_identical} images, {counts['local']} / {counts['ray']} records "
              f"(local / ray), {len(tools)} tools + reference, compared without {', '.join(TIMING_FIELDS)}: "
              + ("identical" if same_keys and not differing else f"DIFFERENT ({len(differing)} records, first "
                 f"{differing[:3]})"))
        return 0 if same_keys and not differing else 1


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED / "data" / "imagenet-dev")
    parser.add_argument("--counts", default="25,50,100,200", help="image counts (default 25,50,100,200)")
    parser.add_argument("--workers", default="1,2", help="worker counts (default 1,2)")
    parser.add_argument("--backends", default="local,ray", help="local, ray or both (default local,ray)")
    parser.add_argument("--check-identical", type=int, metavar="N",
                        help="instead: imagenet_effnet_lite0 on N images with each backend, records compared")
    args = parser.parse_args(argv)
    if args.check_identical:
        return check_identical(args)
    throughput(args)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--single":
        wall, records = run_here(sys.argv[2:])
        parent = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024    # the pool's workers
        print(wall, records, parent, max(parent, children))
        sys.exit(0)
    sys.exit(main())
