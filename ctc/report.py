"""`ctc report DIR`: tables, BD-rates, near-lossless rates, CSVs and plots of a run's records.

    DIR/report.md                 everything below, with the run's command, data, wall time, versions
    DIR/points.csv                one row per (tool, rate point): rates, metrics with 95 % CIs, times
    DIR/bd_rate.csv               BD-rate of every tool vs the anchor, per quality metric, with CI
    DIR/near_lossless.csv         R_NL and CR_NL per tool and metric, with CI
    DIR/compressai_vision/        the run in CompressAI-Vision's layout: <tool>/<catalogue>/<sequence>/qp<QP>/
                                  evaluation/summary.csv per rate point (ctc/interchange.py)
    DIR/complexity.csv            MACs per image and kMAC per pixel of each tool's learned parts
    DIR/rate_accuracy.png         quality vs rate, one panel per metric

Only images with every record (reference and all tools and rate points) enter
the statistics, so every number is over the same images and the bootstrap is
paired. The rate axis of BD-rates and plots is the config's report.rate: bits per
feature point (bpfp: total bits / total feature points of the images) or bits per
original-image pixel (bpp: total bits / total pixels, MPEG-VCM's). Over one set of
images the two differ by a constant factor, so BD-rates and CR_NL agree on both
axes; R_NL is reported on both. The rules are in ctc/stats.py.

Results of other tools can join the report (`ctc report DIR --import NAME=FOLDER`): a
CompressAI-Vision / FCTM result folder (ctc/interchange.py) becomes one more tool, with point
estimates only, since it has no per-image records to resample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common.errors import InputError
from common.featio import write_atomically, write_text
from ctc import complexity
from ctc.config import RATE_AXES
from ctc.interchange import export_compressai_vision, read_points_csv, read_summary_run, write_csv
from ctc.metrics import LOWER_IS_BETTER, METRIC_NAMES, CocoScorer, Quality, task_metrics
from ctc.records import REFERENCE_TOOL, read_all
from ctc.runner import load_run_description
from ctc.stats import (UNCOMPRESSED_BITS_PER_POINT, Bootstrap, bd_overlap, bd_rate, interval,
                       near_lossless_rate)

COMPRESSAI_VISION_FOLDER = "compressai_vision"


@dataclass
class PointResult:
    tool: str
    label: str
    options: dict
    records: list
    bits: float = 0.0              # mean per image
    bpfp: float = 0.0
    bpp: float = 0.0
    mse: float = 0.0
    nrmse: float = 0.0
    encode_ms: float = 0.0
    decode_ms: float = 0.0
    nn_part_1_ms: float = 0.0
    nn_part_2_ms: float = 0.0
    md5_ok: int = 0
    md5_mismatch: int = 0
    rate_resamples: dict = None    # rate axis -> bootstrap resamples of the rate (None: imported)
    quality: dict = field(default_factory=dict)     # metric -> (value, resamples or None)
    images: int | None = None


@dataclass(frozen=True)
class ImportedTool:
    """A tool of another toolchain's results: its name and label in the report, and how it was read."""
    name: str
    label: str
    path: str
    metric: str
    metric_source: str
    unit: str
    unit_source: str


def load_run(out):
    config, state = load_run_description(out)
    return config, state, read_all(Path(out), [tool.name for tool in config.tools])


def complete_images(config, records):
    """The images (questions) with every record; of questions, only those the uncompressed
    features answer correctly (FCM-LM's selection: the runner codes no other)."""
    reference = {r["image"]: r for r in records[REFERENCE_TOOL]
                 if not config.is_multiple_choice or r["prediction"]["correct"]}
    done = {(r["image"], r["tool"], r["point"]) for tool in config.tools for r in records[tool.name]}
    return sorted(image for image in reference
                  if all((image, tool.name, point.key) in done for tool in config.tools for point in tool.rate_points))


