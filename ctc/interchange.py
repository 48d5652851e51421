"""Results in CompressAI-Vision's run layout, both ways: MPEG FCM's toolchain (and FCTM runs made
with it) and FCRS reports read each other's results.

    OUT/<tool>/<datacatalog>/<sequence>/qp<QP>/evaluation/summary.csv
                                                          summary_complexity.csv

is the layout `compressai-split-inference` writes, one folder per rate point (its
evaluator's output_dir: codec + experiment, data catalogue, dataset name, qp). A
summary.csv in its image ('bpp') mode has one row:

    Dataset, qp, avg_bpp, end_accuracy, nn_part_1, encode, decode, nn_part_2

avg_bpp = total bits / total pixels of the original images; the four times are totals in
seconds over the images. end_accuracy is written as a fraction, the unit its summary script
(scripts/metrics/gen_mpeg_cttc_csv.py) expects of an image dataset (it multiplies by 100); a
fidelity metric (CC, KL, PSNR, MS-SSIM) as it is. FCRS adds four columns after these, which
that script passes through untouched: eval_criteria (the metric, in CompressAI-Vision's name:
bbox.AP50, top1, ...), accuracy_unit ('fraction', or 'value' for a fidelity metric),
rate_point (the FCRS label, e.g. QP=32) and images.
summary_complexity.csv is CompressAI-Vision's kMAC-per-pixel row (ctc/complexity.py).

Reading goes the other way: every summary.csv below a folder, one sequence, one row each.
A run from CompressAI-Vision has no per-image records, so a report shows its points without
intervals; what its files leave open (which metric, percent or fraction) is stated, inferred
or given by the user.
"""

from __future__ import annotations

import csv
import io
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from common.errors import InputError
from common.featio import write_text
from ctc import complexity as complexity_count
from ctc.runner import load_run_description

SUMMARY_COLUMNS = ("Dataset", "qp", "avg_bpp", "end_accuracy", "nn_part_1", "encode", "decode", "nn_part_2")
FCRS_COLUMNS = ("eval_criteria", "accuracy_unit", "rate_point", "images")
# FCRS metric -> CompressAI-Vision's evaluation criterion (COCOEval: '<iou type>.<metric>')
EVAL_CRITERIA = {"bbox_ap": "bbox.AP", "bbox_ap50": "bbox.AP50", "bbox_ap75": "bbox.AP75",
                 "segm_ap": "segm.AP", "segm_ap50": "segm.AP50", "segm_ap75": "segm.AP75",
                 "top1": "top1", "top5": "top5", "agreement": "agreement",
                 "cc": "cc", "kl": "kl", "psnr": "psnr", "ms_ssim": "ms_ssim", "accuracy": "accuracy"}
# FCRS's percentages go out as fractions; the fidelity metrics (CC, KL, PSNR, MS-SSIM) as they are
PERCENT_METRICS = ("bbox_ap", "bbox_ap50", "bbox_ap75", "segm_ap", "segm_ap50", "segm_ap75", "top1", "top5",
                   "agreement", "accuracy")
UNITS = {"fraction": 0.01, "percent": 1.0, "value": 1.0}        # unit -> its value per FCRS value
TIMES = ("nn_part_1", "encode", "decode", "nn_part_2")


# -- export -----------------------------------------------------------------------------------------

def qp_of(point_options, index):
    """The qp column of a rate point: its QP when QP is all it sets, else its index among the tool's."""
    if set(point_options) == {"QP"}:
        return point_options["QP"]
    return index


def read_points_csv(run_dir):
    """{tool: [row dict]} of the run's points.csv, in file order."""
    path = Path(run_dir) / "points.csv"
    if not path.is_file():
        raise InputError(f"{run_dir} has no points.csv: run `ctc report {run_dir}` first")
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    tools = {}
    for row in rows:
        tools.setdefault(row["tool"], []).append(row)
    return tools


def default_names(config, state):
    """(data catalogue, sequence) folder names of a run: the data folder's name (upper-case for
    the catalogue), or the configuration's name when the data came from a package."""
    data = state["runs"][-1].get("data") or config.name
    name = Path(str(data)).name or config.name
    return name.upper(), name


