"""Interchange with CompressAI-Vision: `ctc export --format compressai-vision` read by a stand-in of
its summary script, `ctc report --import` of such folders, the committed coco_yolov5n run's round
trip, and the kMAC-per-pixel counts (ctc/complexity.py)."""

import csv
import math
import shutil

import pytest

from ctc.interchange import read_summary_run
from ctc.runner import run
from tests.ctc import compressai_vision_reader as reader
from tests.ctc.test_run import ctc, smoke_without_anchors
from tests.helpers import REPO

COMMITTED = REPO / "docs" / "results" / "ctc_coco_yolov5n"


def points_of(run_dir):
    with open(run_dir / "points.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    tools = {}
    for row in rows:
        tools.setdefault(row["tool"], []).append(row)
    return tools


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """The token-wise smoke run on two photos, reported."""
    tmp = tmp_path_factory.mktemp("smoke")
    path, config = smoke_without_anchors(tmp)
    run(config, path, tmp / "run", workers=1, limit=2, cache_root=str(tmp / "cache"), progress=False,
        command="test")
    done = ctc("report", str(tmp / "run"))
    assert done.returncode == 0, done.stderr
    return tmp / "run"


def test_the_summary_script_reads_an_export(smoke_run, tmp_path):
    out = tmp_path / "cav"
    done = ctc("export", "--format", "compressai-vision", str(smoke_run), str(out), "--datacatalog", "SKIMAGE_OIV6")
    assert done.returncode == 0, done.stderr
    assert "4 summary.csv files" in done.stdout
    points = points_of(smoke_run)
    for tool in ("uniform", "featjnd"):
        # the script's options for an image dataset it does not know: its OIV6 branch, names that contain it
        rows = reader.generate_image_csv(out / tool / "SKIMAGE_OIV6", tmp_path / "skimage_oiv6", "OIV6", 2)
        assert [row["qp"] for row in rows] == sorted(int(p["rate_point"][3:]) for p in points[tool])
        by_qp = {int(p["rate_point"][3:]): p for p in points[tool]}
        for row in rows:
            assert list(row)[:5] == ["Dataset", "qp", "avg_bpp", "end_accuracy", "y_psnr"]
            ours = by_qp[row["qp"]]
            assert row["Dataset"] == "skimage" and row["eval_criteria"] == "agreement"
            assert row["avg_bpp"] == float(ours["bpp"])
            assert row["end_accuracy"] == pytest.approx(float(ours["agreement"]), abs=1e-9)     # percent again
            assert row["encode"] == pytest.approx(float(ours["encode_ms"]) * 2 / 1000)   # total seconds
        with pytest.raises(AssertionError, match="Did not find 3 results"):
            reader.read_results(out / tool / "SKIMAGE_OIV6", 3)
    complexity = (out / "featjnd" / "SKIMAGE_OIV6" / "skimage" / "qp60" / "evaluation" / "summary_complexity.csv")
    with open(complexity, newline="") as handle:
        row = next(csv.DictReader(handle))
    assert row["Metric"] == "KMAC/pixel" and float(row["feature reduction"]) > 0      # FeatJND's estimator
    assert float(row["nn_part1"]) > 100 * float(row["nn_part2"]) > 0                  # Lite0: backbone vs FC head


def test_an_import_reports_the_points_it_was_exported_from(smoke_run, tmp_path):
    exported = tmp_path / "cav"
    shutil.copytree(smoke_run / "compressai_vision", exported)
    done = ctc("report", str(smoke_run), "--import", f"back={exported / 'uniform'}")
    assert done.returncode == 0, done.stderr
    assert "R_NL back (imported) (agreement %)" in done.stdout
    points = points_of(smoke_run)
    ours = {p["rate_point"]: p for p in points["uniform"]}
    assert len(points["back"]) == 2
    for imported in points["back"]:
        original = ours[imported["rate_point"]]
        for column in ("bpp", "agreement", "encode_ms", "decode_ms"):
            assert float(imported[column]) == pytest.approx(float(original[column]), rel=1e-6)
        assert float(imported["bpfp"]) == pytest.approx(float(original["bpfp"]), rel=1e-5)
        assert imported["agreement_ci_low"] == "" and imported["top1"] == ""     # no records: no interval
    report = (smoke_run / "report.md").read_text()
    assert "## Imported results" in report and "the files (eval_criteria)" in report
    # the report of the run alone comes back without the import
    assert ctc("report", str(smoke_run)).returncode == 0
    assert "back" not in points_of(smoke_run)


def test_the_committed_coco_yolov5n_run_round_trips(tmp_path):
    out = tmp_path / "cav"
    done = ctc("export", "--format", "compressai-vision", str(COMMITTED), str(out))
    assert done.returncode == 0, done.stderr
    points = points_of(COMMITTED)
    for tool, rows in points.items():
        summary = read_summary_run(out / tool)
        assert summary.sequence == "coco-mini" and summary.metric == "bbox_ap50" and summary.unit == "fraction"
        ours = {p["rate_point"]: p for p in rows}
        assert sorted(p.rate_point for p in summary.points) == sorted(ours)
        for point in summary.points:
            assert point.bpp == float(ours[point.rate_point]["bpp"])
            assert point.accuracy == pytest.approx(float(ours[point.rate_point]["bbox_ap50"]), abs=1e-9)
    lmsfc = out / "lmsfc_task" / "COCO-MINI" / "coco-mini" / "qp3" / "evaluation" / "summary_complexity.csv"
    with open(lmsfc, newline="") as handle:
        row = next(csv.DictReader(handle))
    assert float(row["feature reduction"]) > 0 and float(row["feature restoration"]) > 0


def test_export_and_import_errors_are_one_line(smoke_run, tmp_path):
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("mine")
    bad = tmp_path / "bad" / "a" / "qp1" / "evaluation"
    bad.mkdir(parents=True)
    (bad / "summary.csv").write_text("Dataset,qp,avg_bpp,end_accuracy\nseq,1,abc,0.5\n")
    video = tmp_path / "video" / "qp1" / "evaluation"
    video.mkdir(parents=True)
    (video / "summary.csv").write_text("Dataset,fps,num_of_coded_frame,qp,bitrate (kbps),end_accuracy\nx,30,2,1,5,0.5\n")
    two = tmp_path / "two"
    for sequence in ("a", "b"):
        folder = two / sequence / "qp1" / "evaluation"
        folder.mkdir(parents=True)
        (folder / "summary.csv").write_text(f"Dataset,qp,avg_bpp,end_accuracy\n{sequence},1,0.1,0.5\n")
    cases = [
        (["export", "--format", "compressai-vision", str(smoke_run), str(occupied)], "is not an empty folder"),
        (["export", "--format", "compressai-vision", str(tmp_path), str(tmp_path / "x")], "is not a ctc run folder"),
        (["report", str(smoke_run), "--import", f"x={tmp_path / 'nothing'}"], "is not a folder"),
        (["report", str(smoke_run), "--import", f"x={occupied}"], "no summary.csv below"),
        (["report", str(smoke_run), "--import", f"x={tmp_path / 'bad'}"], "avg_bpp 'abc' is not a number"),
        (["report", str(smoke_run), "--import", f"x={tmp_path / 'video'}"], "is a video result"),
        (["report", str(smoke_run), "--import", f"x={two}"], "results of 2 sequences"),
        (["report", str(smoke_run), "--import", f"uniform={smoke_run / 'compressai_vision' / 'featjnd'}"],
         "the run already has a tool uniform"),
    ]
    for args, message in cases:
        done = ctc(*args)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 1 and len(lines) == 1 and message in lines[0], (args, done.stderr)
    assert [p.name for p in occupied.iterdir()] == ["keep.txt"]
    assert not (tmp_path / "x").exists()
    usage = ctc("report", str(smoke_run), "--import", "no-equals-sign")
    assert usage.returncode == 2 and "expected NAME=FOLDER" in usage.stderr


def test_units_and_metrics_an_import_does_not_name(tmp_path):
    for qp, (bpp, accuracy) in enumerate(((0.1, 0.42), (0.2, 0.5))):
        folder = tmp_path / "fctm" / "seq" / f"qp{qp}" / "evaluation"
        folder.mkdir(parents=True)
        (folder / "summary.csv").write_text(f"Dataset,qp,avg_bpp,end_accuracy\nseq,{qp},{bpp},{accuracy}\n")
    inferred = read_summary_run(tmp_path / "fctm")
    assert inferred.metric is None and inferred.unit == "fraction" and inferred.unit_source.startswith("inferred")
    assert [p.accuracy for p in inferred.points] == pytest.approx([42.0, 50.0])
    given = read_summary_run(tmp_path / "fctm", unit="percent")
    assert [p.accuracy for p in given.points] == pytest.approx([0.42, 0.5]) and given.unit_source == "given"
    assert all(math.isnan(p.seconds["encode"]) for p in given.points)


def test_macs_are_counted_per_multiply_accumulate():
    torch = pytest.importorskip("torch")
    pytest.importorskip("fvcore")
    from ctc.complexity import count_macs, task_count

    conv = torch.nn.Conv2d(3, 16, 3, padding=1).requires_grad_(False)
    assert count_macs(conv, torch.zeros(1, 3, 32, 32)) == 32 * 32 * 16 * 3 * 9
    yolo = task_count("yolov5n", "neck")
    # YOLOv5n's published cost is 4.5 GFLOPs (2 per MAC) at 640×640
    assert (yolo.front + yolo.back) / 2.25e9 == pytest.approx(1, abs=0.02)
    assert dict(yolo.features) == {"p3": (64, 80, 80), "p4": (128, 40, 40), "p5": (256, 20, 20)}


def test_a_fidelity_metric_without_a_unit_is_read_on_its_own_scale(tmp_path):
    folder = tmp_path / "cc" / "seq" / "qp1" / "evaluation"
    folder.mkdir(parents=True)
    (folder / "summary.csv").write_text("Dataset,qp,avg_bpp,end_accuracy\nseq,1,0.1,0.93\n")
    run = read_summary_run(tmp_path / "cc", metric_hint="cc")
    assert run.unit == "value" and run.points[0].accuracy == pytest.approx(0.93)
    assert read_summary_run(tmp_path / "cc", metric_hint="bbox_ap50").points[0].accuracy == pytest.approx(93.0)