def compute(config, state, records, data=None):
    """All numbers of the report: (images, reference quality, {tool: [PointResult]}, bootstrap)."""
    images = complete_images(config, records)
    if not images:
        raise InputError("no image has all its records yet: nothing to report")
    position = {image: k for k, image in enumerate(images)}
    reference = sorted((r for r in records[REFERENCE_TOOL] if r["image"] in position),
                       key=lambda r: position[r["image"]])
    bootstrap = Bootstrap(len(images), config.bootstrap, config.seed)
    scorer = None
    if not (config.is_classification or config.is_fidelity or config.is_multiple_choice):
        from ctc.datasets import coco_paths

        last = state["runs"][-1]
        root = Path(data or last.get("data_path") or last["data"])
        scorer = CocoScorer(coco_paths(root, config.dataset)[1], images)
    quality = Quality(config, bootstrap, reference, scorer)
    results = {}
    for tool in config.tools:
        by_point = {}
        for record in records[tool.name]:
            if record["image"] in position:
                by_point.setdefault(record["point"], {})[record["image"]] = record
        rows = []
        for point in tool.rate_points:
            recs = [by_point[point.key][image] for image in images]
            rows.append(_point_result(tool, point, recs, bootstrap, quality))
        results[tool.name] = rows
    return images, quality.of_reference(), results, bootstrap


def _point_result(tool, point, recs, bootstrap, quality):
    column = lambda key: np.array([r[key] for r in recs], dtype=np.float64)
    bits, points, pixels = column("bits"), column("feature_points"), column("pixels")
    result = PointResult(tool=tool.name, label=point.label, options=point.options, records=recs, images=len(recs),
                         bits=float(bits.mean()), bpfp=float(bits.sum() / points.sum()),
                         bpp=float(bits.sum() / pixels.sum()), mse=float(column("mse").mean()),
                         nrmse=float(np.nanmean(column("nrmse"))), encode_ms=1000 * float(column("encode_s").mean()),
                         decode_ms=1000 * float(column("decode_s").mean()),
                         nn_part_1_ms=1000 * float(column("nn_part_1_s").mean()),
                         nn_part_2_ms=1000 * float(column("nn_part_2_s").mean()),
                         md5_ok=sum(r["md5"] == "ok" for r in recs),
                         md5_mismatch=sum(r["md5"] == "mismatch" for r in recs))
    if bootstrap.resamples:
        result.rate_resamples = {"bpfp": bootstrap.ratios(bits, points), "bpp": bootstrap.ratios(bits, pixels)}
    result.quality = quality.of_point(recs)
    return result


# -- derived tables ---------------------------------------------------------------------------------

def _resampled(points, metric):
    """Whether every point has bootstrap resamples of its rate and of `metric` (imported tools have none)."""
    return all(p.rate_resamples is not None and p.quality[metric][1] is not None for p in points)


def bd_rates(config, results, bootstrap, reference=None):
    """[(tool, metric, value, (lo, hi), quality interval)] of every tool (results' order) vs `reference`
    (default: the anchor); nan where a tool lacks the metric."""
    reference = reference or config.anchor
    axis = config.rate_axis
    anchor = results[reference]
    rows = []
    for name, test in results.items():
        if name == reference:
            continue
        for metric in config.metrics:
            if metric not in test[0].quality:
                rows.append((name, metric, math.nan, (math.nan, math.nan), None))
                continue
            sign = -1.0 if metric in LOWER_IS_BETTER else 1.0     # BD-rate integrates a rising quality
            curves = ([getattr(p, axis) for p in anchor], [sign * p.quality[metric][0] for p in anchor],
                      [getattr(p, axis) for p in test], [sign * p.quality[metric][0] for p in test])
            value, overlap = bd_rate(*curves), bd_overlap(*curves)
            overlap = overlap and tuple(sorted(sign * q for q in overlap))
            ci = (math.nan, math.nan)
            if bootstrap.resamples and _resampled(anchor, metric) and _resampled(test, metric):
                samples = [bd_rate([p.rate_resamples[axis][r] for p in anchor],
                                   [sign * p.quality[metric][1][r] for p in anchor],
                                   [p.rate_resamples[axis][r] for p in test],
                                   [sign * p.quality[metric][1][r] for p in test])
                           for r in range(bootstrap.resamples)]
                ci = interval(samples)
            rows.append((name, metric, value, ci, overlap))
    return rows