def export_compressai_vision(run_dir, out_dir, datacatalog=None, sequence=None, metric=None, complexity=None):
    """Writes a CTC run (its points.csv and complexity) in CompressAI-Vision's layout; returns the
    number of summary.csv files. out_dir must not exist or be empty; it appears whole or not at all.
    `complexity`: ctc/complexity.py's rows ([]: write no summary_complexity.csv); default: the run's
    complexity.csv, or counted now."""
    config, state = load_run_description(run_dir)
    metric = metric or config.metrics[0]
    if metric not in EVAL_CRITERIA:
        raise InputError(f"--metric {metric!r}: choose one of {', '.join(EVAL_CRITERIA)}")
    points = read_points_csv(run_dir)
    default_catalog, default_sequence = default_names(config, state)
    datacatalog, sequence = datacatalog or default_catalog, sequence or default_sequence
    for name, what in ((datacatalog, "--datacatalog"), (sequence, "--sequence")):
        if not name or "/" in name or name in (".", ".."):
            raise InputError(f"{what} {name!r} is not a folder name")
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise InputError(f"{out_dir} exists and is not an empty folder: choose a new output folder")
    if complexity is None:
        path = Path(run_dir) / complexity_count.COMPLEXITY_FILE
        complexity = complexity_count.read_csv(path) if path.is_file() else \
            complexity_count.count_for_points(config, points)
    complexity = {tool: kmac for tool, _, kmac in complexity}
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))     # renamed when whole
    written = 0
    try:
        for tool in config.tools:
            rows = {row["rate_point"]: row for row in points.get(tool.name, [])}
            if any(point.label not in rows for point in tool.rate_points):
                raise InputError(f"points.csv lacks rate points of {tool.name}: run `ctc report {run_dir}` again")
            for index, point in enumerate(tool.rate_points):
                row = rows[point.label]
                if metric not in row:
                    raise InputError(f"the run has no {metric} (its metrics: {', '.join(config.metrics)})")
                qp = qp_of(point.options, index)
                folder = staging / tool.name / datacatalog / sequence / f"qp{qp}" / "evaluation"
                folder.mkdir(parents=True)
                _write_summary(folder / "summary.csv", sequence, qp, row, metric)
                _write_complexity(folder / "summary_complexity.csv", complexity.get(tool.name))
                written += 1
        if out_dir.is_dir():
            out_dir.rmdir()
        os.replace(staging, out_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return written


def _number(text):
    return float(text) if text not in ("", None) else math.nan


def _write_summary(path, sequence, qp, row, metric):
    images = int(row["images"])
    seconds = {name: _number(row[f"{name}_ms"]) * images / 1000 for name in TIMES}
    unit = "fraction" if metric in PERCENT_METRICS else "value"
    values = [sequence, qp, _g(_number(row["bpp"])), _g(_number(row[metric]) * UNITS[unit]),
              *(_g(seconds[name]) for name in TIMES), EVAL_CRITERIA[metric], unit, row["rate_point"], images]
    write_csv(path, SUMMARY_COLUMNS + FCRS_COLUMNS, [values])


def _write_complexity(path, kmac):
    if kmac is None:
        return
    parts = complexity_count.PARTS
    write_csv(path, ("Metric",) + tuple(complexity_count.PART_COLUMNS[part] for part in parts),
              [["KMAC/pixel"] + [_g(kmac[part]) for part in parts]])


def _g(value):
    """Ten significant digits: points.csv's six survive exactly, sums print without float noise."""
    return "" if value is None or not math.isfinite(value) else format(float(value), ".10g")


def write_csv(path, header, rows):
    """One CSV file, written whole (common.featio.write_text) or not at all."""
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(header)
    writer.writerows(rows)
    write_text(path, text.getvalue())


# -- import -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SummaryPoint:
    qp: str
    bpp: float
    accuracy: float                # in FCRS's unit (percent)
    rate_point: str                # FCRS label, or qp=<qp>
    seconds: dict                  # time name -> total seconds (nan when absent)
    images: int | None


@dataclass(frozen=True)
class SummaryRun:
    sequence: str
    metric: str | None             # FCRS metric named by the files (eval_criteria), None when they do not say
    unit: str                      # 'fraction' or 'percent'
    unit_source: str               # 'the files', 'given', 'inferred (...)'
    points: tuple                  # SummaryPoint, by rate


def read_summary_run(path, unit=None, metric_hint=None):
    """Every summary.csv below `path` (one sequence, one row each) as a SummaryRun. `unit`
    ('fraction' | 'percent' | 'value') says what end_accuracy holds when the files do not;
    `metric_hint`: the metric it is taken for when the files do not name one (a fidelity
    metric is read on its own scale, never inferred to be a fraction)."""
    root = Path(path)
    if not root.is_dir():
        raise InputError(f"{path} is not a folder of CompressAI-Vision results")
    files = sorted(root.rglob("summary.csv"))
    if not files:
        raise InputError(f"no summary.csv below {path}: expected <codec><exp>/<datacatalog>/<sequence>/qp<QP>/"
                         "evaluation/summary.csv")
    rows = [(file, row) for file in files for row in _read_rows(file)]
    sequences = sorted({row["Dataset"] for _, row in rows})
    if len(sequences) != 1:
        raise InputError(f"{path} holds results of {len(sequences)} sequences ({', '.join(sequences[:5])}): "
                         "point at one sequence's folder")
    named_metrics = {row.get("eval_criteria") or None for _, row in rows}
    named_units = {row.get("accuracy_unit") or None for _, row in rows}
    if len(named_metrics) > 1 or len(named_units) > 1:
        raise InputError(f"the summary.csv files below {path} disagree on eval_criteria or accuracy_unit")
    named_metric, named_unit = named_metrics.pop(), named_units.pop()
    metric = None
    if named_metric is not None:
        metric = next((ours for ours, theirs in EVAL_CRITERIA.items() if theirs == named_metric), None)
        if metric is None:
            raise InputError(f"eval_criteria {named_metric!r} below {path} is no FCRS metric "
                             f"({', '.join(EVAL_CRITERIA.values())})")
    accuracies = [_float(row, "end_accuracy", file) for file, row in rows]
    if named_unit is not None:
        if named_unit not in UNITS:
            raise InputError(f"accuracy_unit {named_unit!r} below {path}: expected fraction, percent or value")
        if unit is not None and unit != named_unit:
            raise InputError(f"the files below {path} say end_accuracy is a {named_unit}, not a {unit}")
        unit, source = named_unit, "the files"
    elif unit is not None:
        source = "given"
    elif (metric or metric_hint) is not None and (metric or metric_hint) not in PERCENT_METRICS:
        unit, source = "value", "the metric's own scale"
    else:
        unit = "fraction" if max(accuracies) <= 1.0 else "percent"
        source = f"inferred: every end_accuracy is {'at most' if unit == 'fraction' else 'not'} ≤ 1"
    points = []
    for (file, row), accuracy in zip(rows, accuracies):
        images = row.get("images")
        points.append(SummaryPoint(
            qp=row["qp"], bpp=_float(row, "avg_bpp", file), accuracy=accuracy / UNITS[unit],
            rate_point=row.get("rate_point") or f"qp={row['qp']}",
            seconds={name: _float(row, name, file) if row.get(name) not in (None, "") else math.nan
                     for name in TIMES},
            images=int(images) if images not in (None, "") else None))
    points.sort(key=lambda p: p.bpp)
    return SummaryRun(sequence=sequences[0], metric=metric, unit=unit, unit_source=source, points=tuple(points))


def _read_rows(file):
    with open(file, newline="") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        if "bitrate (kbps)" in columns:
            raise InputError(f"{file} is a video result (bitrate in kbps): an FCRS report compares images in bpp")
        missing = [c for c in ("Dataset", "qp", "avg_bpp", "end_accuracy") if c not in columns]
        if missing:
            raise InputError(f"{file} is not a CompressAI-Vision summary.csv (no {', '.join(missing)} column)")
        rows = list(reader)
    if len(rows) != 1:
        raise InputError(f"{file} has {len(rows)} result rows; a rate point's summary.csv has one")
    return rows


def _float(row, column, file):
    try:
        value = float(row[column])
    except (TypeError, ValueError):
        raise InputError(f"{file}: {column} {row.get(column)!r} is not a number") from None
    if not math.isfinite(value):
        raise InputError(f"{file}: {column} is {value}")
    return value
