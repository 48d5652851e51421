"""The CTC end to end: `ctc run smoke` through the console script, resuming, the feature cache,
records equal to what the `encode` app writes, COCO plumbing with random weights, error lines."""

import csv
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import yaml

from common.errors import ConfigError
from ctc.coco import load_coco
from ctc.config import load_config, parse_config
from ctc.records import REFERENCE_TOOL, RecordStore
from ctc.runner import run
from tests.helpers import REPO

HAVE_HEVC = shutil.which("x265") is not None and shutil.which("libde265-dec265") is not None
needs_hevc = pytest.mark.skipif(not HAVE_HEVC, reason="x265 / libde265-dec265 not installed (make system-tools)")
COCO_MINI = REPO.parent / "shared" / "data" / "coco-mini"
SMOKE_RECORDS = 4 * (2 + 2 + 2 + 2) + 4        # images × rate points of the 4 tools + references


def ctc(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "ctc.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def interrupt_after_first_record(args, out, env=None):
    """Starts `ctc run` (args), sends Ctrl-C once its first image's records are written and checks
    that it stopped as it must: exit 130 and one line, no traceback (skips if it finished first)."""
    import signal
    import time

    def ctrl_c_default():
        # a shell's background job ignores SIGINT and its children inherit that, so a test run
        # started with `&` would see a run that cannot be interrupted
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    process = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                               preexec_fn=ctrl_c_default)
    references = out / "records" / "uncompressed.jsonl"
    deadline = time.monotonic() + 120
    while not (references.is_file() and references.read_text().count("\n") >= 1) and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    if process.returncode == 0:
        pytest.skip("the run finished before the interrupt arrived")
    assert process.returncode == 130
    assert stderr.strip().splitlines()[-1].startswith("ctc: interrupted;") and "Traceback" not in stderr, stderr


def smoke_without_anchors(tmp_path):
    """The smoke config with only the token-wise tools (fast, and runs without x265)."""
    raw = yaml.safe_load((REPO / "ctc" / "cfg" / "smoke.yaml").read_text())
    raw["tools"] = {name: tool for name, tool in raw["tools"].items() if name in ("uniform", "featjnd")}
    raw["anchor"] = "uniform"
    path = tmp_path / "smoke_tokenwise.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path, parse_config(raw, str(path))