def near_lossless(config, results, reference_quality, bootstrap, axis="bpfp"):
    """[(tool, metric, NearLossless, (lo, hi) of R_NL, censored share of resamples)], rates on `axis`."""
    rows = []
    for name, points in results.items():
        for metric in config.metrics:
            q0, q0_resamples = reference_quality[metric]
            if metric not in points[0].quality or metric in LOWER_IS_BETTER or not math.isfinite(q0):
                continue            # a relative drop needs a finite value that coding lowers
            value = near_lossless_rate([getattr(p, axis) for p in points], [p.quality[metric][0] for p in points],
                                       q0, config.near_lossless_drop)
            ci, censored = (math.nan, math.nan), math.nan
            if bootstrap.resamples and _resampled(points, metric):
                samples = [near_lossless_rate([p.rate_resamples[axis][r] for p in points],
                                              [p.quality[metric][1][r] for p in points],
                                              q0_resamples[r], config.near_lossless_drop)
                           for r in range(bootstrap.resamples)]
                ci = interval([s.rate for s in samples])
                censored = float(np.mean([bool(s.censored) for s in samples]))
            rows.append((name, metric, value, ci, censored))
    return rows


# -- writing ----------------------------------------------------------------------------------------

def _ci_text(value, ci, digits=1):
    """value [lo, hi] with `digits` decimals (metric_digits for a quality metric)."""
    if np.isposinf(value):
        return "∞"
    if not np.isfinite(value):
        return "n/a"
    if not all(np.isfinite(ci)):
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _point_table(config, points):
    header = (["rate point", "bits/image", "bpfp", _per_unit(config)] + [METRIC_NAMES[m] for m in task_metrics(config)]
              + ["MSE", "NRMSE", "enc ms", "dec ms", "MD5"])
    rows = []
    for p in points:
        quality = [_ci_text(p.quality[m][0], interval(p.quality[m][1]) if p.quality[m][1] is not None
                            else (math.nan, math.nan), metric_digits(m)) if m in p.quality else "n/a"
                   for m in task_metrics(config)]
        md5 = "n/a" if p.md5_ok + p.md5_mismatch == 0 else (
            f"{p.md5_ok} ok" if not p.md5_mismatch else f"**{p.md5_mismatch} MISMATCH**")
        rows.append([p.label, f"{p.bits:,.0f}", f"{p.bpfp:.4f}", f"{p.bpp:.4f}", *quality, _shown(p.mse, ".4g"),
                     _shown(p.nrmse, ".4f"), _shown(p.encode_ms, ".1f"), _shown(p.decode_ms, ".1f"), md5])
    return _table(header, rows)


def _per_unit(config):
    """The name of the records' bits per input unit: bpp, or bits per token of a text."""
    return "bpp" if config.input_unit == "pixel" else "bits/token"


def _selection_text(config, records):
    if not config.is_multiple_choice:
        return ""
    asked = len(records[REFERENCE_TOOL])
    correct = sum(r["prediction"]["correct"] for r in records[REFERENCE_TOOL])
    return (f" (questions: of {asked}, the {correct} that the uncompressed features answer correctly, FCM-LM's "
            "selection; the tools code only those, so accuracy starts at 100 %)")


def _shown(value, spec):
    return format(value, spec) if np.isfinite(value) else "n/a"


