"""CTC runner throughput and memory: `ctc run` on growing image counts and worker counts.

For each (images, workers) it runs the console script in a fresh process on a fresh run
folder (the feature cache is warmed first, so only coding and evaluation are timed),
and prints wall time, records per second, the speed-up of the workers, and the peak
resident memory of the largest process (the parent or one worker, from
getrusage(RUSAGE_CHILDREN)). Peak memory should not grow with the number of images:
records stream to disk and each worker holds one image's features.

    .venv/bin/python benchmarks/bench_ctc.py [--data ../shared/data/imagenet-dev] [--counts 25,50,100,200]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]

# The token-wise tools of imagenet_effnet_lite0 at two rate points (no external codecs: this
# measures the runner, not x265).
TOOLS = {"uniform": {"cfg": "cfg/uniform.cfg", "rate_points": [64, 76]},
         "featjnd": {"cfg": "cfg/featjnd.cfg", "rate_points": [64, 76]}}


def write_config(folder):
    raw = yaml.safe_load((REPO / "ctc" / "cfg" / "imagenet_effnet_lite0.yaml").read_text())
    raw.update(name="bench_ctc", tools=TOOLS, anchor="uniform")
    raw["report"]["bootstrap"] = 0
    path = Path(folder) / "bench_ctc.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def run_once(config, data, out, cache, images, workers):
    """(wall seconds, records, peak RSS MiB of the largest process) of one `ctc run` in a child process."""
    command = [sys.executable, "-m", "ctc.cli", "run", str(config), "--data", str(data), "--limit", str(images),
               "--workers", str(workers), "--out", str(out), "--cache", str(cache), "--no-progress", "--no-report"]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"bench_ctc: ctc run failed: {done.stderr.strip()}")
    records = int(done.stdout.split(" records written")[0].rsplit(" ", 1)[-1])
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return wall, records, peak


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "imagenet-dev")
    parser.add_argument("--counts", default="25,50,100,200", help="image counts (default 25,50,100,200)")
    parser.add_argument("--workers", default="1,2", help="worker counts (default 1,2)")
    args = parser.parse_args(argv)
    counts = [int(c) for c in args.counts.split(",")]
    workers = [int(w) for w in args.workers.split(",")]
    with tempfile.TemporaryDirectory() as folder:
        config, cache = write_config(folder), Path(folder) / "cache"
        run_once(config, args.data, Path(folder) / "warm", cache, max(counts), max(workers))   # fill the cache
        print(f"ctc run, token-wise tools at 2 rate points each ({sum(len(t['rate_points']) for t in TOOLS.values())} "
              "records per image + the reference), warm feature cache, no report")
        print(f"{'images':>6} {'workers':>7} {'records':>7} {'wall s':>7} {'rec/s':>6} {'speed-up':>8} "
              f"{'peak MiB':>8}")
        for count in counts:
            base = None
            for n in workers:
                # peak RSS from RUSAGE_CHILDREN is a running maximum: measure each in its own interpreter
                probe = subprocess.run([sys.executable, __file__, "--single", str(config), str(args.data),
                                        str(Path(folder) / f"run_{count}_{n}"), str(cache), str(count), str(n)],
                                       capture_output=True, text=True, cwd=REPO)
                if probe.returncode != 0:
                    sys.exit(probe.stderr.strip())
                wall, records, peak = (float(v) for v in probe.stdout.split())
                base = base or wall
                print(f"{count:>6} {n:>7} {int(records):>7} {wall:>7.1f} {records / wall:>6.1f} "
                      f"{base / wall:>7.2f}× {peak:>8.0f}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--single":
        config, data, out, cache, images, n = sys.argv[2:]
        wall, records, peak = run_once(config, data, out, cache, int(images), int(n))
        print(wall, records, peak)
        sys.exit(0)
    sys.exit(main())