@needs_hevc
def test_smoke_end_to_end_through_the_console_script(tmp_path):
    out, cache = tmp_path / "run", tmp_path / "cache"
    done = ctc("run", "smoke", "--workers", "2", "--out", str(out), "--cache", str(cache), "--no-progress")
    assert done.returncode == 0, done.stderr
    assert f"{SMOKE_RECORDS} records written" in done.stdout
    assert "BD-rate uniform vs anchor" in done.stdout and "R_NL featjnd" in done.stdout
    records = {tool: RecordStore(out).read(tool) for tool in ("uniform", "featjnd", "anchor_hevc", "image_anchor")}
    assert sum(len(r) for r in records.values()) + 4 == SMOKE_RECORDS
    for tool in ("uniform", "featjnd", "anchor_hevc"):
        assert all(r["md5"] == "ok" for r in records[tool])          # every decode checked its MD5
    for rec in records["uniform"] + records["image_anchor"]:
        assert rec["bits"] > 0 and rec["bpfp"] == pytest.approx(rec["bits"] / 62720)
        assert rec["bpp"] == pytest.approx(rec["bits"] / rec["pixels"])
        assert 0 <= rec["nrmse"] and rec["encode_s"] > 0 and rec["decode_s"] > 0
        assert len(rec["prediction"]["top5"]) == 5
    # FeatJND's per-token steps are signalled: the record says what their map costs
    assert all(0 < rec["step_map_bits"] < rec["bits"] for rec in records["featjnd"])
    assert not any("step_map_bits" in rec for rec in records["uniform"])
    for name in ("report.md", "points.csv", "bd_rate.csv", "near_lossless.csv", "rate_accuracy.png", "complexity.csv",
                 "compressai_vision/uniform/SKIMAGE/skimage/qp56/evaluation/summary.csv",
                 "compressai_vision/image_anchor/SKIMAGE/skimage/qp47/evaluation/summary_complexity.csv"):
        assert (out / name).is_file(), name
    with open(out / "compressai_vision" / "uniform" / "SKIMAGE" / "skimage" / "qp74" / "evaluation" / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[:8] == ["Dataset", "qp", "avg_bpp", "end_accuracy", "nn_part_1", "encode", "decode",
                                 "nn_part_2"]
    assert rows[0]["qp"] == "74" and rows[0]["eval_criteria"] == "agreement"
    report = (out / "report.md").read_text()
    assert "## BD-rate vs the anchor" in report and "## Near-lossless rate" in report and "ctc run smoke" in report
    # the report is reproducible from the records alone
    again = ctc("report", str(out))
    assert again.returncode == 0, again.stderr
    assert (out / "report.md").read_text() == report


def test_resume_only_computes_missing_records(tmp_path):
    path, config = smoke_without_anchors(tmp_path)
    out, cache = tmp_path / "run", tmp_path / "cache"
    written, _, mismatches = run(config, path, out, workers=1, limit=2, cache_root=cache, progress=False)
    assert written == 2 * 4 + 2 and mismatches == 0
    written, _, _ = run(config, path, out, workers=1, limit=2, cache_root=cache, progress=False)
    assert written == 0                                         # nothing left to do
    # an interrupted write: the last record is cut in half
    records_file = out / "records" / "featjnd.jsonl"
    content = records_file.read_bytes()
    records_file.write_bytes(content[:-40])
    written, _, _ = run(config, path, out, workers=1, limit=3, cache_root=cache, progress=False)
    assert written == 1 + (4 + 1)                               # the cut record, then the third image
    store = RecordStore(out)
    keys = [(r["image"], r["point"]) for r in store.read("featjnd")]
    assert len(keys) == len(set(keys)) == 3 * 2
    assert len(store.read(REFERENCE_TOOL)) == 3
    state = json.loads((out / "run.json").read_text())
    assert [r["records_written"] for r in state["runs"]] == [10, 0, 6]


def test_feature_cache_is_shared_between_runs(tmp_path):
    path, config = smoke_without_anchors(tmp_path)
    cache = tmp_path / "cache"
    run(config, path, tmp_path / "a", workers=1, limit=2, cache_root=cache, progress=False)
    files = sorted((cache / "efficientnet-lite0_backbone").glob("*.npz"))
    assert len(files) == 2
    stamps = [f.stat().st_mtime_ns for f in files]
    run(config, path, tmp_path / "b", workers=1, limit=2, cache_root=cache, progress=False)
    assert [f.stat().st_mtime_ns for f in files] == stamps     # read, not recomputed
    a, b = (RecordStore(tmp_path / name).read("uniform") for name in ("a", "b"))
    assert [r["bits"] for r in a] == [r["bits"] for r in b]
    assert [r["nn_part_1_s"] for r in a] == [r["nn_part_1_s"] for r in b]
    # a benchmark reads the same entries back by sample, without running the front again
    from ctc.datasets import load_samples
    from ctc.feature_cache import FeatureCache

    class NoFront:
        cache_key = "efficientnet-lite0_backbone"

        def front(self, rgb):
            raise AssertionError("the cached features should have been read")

    sample = load_samples(config, None)[0]
    tensors, _, seconds = FeatureCache(cache, NoFront()).of_sample(sample)
    assert tensors[""].shape == (1280, 7, 7) and seconds == a[0]["nn_part_1_s"]


def test_records_match_the_encode_app(tmp_path):
    """The runner codes with the library the `encode` app uses: same bits for the same feature."""
    path, config = smoke_without_anchors(tmp_path)
    cache = tmp_path / "cache"
    run(config, path, tmp_path / "run", workers=1, limit=1, cache_root=cache, progress=False)
    record = next(r for r in RecordStore(tmp_path / "run").read("featjnd") if json.loads(r["point"])["QP"] == 60)
    (entry,) = (cache / "efficientnet-lite0_backbone").glob("*.npz")
    with np.load(entry) as stored:
        np.save(tmp_path / "feature.npy", stored["tensor:"])
    done = subprocess.run([sys.executable, "-m", "encoder.app", "-c", "cfg/featjnd.cfg", "--QP=60",
                           "-i", str(tmp_path / "feature.npy"), "-o", str(tmp_path / "feature.bin")],
                          cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert 8 * (tmp_path / "feature.bin").stat().st_size == record["bits"]


def test_a_run_folder_refuses_another_configuration(tmp_path):
    path, config = smoke_without_anchors(tmp_path)
    out = tmp_path / "run"
    run(config, path, out, workers=1, limit=1, cache_root=tmp_path / "cache", progress=False)
    for change in ({"tools": {"uniform": {"options": {"RoundingOffset": 0.3}}}},     # same points, other options
                   {"task": {"split": "backbone", "network": "efficientnet-lite1"}}):
        raw = yaml.safe_load(path.read_text())
        for key, value in change.items():
            for name, part in value.items():
                raw[key][name] = {**raw[key][name], **part} if isinstance(part, dict) else part
        changed = tmp_path / "changed.yaml"
        changed.write_text(yaml.safe_dump(raw, sort_keys=False))
        with pytest.raises(ConfigError, match="another configuration"):
            run(parse_config(raw, "changed"), changed, out, workers=1, limit=1, cache_root=tmp_path / "cache",
                progress=False)


def test_a_run_folder_extended_by_a_tool_and_a_rate_point(tmp_path):
    """Adding a tool or a rate point keeps the records there and computes only the new ones."""
    path, config = smoke_without_anchors(tmp_path)
    out = tmp_path / "run"
    written, _, _ = run(config, path, out, workers=1, limit=1, cache_root=tmp_path / "cache", progress=False)
    assert written == 5                                         # 2 tools × 2 points + reference
    raw = yaml.safe_load(path.read_text())
    raw["tools"]["uniform"]["rate_points"].append(64)
    raw["tools"]["coarse"] = {"cfg": "cfg/uniform.cfg", "options": {"RoundingOffset": 0.3}, "rate_points": [60]}
    extended = tmp_path / "extended.yaml"
    extended.write_text(yaml.safe_dump(raw, sort_keys=False))
    written, _, _ = run(parse_config(raw, "extended"), extended, out, workers=1, limit=1,
                        cache_root=tmp_path / "cache", progress=False)
    assert written == 2
    state = json.loads((out / "run.json").read_text())
    assert state["fingerprint"] == parse_config(raw, "extended").fingerprint()
    assert state["extended_from"] == [config.fingerprint()]


@pytest.mark.skipif(not COCO_MINI.is_dir(), reason="../shared/data/coco-mini not present")
@needs_hevc
def test_coco_config_plumbing_with_random_weights(tmp_path):
    """The shipped COCO config, shrunk (small images, one rate point per tool, two images)."""
    raw = yaml.safe_load((REPO / "ctc" / "cfg" / "coco_maskrcnn_r50fpn.yaml").read_text())
    raw["task"]["options"] = {"min_size": 160, "max_size": 240, "rpn_post_nms_top_n_test": 100}
    for tool in raw["tools"].values():
        tool["rate_points"] = tool["rate_points"][2:4]
    raw["report"]["bootstrap"] = 10
    path = tmp_path / "coco.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    out = tmp_path / "run"
    done = ctc("run", str(path), "--data", str(COCO_MINI), "--weights", "random", "--limit", "2", "--workers", "1",
               "--out", str(out), "--cache", str(tmp_path / "cache"), "--no-progress")
    assert done.returncode == 0, done.stderr
    assert "14 records written" in done.stdout                      # 2 images × (3 tools × 2 points + reference)
    records = RecordStore(out).read("uniform")
    first_two = [str(image_id) for image_id, _ in load_coco(COCO_MINI / "val2017",
                                                             COCO_MINI / "annotations" / "instances_val2017.json")[:2]]
    assert {r["image"] for r in records} == set(first_two)
    assert all(r["md5"] == "ok" and r["feature_points"] > 0 for r in records)
    detections = [d for r in records for d in r["prediction"]["detections"]]
    assert detections and all("segmentation" in d and len(d["bbox"]) == 4 for d in detections)
    with open(out / "points.csv") as f:
        row = next(csv.DictReader(f))
    for metric in ("bbox_ap", "bbox_ap50", "bbox_ap75", "segm_ap", "segm_ap50", "segm_ap75"):
        assert 0.0 <= float(row[metric]) <= 100.0
    assert "segm AP50" in (out / "report.md").read_text()


YOLO_WEIGHTS = REPO.parent / "shared" / "data" / "weights" / "yolov5n_coco.safetensors"


@pytest.mark.skipif(not (COCO_MINI.is_dir() and YOLO_WEIGHTS.is_file()),
                    reason="../shared/data/coco-mini or the YOLOv5n weights not present")
@needs_hevc
def test_coco_yolov5n_on_two_images(tmp_path):
    """The shipped YOLOv5n config, shrunk to one rate point per tool and two images: the P3-P5
    pyramid through every tool, the anchor as one frame, rates in bpp, COCO AP in the report."""
    raw = yaml.safe_load((REPO / "ctc" / "cfg" / "coco_yolov5n.yaml").read_text())
    if shutil.which("vvencFFapp") is None:             # the VVC anchor runs where ../shared/tools/vvc is on PATH
        del raw["tools"]["anchor_vvc"]
        raw["report"]["baselines"] = []
    for tool in raw["tools"].values():
        tool["rate_points"] = tool["rate_points"][:1]
    raw["report"]["bootstrap"] = 5
    path = tmp_path / "yolo.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    out = tmp_path / "run"
    done = ctc("run", str(path), "--data", str(COCO_MINI), "--weights", str(YOLO_WEIGHTS), "--limit", "2",
               "--workers", "1", "--out", str(out), "--cache", str(tmp_path / "cache"), "--no-progress")
    assert done.returncode == 0, done.stderr
    assert f"{2 * (len(raw['tools']) + 1)} records written" in done.stdout      # 2 images × (tools + reference)
    for tool in [name for name in raw["tools"] if name != "image_anchor"]:
        records = RecordStore(out).read(tool)
        assert all(r["md5"] == "ok" and r["feature_points"] == 716_800 for r in records)
        assert all(abs(r["bpp"] - r["bits"] / r["pixels"]) < 1e-9 for r in records)
    reference = RecordStore(out).read(REFERENCE_TOOL)
    assert all(r["prediction"]["detections"] for r in reference)
    report = (out / "report.md").read_text()
    assert "bits per original-image pixel" in report and "R_NL bpp" in report and "bbox AP50" in report


@pytest.mark.parametrize("args,message", [
    (["run", "no_such_config"], "CTC config not found: no_such_config"),
    (["run", "imagenet_effnet_lite0"], "pass --data DIR"),
    (["run", "imagenet_effnet_lite0", "--data", "/nonexistent/folder"], "dataset folder not found"),
    (["report", "/nonexistent/run"], "is not a ctc run folder"),
])
def test_errors_are_one_line(args, message, tmp_path):
    done = ctc(*args, "--out", str(tmp_path / "o")) if args[0] == "run" else ctc(*args)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ctc: error: ") and message in lines[0], done.stderr


@pytest.mark.skipif(not COCO_MINI.is_dir(), reason="../shared/data/coco-mini not present")
@pytest.mark.parametrize("config, weights, message", [
    ("coco_maskrcnn_r50fpn", None, "maskrcnn_r50fpn needs weights: pass --weights PATH"),
    ("coco_yolov5n", None, "yolov5n needs weights: pass --weights PATH"),
    ("coco_yolov5n_sweep", "/nonexistent/yolov5n.safetensors", "YOLOv5n weight file not found: /nonexistent/")])
def test_detection_without_weights_is_one_line(tmp_path, config, weights, message):
    extra = ["--weights", weights] if weights else []
    done = ctc("run", config, "--data", str(COCO_MINI), "--out", str(tmp_path / "o"), "--workers", "1",
               "--no-progress", *extra)
    assert done.returncode == 1
    assert done.stderr.strip().startswith(f"ctc: error: {message}"), done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_shipped_configs_load_and_list():
    for name in ("smoke", "imagenet_effnet_lite0", "coco_maskrcnn_r50fpn"):
        config = load_config(name)
        assert config.name == name and all(len(tool.rate_points) >= 2 for tool in config.tools)
    imagenet = load_config("imagenet_effnet_lite0")
    assert {t.name for t in imagenet.tools} == {"uniform", "featjnd", "random", "jnd_separable", "anchor_hevc",
                                                "anchor_vvc", "image_anchor"}
    assert all(len(t.rate_points) == 6 for t in imagenet.tools) and "path" not in imagenet.dataset
    done = ctc("list")
    assert done.returncode == 0 and "imagenet_effnet_lite0" in done.stdout and "smoke" in done.stdout


def test_interrupted_run_resumes_through_the_console_script(tmp_path):
    """Ctrl-C mid-run: one line, exit 130, complete records kept; the same command finishes the job."""
    path, _ = smoke_without_anchors(tmp_path)
    out, cache = tmp_path / "run", tmp_path / "cache"
    args = [sys.executable, "-m", "ctc.cli", "run", str(path), "--workers", "2", "--out", str(out),
            "--cache", str(cache), "--no-progress", "--no-report"]
    interrupt_after_first_record(args, out)
    done = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    store = RecordStore(out)
    for tool in ("uniform", "featjnd"):
        keys = [(r["image"], r["point"]) for r in store.read(tool)]
        assert len(keys) == len(set(keys)) == 4 * 2
    assert len(store.read(REFERENCE_TOOL)) == 4


def test_workers_do_not_change_the_records(tmp_path):
    path, config = smoke_without_anchors(tmp_path)
    cache = tmp_path / "cache"
    run(config, path, tmp_path / "one", workers=1, limit=2, cache_root=cache, progress=False)
    run(config, path, tmp_path / "two", workers=2, limit=2, cache_root=cache, progress=False)
    for tool in ("uniform", "featjnd", REFERENCE_TOOL):
        key = lambda r: (r["image"], str(r["point"]))
        one = sorted(RecordStore(tmp_path / "one").read(tool), key=key)
        two = sorted(RecordStore(tmp_path / "two").read(tool), key=key)
        fields = ("image", "point", "bits", "mse", "nrmse", "prediction")
        assert [[r.get(f) for f in fields] for r in one] == [[r.get(f) for f in fields] for r in two]


def test_a_tool_whose_codec_is_missing_stops_the_run_before_any_work(tmp_path, monkeypatch):
    from common.errors import ExternalToolError

    raw = yaml.safe_load((REPO / "ctc" / "cfg" / "smoke.yaml").read_text())
    raw["tools"] = {"uniform": raw["tools"]["uniform"],
                    "anchor_vvc": {"cfg": "cfg/anchor_vvenc.cfg", "rate_points": [37, 51]}}
    raw["anchor"] = "uniform"
    path = tmp_path / "vvc.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(ExternalToolError, match="^tool anchor_vvc: vvencFFapp not found on PATH"):
        run(parse_config(raw, "vvc"), path, tmp_path / "run", workers=1, cache_root=tmp_path / "cache",
            progress=False)
    assert not (tmp_path / "run").exists()