def write_report(out, data=None, imports=(), import_metric=None, import_unit=None):
    """Compute and write every report file into the run folder; returns the markdown text.
    `imports`: (name, folder) of CompressAI-Vision results to report as more tools; their metric
    and unit, where their files do not name them, are `import_metric` (default: the primary
    metric) and `import_unit` (default: inferred)."""
    out = Path(out)
    config, state, records = load_run(out)
    images, reference_quality, results, bootstrap = compute(config, state, records, data)
    labels = {tool.name: tool.label for tool in config.tools}
    ref_records = [r for r in records[REFERENCE_TOOL] if r["image"] in set(images)]
    imported = []
    for name, folder in imports:
        if name in results:
            raise InputError(f"--import {name}=...: the run already has a tool {name}")
        tool, results[name] = import_tool(config, name, folder, ref_records, import_metric, import_unit)
        labels[name] = tool.label
        imported.append(tool)
    bd_rows = bd_rates(config, results, bootstrap)
    baseline_rows = {name: bd_rates(config, results, bootstrap, name) for name in config.baselines}
    nl_rows = near_lossless(config, results, reference_quality, bootstrap)
    nl_bpp_rows = near_lossless(config, results, reference_quality, bootstrap, "bpp")
    pixels_per_image = sum(r["pixels"] for r in ref_records) / len(ref_records)
    counted = _complexity_rows(config, pixels_per_image)

    _write_points_csv(out / "points.csv", config, results)
    write_csv(out / "bd_rate.csv", ["tool", "anchor", "metric", "bd_rate_percent", "ci_low", "ci_high",
                                    "quality_low", "quality_high"],
              [[t, reference, m, _num(v), _num(ci[0]), _num(ci[1]), *(_num(q) for q in overlap or (None, None))]
               for reference, rows in {config.anchor: bd_rows, **baseline_rows}.items()
               for t, m, v, ci, overlap in rows])
    write_csv(out / "near_lossless.csv",
              ["tool", "metric", "r_nl_bpfp", "censored", "ci_low", "ci_high", "cr_nl", "cr_nl_ci_low",
               "cr_nl_ci_high", "censored_resamples", "r_nl_bpp", "r_nl_bpp_ci_low", "r_nl_bpp_ci_high"],
              [[t, m, _num(nl.rate), nl.censored, _num(ci[0]), _num(ci[1]), _num(nl.compression_ratio),
                _num(UNCOMPRESSED_BITS_PER_POINT / ci[1]), _num(UNCOMPRESSED_BITS_PER_POINT / ci[0]), _num(c),
                _num(nl_bpp.rate), _num(ci_bpp[0]), _num(ci_bpp[1])]
               for (t, m, nl, ci, c), (_, _, nl_bpp, ci_bpp, _) in zip(nl_rows, nl_bpp_rows)])
    if counted:
        _write_complexity_csv(out / complexity.COMPLEXITY_FILE, counted)
    elif (out / complexity.COMPLEXITY_FILE).is_file():
        (out / complexity.COMPLEXITY_FILE).unlink()       # not stale numbers beside a report that has none
    _write_compressai_vision(out, counted)
    _plot(out / "rate_accuracy.png", config, results, reference_quality, labels)
    axis_name = RATE_AXES[config.rate_axis]

    last = state["runs"][-1]
    total_wall = sum(run.get("wall_s", 0.0) for run in state["runs"])
    md = [f"# CTC report: {config.name}", "", config.description, "",
          f"- command: `{last.get('command', '')}`",
          f"- data: `{last.get('data')}`; {len(images)} {'questions' if config.is_multiple_choice else 'images'} "
          "with every record" + _selection_text(config, records),
          f"- wall time: {total_wall:,.0f} s over {len(state['runs'])} invocation(s) of `ctc run` "
          f"({last.get('workers')} worker{'' if last.get('workers') == 1 else 's'}); environment: "
          + ", ".join(f"{k} {v}" for k, v in last.get("environment", {}).items()),
          f"- task: {config.task['network']} split at {config.task['split']}; anchor: {labels[config.anchor]}; "
          f"primary metric: {METRIC_NAMES[config.metrics[0]]}",
          f"- intervals: 95 % percentile bootstrap over images, {config.bootstrap} resamples (seed {config.seed}), "
          "paired across tools", "",
          "## Uncompressed features", ""]
    ref_rows = [[METRIC_NAMES[m], _ci_text(reference_quality[m][0], interval(reference_quality[m][1])
                                           if reference_quality[m][1] is not None else (math.nan, math.nan),
                                           metric_digits(m))]
                for m in task_metrics(config)]
    feature_points = np.mean([r["feature_points"] for r in ref_records])
    r0_bpp = UNCOMPRESSED_BITS_PER_POINT * sum(r["feature_points"] for r in ref_records) / sum(
        r["pixels"] for r in ref_records)
    md += [_table(["metric", "value [95 % CI]"], ref_rows),
           f"R_0 = {UNCOMPRESSED_BITS_PER_POINT:g} bits per feature point (float32) = {r0_bpp:.2f} bits per "
           f"{'original-image pixel' if config.input_unit == 'pixel' else 'token'}; {feature_points:,.0f} feature "
           "points per image; front (nn_part_1) "
           f"{1000 * np.mean([r['nn_part_1_s'] for r in ref_records]):.1f} ms, "
           f"back (nn_part_2) {1000 * np.mean([r['nn_part_2_s'] for r in ref_records]):.1f} ms per image.", ""]
    md += ["## BD-rate vs the anchor", "",
           f"{axis_name.capitalize()} at equal quality, each tool vs {labels[config.anchor]} (negative = fewer bits). "
           "pchip (`bjontegaard` package); each curve reduced to its envelope, integrated over the quality range "
           "both cover; n/a: fewer than two envelope points or no overlap.", "",
           _bd_table(config, bd_rows, labels)]
    for name, rows in baseline_rows.items():
        md += [f"### BD-rate vs {labels[name]}", "",
               f"The same, against {labels[name]} (a baseline named in the configuration's report.baselines).", "",
               _bd_table(config, rows, labels)]
    md += ["## Near-lossless rate", "",
           f"R_NL: lowest rate with < {100 * config.near_lossless_drop:g} % relative drop of the metric from the "
           f"uncompressed value, interpolated in log-rate, in bits per "
           f"{'original-image pixel' if config.input_unit == 'pixel' else 'token'} ({_per_unit(config)}) and "
           f"per feature point (bpfp); CR_NL = R_0 / R_NL with R_0 = {UNCOMPRESSED_BITS_PER_POINT:g} bpfp = "
           f"{r0_bpp:.2f} {_per_unit(config)} "
           "(the same ratio on both axes). '≤': even the lowest rate point is near-lossless (R_NL is at most it); "
           "'>': no rate point is. 'censored' = share of bootstrap resamples where R_NL is such a bound.", "",
           _table(["tool", "metric", f"R_NL {_per_unit(config)} [95 % CI]", "R_NL bpfp [95 % CI]", "CR_NL [95 % CI]",
                   "censored"],
                  [[labels[t], METRIC_NAMES[m], _nl_text(nl_bpp, ci_bpp), _nl_text(nl, ci), compression_ratio_text(nl, ci),
                    "n/a" if not np.isfinite(c) else f"{100 * c:.0f} %"]
                   for (t, m, nl, ci, c), (_, _, nl_bpp, ci_bpp, _) in zip(nl_rows, nl_bpp_rows)])]
    md += _complexity_section(counted, labels)
    md += _imported_section(imported)
    md += ["## Per rate point", ""]
    for tool in config.tools:
        cfg = {"features": f"`{tool.cfg}`" + (f" + {tool.options}" if tool.options else ""),
               "image": "the image anchor (ctc/image_codec.py: x265 intra 8-bit 4:2:0 on the input image)",
               "hyperprior": f"FCM-LM's hyperprior baseline, model `{tool.model}` (ctc/baselines/hyperprior.py; "
                             "float decoder, not bit-exact across machines)"}[tool.kind]
        md += [f"### {tool.label}", "", f"{cfg}", "", _point_table(config, results[tool.name])]
    for tool in imported:
        md += [f"### {tool.label}", "", f"imported from `{tool.path}`", "", _point_table(config, results[tool.name])]
    md += ["bits: whole FCRS stream per image (headers, tensor data, MD5 unit), or the image anchor's HEVC stream; "
           "bpfp = bits / feature points; bpp = bits / input pixels (image as read); MSE, NRMSE = ||f − f̂|| / ||f|| "
           "per image, averaged; enc / dec ms: library encode / decode per image (image anchor: x265 / "
           "libde265-dec265 wall time); MD5: decoded-feature hash checks by the decoder.", "",
           "![rate-accuracy](rate_accuracy.png)", "",
           "Files: `points.csv`, `bd_rate.csv`, `near_lossless.csv`, `complexity.csv`, `rate_accuracy.png`, "
           "`compressai_vision/` (the run in CompressAI-Vision's per-rate-point layout: docs/compressai_vision.md).",
           ""]
    text = "\n".join(md)
    write_text(out / "report.md", text)
    return text, bd_rows, nl_rows, labels


