"""`ctc run --backend ray` without a cluster: Ray is imported only when asked for, its absence
and bad options are one error line, and the parent writes a re-queued image's records once."""

import importlib.util
import subprocess
import sys

import pytest

from ctc.records import REFERENCE_TOOL, RecordStore
from ctc.runner import run
from tests.ctc.test_run import smoke_without_anchors
from tests.helpers import REPO


def python(code):
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)


def test_ctc_starts_without_importing_ray():
    done = python("import sys, ctc.cli, ctc.runner; ctc.cli.parse_args(['run', 'smoke']); "
                  "print('ray' in sys.modules)")
    assert done.returncode == 0 and done.stdout.strip() == "False", done.stderr


def test_backend_ray_without_ray_is_one_line(tmp_path):
    out = tmp_path / "run"
    done = python("import sys; sys.modules['ray'] = None\n"           # `import ray` now fails as if absent
                  "from ctc.cli import main\n"
                  f"sys.exit(main(['run', 'smoke', '--backend', 'ray', '--out', {str(out)!r}, '--no-progress']))")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "ctc: error: --backend ray needs Ray, which is not installed: pip install -e '.[distributed]'"]
    assert not out.exists()                                           # refused before any work


@pytest.mark.parametrize("args, message", [
    (["--address", "auto"], "--address and --gpus-per-worker need --backend ray"),
    (["--gpus-per-worker", "1"], "--address and --gpus-per-worker need --backend ray"),
    (["--backend", "ray", "--gpus-per-worker", "-1"], "--gpus-per-worker must not be negative"),
    (["--backend", "spark"], "argument --backend: invalid choice: 'spark'"),
])
def test_bad_backend_options(args, message, tmp_path):
    done = subprocess.run([sys.executable, "-m", "ctc.cli", "run", "smoke", "--out", str(tmp_path / "o"), *args],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and message in done.stderr.strip().splitlines()[-1], done.stderr


@pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                    reason="Ray is not installed: the 'distributed' extra (pip install -e '.[distributed]')")
def test_an_unreachable_cluster_is_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "ctc.cli", "run", "smoke", "--backend", "ray", "--address",
                           "127.0.0.1:1", "--out", str(tmp_path / "o"), "--no-progress"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "ctc: error: cannot connect to the Ray cluster at 127.0.0.1:1: Connection refused"], done.stderr


class TwiceBackend:
    """Delivers every job's records twice, as a re-queued image whose first worker answered late would."""

    cluster = {"workers": 1}

    def check_installed(self):
        pass

    def results(self, jobs, config, weights, cache_root, describe):
        for sample, want_reference, pairs in jobs:
            records = [{"image": sample.id, "tool": tool, "point": point, "bits": 8} for tool, point in pairs]
            if want_reference:
                records.append({"image": sample.id, "tool": REFERENCE_TOOL, "point": None})
            yield records
            yield records


def test_the_parent_writes_each_record_once(tmp_path):
    path, config = smoke_without_anchors(tmp_path)
    written, _, _ = run(config, path, tmp_path / "run", limit=2, progress=False, backend=TwiceBackend())
    assert written == 2 * (4 + 1)
    store = RecordStore(tmp_path / "run")
    for tool in ("uniform", "featjnd", REFERENCE_TOOL):
        keys = [(r["image"], r["point"]) for r in store.read(tool)]
        assert len(keys) == len(set(keys)) == 2 * (1 if tool == REFERENCE_TOOL else 2)
