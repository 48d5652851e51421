"""`ctc run --backend ray` on a Ray cluster of two nodes on this machine (ray.cluster_utils):
the local backend's records exactly, a worker killed mid-run survived, an interrupted run
resumed. One cluster serves the whole module (Ray takes seconds to start)."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from ctc.config import load_config
from ctc.ray_backend import EXIT_HOOK, LOOPBACK_ONLY
from ctc.records import RecordStore, records_without_timing
from tests.ctc.test_run import SMOKE_RECORDS, interrupt_after_first_record, needs_hevc
from tests.helpers import REPO

pytestmark = [needs_hevc,            # the smoke config's anchors need x265 and libde265
              pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                                 reason="Ray is not installed: the 'distributed' extra "
                                        "(pip install -e '.[distributed]'; make test installs it)")]
TOOLS = [tool.name for tool in load_config("smoke").tools]
# The cluster's services and the runs that join it listen on the loopback address only.
RAY_ENV = {**os.environ, LOOPBACK_ONLY: "0"}
# The cluster lives in a process of its own, so this one never imports Ray (its memory is
# measured by other tests).
CLUSTER_HOST = """
import sys
from ray.cluster_utils import Cluster
node = {"num_cpus": 1, "object_store_memory": 100 * 2**20}
cluster = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
cluster.add_node(**node)
cluster.wait_for_nodes()
print(cluster.address, flush=True)
sys.stdin.read()              # until the tests close stdin
cluster.shutdown()
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """The address of a Ray cluster of two nodes with one CPU each, on this machine."""
    log = tmp_path_factory.mktemp("cluster") / "stderr.txt"
    with open(log, "w") as stderr:
        host = subprocess.Popen([sys.executable, "-c", CLUSTER_HOST], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=stderr, text=True, env=RAY_ENV)
    address = host.stdout.readline().strip()
    if not address:
        host.kill()
        pytest.fail(f"the test cluster did not start: {log.read_text()[-2000:]}")
    yield address
    host.stdin.close()
    host.wait(timeout=120)


def ctc(*args):
    return subprocess.run([sys.executable, "-m", "ctc.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env=RAY_ENV)


@pytest.fixture(scope="module")
def local_records(tmp_path_factory):
    """The smoke config's records from the local backend (its own feature cache)."""
    folder = tmp_path_factory.mktemp("local")
    done = ctc("run", "smoke", "--workers", "1", "--out", str(folder / "run"), "--cache", str(folder / "cache"),
               "--no-progress", "--no-report")
    assert done.returncode == 0, done.stderr
    return records_without_timing(folder / "run", TOOLS)


@pytest.fixture(scope="module")
def ray_cache(tmp_path_factory):
    """One feature cache for the module's Ray runs: a path both nodes reach."""
    return tmp_path_factory.mktemp("ray_cache")


def ray_run_args(cluster, out, cache, *extra):
    return [sys.executable, "-m", "ctc.cli", "run", "smoke", "--backend", "ray", "--address", cluster,
            "--out", str(out), "--cache", str(cache), "--no-progress", "--no-report", *extra]


def ctc_ray(cluster, out, cache, *extra, env=None):
    return subprocess.run(ray_run_args(cluster, out, cache, *extra), cwd=REPO, capture_output=True, text=True,
                          timeout=300, env={**RAY_ENV, **(env or {})})


def assert_each_record_once(out, local_records):
    store = RecordStore(out)
    for tool in TOOLS:
        keys = [(r["image"], r["point"]) for r in store.read(tool)]
        assert len(keys) == len(set(keys)), tool
    assert records_without_timing(out, TOOLS) == local_records


def test_two_nodes_write_the_records_of_the_local_backend(cluster, local_records, tmp_path, ray_cache):
    out = tmp_path / "run"
    done = ctc_ray(cluster, out, ray_cache, "--workers", "2")
    assert done.returncode == 0, done.stderr
    assert f"{SMOKE_RECORDS} records written" in done.stdout
    assert_each_record_once(out, local_records)
    (invocation,) = json.loads((out / "run.json").read_text())["runs"]
    assert invocation["backend"] == "ray" and invocation["workers"] == 2
    assert invocation["cluster"]["nodes"] == 2 and invocation["cluster"]["cpus"] == 2
    assert (ray_cache / "efficientnet-lite0_backbone").is_dir()        # --cache: the nodes' shared path


def test_a_worker_killed_mid_run_loses_no_image(cluster, local_records, tmp_path, ray_cache):
    out = tmp_path / "run"
    done = ctc_ray(cluster, out, ray_cache, "--workers", "2", env={EXIT_HOOK: "2"})   # dies on its 2nd image
    assert done.returncode == 0, done.stderr
    assert f"{SMOKE_RECORDS} records written" in done.stdout
    assert_each_record_once(out, local_records)
    (invocation,) = json.loads((out / "run.json").read_text())["runs"]
    assert invocation["cluster"]["workers_replaced"] == 1


def test_an_interrupted_run_resumes(cluster, local_records, tmp_path, ray_cache):
    """Ctrl-C: exit 130 and one line; the actors are gone (the rerun gets the cluster's two CPUs),
    and the same command writes exactly the missing records."""
    out = tmp_path / "run"
    args = ray_run_args(cluster, out, ray_cache, "--workers", "1")      # one image at a time: time to interrupt
    interrupt_after_first_record(args, out, env=RAY_ENV)
    before = sum(len(RecordStore(out).read(tool)) for tool in TOOLS + ["uncompressed"])
    assert 0 < before < SMOKE_RECORDS
    done = ctc_ray(cluster, out, ray_cache, "--workers", "2")
    assert done.returncode == 0, done.stderr
    assert f"{SMOKE_RECORDS - before} records written" in done.stdout
    assert_each_record_once(out, local_records)


def test_more_gpus_than_the_cluster_has_is_one_line(cluster, tmp_path, ray_cache):
    done = ctc_ray(cluster, tmp_path / "run", ray_cache, "--gpus-per-worker", "1")
    assert done.returncode == 1
    assert done.stderr.strip() == "ctc: error: --gpus-per-worker 1: the Ray cluster has 0 GPUs", done.stderr