def _bd_table(config, rows, labels):
    """One row per tool: per metric the BD-rate [CI] and the quality interval it integrates over."""
    def cell(value, ci, overlap, metric):
        digits = metric_digits(metric)
        where = f" over {overlap[0]:.{digits}f}–{overlap[1]:.{digits}f}" if overlap else ""
        return _ci_text(value, ci) + where

    return _table(["tool"] + [f"BD-rate % ({METRIC_NAMES[m]}) [95 % CI] over quality" for m in config.metrics],
                  [[labels[t]] + [cell(v, ci, overlap, m) for tt, m, v, ci, overlap in rows if tt == t]
                   for t in dict.fromkeys(row[0] for row in rows)])


def metric_digits(metric):
    """Decimals a metric is shown with: percentages and dB one or two, the fidelity ratios three or four."""
    return {"cc": 3, "kl": 3, "ms_ssim": 4, "psnr": 2}.get(metric, 1)


def _nl_text(nl, ci):
    bounds = "" if not all(np.isfinite(ci)) else f" [{ci[0]:.4g}, {ci[1]:.4g}]"
    return f"{nl.text()}{bounds}"


def compression_ratio_text(nl, ci):
    symbol = {"<=": "≥ ", ">": "< ", "": ""}[nl.censored]
    bounds = "" if not all(np.isfinite(ci)) else \
        f" [{UNCOMPRESSED_BITS_PER_POINT / ci[1]:.0f}, {UNCOMPRESSED_BITS_PER_POINT / ci[0]:.0f}]"
    return f"{symbol}{nl.compression_ratio:.0f}{bounds}"


def _num(value):
    return "" if value is None or not np.isfinite(value) else f"{value:.6g}"


def _write_points_csv(path, config, results):
    metrics = task_metrics(config)
    header = ["tool", "rate_point", "images", "bits_per_image", "bpfp", "bpp", "mse", "nrmse", "encode_ms",
              "decode_ms", "nn_part_1_ms", "nn_part_2_ms", "md5_ok", "md5_mismatch"]
    for m in metrics:
        header += [m, f"{m}_ci_low", f"{m}_ci_high"]
    rows = []
    for name, points in results.items():
        for p in points:
            row = [name, p.label, "" if p.images is None else p.images, _num(p.bits), _num(p.bpfp), _num(p.bpp),
                   _num(p.mse), _num(p.nrmse), _num(p.encode_ms), _num(p.decode_ms), _num(p.nn_part_1_ms),
                   _num(p.nn_part_2_ms), p.md5_ok, p.md5_mismatch]
            for m in metrics:
                value, resamples = p.quality.get(m, (math.nan, None))
                lo, hi = interval(resamples) if resamples is not None else (math.nan, math.nan)
                row += [_num(value), _num(lo), _num(hi)]
            rows.append(row)
    write_csv(path, header, rows)


def _write_compressai_vision(out, counted):
    """DIR/compressai_vision/: the run in CompressAI-Vision's layout (ctc/interchange.py), rewritten whole;
    `counted`: the complexity rows for its summary_complexity.csv files."""
    import shutil
    import tempfile

    staging = Path(tempfile.mkdtemp(prefix=".compressai_vision.", dir=out))
    try:
        export_compressai_vision(out, staging / COMPRESSAI_VISION_FOLDER, complexity=counted)
        if (out / COMPRESSAI_VISION_FOLDER).exists():
            shutil.rmtree(out / COMPRESSAI_VISION_FOLDER)
        (staging / COMPRESSAI_VISION_FOLDER).rename(out / COMPRESSAI_VISION_FOLDER)
    finally:
        shutil.rmtree(staging)


# -- imported results and complexity -----------------------------------------------------------------

def import_tool(config, name, folder, ref_records, metric=None, unit=None):
    """(ImportedTool, [PointResult]) of CompressAI-Vision results below `folder`, on this report's axes:
    bpfp from bpp by the ratio of pixels to feature points of the report's images."""
    run = read_summary_run(folder, unit, metric or config.metrics[0])
    if run.metric is not None:
        if metric is not None and metric != run.metric:
            raise InputError(f"--import {name}: its files name the metric {run.metric}, not {metric}")
        metric, metric_source = run.metric, "the files (eval_criteria)"
    elif metric is not None:
        metric_source = "given (--import-metric)"
    else:
        metric, metric_source = config.metrics[0], "assumed: the report's primary metric (the files do not say)"
    if metric not in task_metrics(config):
        raise InputError(f"--import {name}: {metric} is not a metric of this report ({', '.join(task_metrics(config))})")
    pixels = sum(r["pixels"] for r in ref_records)
    points_per_pixel = sum(r["feature_points"] for r in ref_records) / pixels
    pixels_per_image = pixels / len(ref_records)
    rows = []
    for point in run.points:
        per_image = (lambda seconds: 1000 * seconds / point.images) if point.images else (lambda seconds: math.nan)
        rows.append(PointResult(tool=name, label=point.rate_point, options={}, records=[],
                                bits=point.bpp * pixels_per_image, bpfp=point.bpp / points_per_pixel, bpp=point.bpp,
                                mse=math.nan, nrmse=math.nan, encode_ms=per_image(point.seconds["encode"]),
                                decode_ms=per_image(point.seconds["decode"]),
                                nn_part_1_ms=per_image(point.seconds["nn_part_1"]),
                                nn_part_2_ms=per_image(point.seconds["nn_part_2"]),
                                quality={metric: (point.accuracy, None)}, images=point.images))
    tool = ImportedTool(name=name, label=f"{name} (imported)", path=str(folder), metric=metric,
                        metric_source=metric_source, unit=run.unit, unit_source=run.unit_source)
    return tool, rows


def _complexity_rows(config, pixels_per_image):
    """ctc/complexity.py's rows for the run, or [] when its counter (fvcore) is not installed."""
    return complexity.run_complexity(config, pixels_per_image) if complexity.available() else []


def write_complexity(run_dir):
    """`ctc complexity DIR`: count and write DIR/complexity.csv from the run's ctc.yaml and points.csv."""
    config, _ = load_run_description(run_dir)
    path = Path(run_dir) / complexity.COMPLEXITY_FILE
    rows = complexity.count_for_points(config, read_points_csv(run_dir))
    _write_complexity_csv(path, rows)
    return config, rows


def _write_complexity_csv(path, rows):
    header, table = complexity.csv_table(rows)
    write_csv(path, header, [[row[0]] + [_num(value) for value in row[1:]] for row in table])


def complexity_table(rows, labels):
    parts = complexity.PARTS
    return _table(["tool"] + [complexity.PART_COLUMNS[part] for part in parts] + ["total"],
                  [[labels.get(tool, tool)] + [_shown(kmac[part], ".4g") for part in parts]
                   + [_shown(sum(kmac.values()), ".4g")] for tool, _, kmac in rows])


def _complexity_section(rows, labels):
    if not rows:
        return ["## Complexity", "", "Not counted: fvcore is not installed (pip install -e '.[tasks]').", ""]
    return ["## Complexity (kMAC per pixel)", "",
            "Multiply-accumulates of each tool's learned parts, counted by fvcore, per pixel of the original "
            "images (ctc/complexity.py): nn_part1 / nn_part2 the task network's front and back, feature "
            "reduction / restoration the codec's learned encoder and decoder parts (L-MSFC, FeatJND's "
            "estimator); conventional coders have none. Coding times are in the per-point tables.", "",
            complexity_table(rows, labels)]


def _imported_section(imported):
    if not imported:
        return []
    md = ["## Imported results", "",
          "Tools whose results came from CompressAI-Vision / FCTM result folders (`--import`). They have no "
          "per-image records, so none of their numbers has an interval and they are not resampled with the "
          "others; they are compared as given, on the images the other toolchain used. Their bpfp is their "
          "bpp times this run's ratio of feature points to pixels.", ""]
    md.append(_table(["tool", "folder", "metric (from)", "end_accuracy unit (from)"],
                     [[t.label, f"`{t.path}`", f"{METRIC_NAMES[t.metric]} ({t.metric_source})",
                       f"{t.unit} ({t.unit_source})"] for t in imported]))
    return md


def _plot(path, config, results, reference_quality, labels):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    metrics = config.metrics
    fig, axes = plt.subplots(1, len(metrics), figsize=(6.5 * len(metrics), 4.8), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        q0 = reference_quality[metric][0]
        for name, points in results.items():
            if metric not in points[0].quality:
                continue
            points = sorted(points, key=lambda p: p.bpfp)
            x = [getattr(p, config.rate_axis) for p in points]
            y = [p.quality[metric][0] for p in points]
            errors = None
            if points and points[0].quality[metric][1] is not None:
                cis = [interval(p.quality[metric][1]) for p in points]
                errors = np.array([[v - lo for v, (lo, _) in zip(y, cis)], [hi - v for v, (_, hi) in zip(y, cis)]])
                errors = np.nan_to_num(np.maximum(errors, 0))
            ax.errorbar(x, y, yerr=errors, marker="o", ms=4, capsize=2, label=labels[name],
                        linestyle="--" if name == config.anchor else "-")
        ax.axhline(q0, color="grey", lw=0.8, label="uncompressed")
        ax.axhline(q0 * (1 - config.near_lossless_drop), color="grey", lw=0.8, ls=":",
                   label=f"-{100 * config.near_lossless_drop:g} % (near-lossless)")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())    # less than a decade: labels collide
        ax.set_xlabel(RATE_AXES[config.rate_axis])
        ax.set_ylabel(METRIC_NAMES[metric])
        ax.grid(True, which="both", alpha=0.3)
    # one legend below the panels: long tool labels inside a panel cover the curves
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.suptitle(f"{config.name}: rate vs task quality (95 % bootstrap CI)")
    fig.tight_layout()
    fig.legend(handles, names, loc="upper center", bbox_to_anchor=(0.5, 0), fontsize=8, frameon=False)
    write_atomically(str(path), lambda f: fig.savefig(f, dpi=110, format="png", bbox_inches="tight"))
    plt.close(fig)
