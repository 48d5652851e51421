"""FeatJND on YOLOv5n P3–P5 (`bench_featjnd.py --task det`): the paper's claims on a one-stage detector.

Every coded measurement goes through the CTC runner (resumable; records and reports in the run
folders), and this module reads the records; only (b), which codes nothing, has its own loop.

Two estimators are tested side by side (ESTIMATORS): the paper's (one direction δ, per-token
steps: tools jnd and random<seed>) and the noise-tolerance one (f + δ ⊙ n just noticeable,
separable token × channel steps: tools jnd_noise and random_noise<seed>).

(a) Matched noise budget σ_tgt: the run of ctc/cfg/coco_yolov5n_featjnd.yaml (run or resumed
    here into --study-out). Per estimator and σ: AP50 of uniform, jnd and random (five seeds:
    mean ± std over seeds, and the interval of the seed-averaged AP50), and paired bootstrap
    differences.
(b) Matched NRMSE (‖f̂ − f‖ / ‖f‖ over the whole pyramid, per image): f + α·p against
    f + i.i.d. Gaussian noise of the same norm, evaluated here on the cached P3–P5 features, p = δ
    (the paper's) or δ ⊙ n (the noise estimator's, n one seeded unit-variance uniform draw);
    plus f + p and f + 2p themselves (α = 1 should be just noticeable on the evaluation set too).
(c) Real coded bits: the coco_yolov5n_featjnd_bits run (--bits-out, default
    docs/results/ctc_coco_yolov5n_featjnd_bits, run or resumed here; coco_yolov5n's condition
    with only uniform and the separable allocation): BD-rate (AP50 vs bpp, pchip, envelope rule)
    of the FeatJND allocations it holds (FEATJND_TOOLS) against token-wise uniform, with the
    report's bootstrap interval. The paper's allocations were measured in the coco_yolov5n run.
(d) Diagnostics of each estimator on the evaluation images, per level.

AP50 is pycocotools' bbox AP at IoU 0.5 on the 79 annotated coco-mini images; intervals are 95 %
percentile intervals over the study configuration's report.bootstrap resamples of the images
(one fixed set, so comparisons are paired: each resample re-accumulates COCOeval); --bootstrap
applies to classification only. The estimator of (b) and (d) is the one the study's jnd tool
codes with (its JndWeights).
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
STUDY_CONFIG = "coco_yolov5n_featjnd"
BITS_CONFIG = "coco_yolov5n_featjnd_bits"
# coco_yolov5n tools compared in (c)
FEATJND_TOOLS = ("featjnd", "random", "jnd_rd", "jnd_separable", "jnd_channel", "random_separable")
# (a), (b), (d) per estimator: (title, jnd tool, prefix of the random tools) in coco_yolov5n_featjnd
ESTIMATORS = (("the paper's estimator (direction δ, per-token steps)", "jnd", "random"),
              ("the noise-tolerance estimator (f + δ ⊙ n, separable steps)", "jnd_noise", "random_noise"))
TARGET_SAVING = 20.0                  # % BD-rate against uniform the best allocation should save (issue 23)
NOISE_SEED = 20240601
METRIC = "bbox_ap50"


def ensure_run(name, out, args):
    """Run (or resume: only missing records are computed) the CTC config `name` into `out`."""
    from ctc.config import load_config, resolve_config_path
    from ctc.runner import run
    from ctc_sweep import runner_backend

    path = resolve_config_path(name)
    config = load_config(path)
    written, wall, mismatches = run(config, path, out, data=args.coco, weights=args.yolo_weights,
                                    workers=args.workers, limit=args.limit, cache_root=args.feature_cache,
                                    progress=False, command=f"bench_featjnd.py --task det ({name})",
                                    backend=runner_backend(args))
    print(f"{name}: {written} records written in {wall:.0f} s into {out}" + (
        f"; {mismatches} MD5 MISMATCHES" if mismatches else ""), flush=True)
    if mismatches:
        raise SystemExit(f"bench_featjnd: {mismatches} decoded-feature MD5 mismatches in {out}")


def shown(path):
    """A path as the report shows it: relative to the repository when inside it."""
    path = Path(path).resolve()
    return path.relative_to(REPO) if path.is_relative_to(REPO) else path


def report_numbers(out, data):
    """(config, images, reference quality, {tool: [PointResult]}, bootstrap) of a run folder."""
    from ctc.report import compute, load_run

    config, state, records = load_run(out)
    images, reference, results, bootstrap = compute(config, state, records, data)
    return config, images, reference, results, bootstrap


def interval_text(value, samples):
    from ctc.stats import interval

    lo, hi = interval(samples)
    return f"{value:.1f} [{lo:.1f}, {hi:.1f}]"


def compare(samples):
    """'>' / '<' when the paired interval excludes 0, else '≈'."""
    from ctc.stats import interval

    lo, hi = interval(samples)
    return ">" if lo > 0 else "<" if hi < 0 else "≈"


def matched_sigma(rep, results, title, jnd_tool, random_prefix):
    """(a) for one estimator: tables and verdict rows from the study run."""
    randoms = sorted(name for name in results if re.fullmatch(rf"{random_prefix}\d+", name))
    rows, diffs, verdicts = [], [], []
    for k, point in enumerate(results["uniform"]):
        sigma = point.options["NoiseBudget"]
        uniform = results["uniform"][k].quality[METRIC]
        jnd = results[jnd_tool][k].quality[METRIC]
        seeds = np.array([results[name][k].quality[METRIC][0] for name in randoms])
        random_value = float(seeds.mean())
        random_samples = np.mean([results[name][k].quality[METRIC][1] for name in randoms], axis=0)
        bpp = {"uniform": results["uniform"][k].bpp, "jnd": results[jnd_tool][k].bpp}
        bpp["random"] = float(np.mean([results[name][k].bpp for name in randoms]))
        rows.append([f"{sigma:g}", "uniform", interval_text(*uniform), "", f"{bpp['uniform']:.4f}",
                     f"{results['uniform'][k].nrmse:.3f}"])
        rows.append([f"{sigma:g}", "jnd", interval_text(*jnd), "", f"{bpp['jnd']:.4f}",
                     f"{results[jnd_tool][k].nrmse:.3f}"])
        rows.append([f"{sigma:g}", f"random ({len(randoms)} seeds)", interval_text(random_value, random_samples),
                     f"{seeds.mean():.1f} ± {seeds.std(ddof=1):.1f}", f"{bpp['random']:.4f}",
                     f"{np.mean([results[name][k].nrmse for name in randoms]):.3f}"])
        pairs = {"jnd − random": (jnd[0] - random_value, jnd[1] - random_samples),
                 "random − uniform": (random_value - uniform[0], random_samples - uniform[1]),
                 "jnd − uniform": (jnd[0] - uniform[0], jnd[1] - uniform[1])}
        diffs.append([f"{sigma:g}"] + [interval_text(*pair) for pair in pairs.values()])
        signs = [compare(pair[1]) for pair in pairs.values()]
        holds = signs[0] == ">" and signs[1] == ">"
        verdicts.append([f"{jnd_tool}, σ = {sigma:g}", f"jnd {signs[0]} random", f"random {signs[1]} uniform",
                         f"jnd {signs[2]} uniform", "yes" if holds else "no"])
    rep.both(f"## (a) Matched noise budget σ_tgt, {title} (steps scaled so that E[Δ²/12] = σ², coded)")
    rep.both()
    rep.table(["σ_tgt", "mode", "AP50 % [CI]", "seeds mean ± std", "bpp", "NRMSE"], rows,
              align="lllrrr")
    rep.both("Paired AP50 differences (points, [95 % CI]; random = the seed-averaged AP50):")
    rep.both()
    rep.table(["σ_tgt", "jnd − random", "random − uniform", "jnd − uniform"], diffs)
    return verdicts


def level_diagnostics(x, d, objectness, noise_kind, epsilon):
    """(d) for one level (C, H, W) of one image: five numbers, DIAGNOSTIC_COLUMNS[noise_kind]."""
    from encoder.featjnd.allocation import absolute_tolerance, log_steps, separable_fit, token_tolerance

    if noise_kind:
        log_step = log_steps(x, d)
        tokens, channels = separable_fit(log_step)
        residual = log_step - log_step.mean() - tokens[None] - channels[:, None, None]
        return [float(log_step.mean()), float(tokens.std()), float(channels.std()),
                float(1.0 - residual.var() / max(log_step.var(), 1e-30)),
                float(np.corrcoef(tokens.ravel(), objectness.ravel())[0, 1])]
    s_rel = token_tolerance(x, d, epsilon)
    s_abs = absolute_tolerance(d)
    return [float(np.abs(d).mean() / np.abs(x).mean()), float(s_rel.std() / s_rel.mean()),
            float(s_abs.std() / s_abs.mean()), float(np.corrcoef(s_rel.ravel(), objectness.ravel())[0, 1]),
            float(np.corrcoef(s_abs.ravel(), objectness.ravel())[0, 1])]


DIAGNOSTIC_COLUMNS = {
    False: ["mean abs δ / mean abs f", "CV of s_t (jnd)", "CV of s_t (jnd_abs)", "corr(s_t jnd, objectness)",
            "corr(s_t jnd_abs, objectness)"],
    True: ["mean log2 √12δ (capped)", "std of u_t (octaves)", "std of v_c (octaves)", "R² of the separable fit",
           "corr(u_t, objectness)"]}


def perturbation_study(rep, config, images, bootstrap, data, weights, estimator_path, targets, title,
                       cache_root=None):
    """(b) and (d) for one estimator: f + α·p against Gaussian noise at matched NRMSE (p = δ, or δ ⊙ n
    for a noise estimator), and its diagnostics."""
    import torch

    from ctc.datasets import coco_paths, load_samples
    from ctc.feature_cache import DEFAULT_ROOT, FeatureCache
    from ctc.metrics import CocoScorer
    from ctc.tasks.evaluation import build_task
    from encoder.featjnd.estimator import load_estimator
    from encoder.options import default_options

    torch.set_num_threads(1)
    epsilon = default_options()["JndEpsilon"]
    task = build_task(config, weights)
    cache = FeatureCache(cache_root or DEFAULT_ROOT, task)
    estimator = load_estimator(estimator_path)
    noise_kind = estimator.output == "noise"
    p = "δ ⊙ n" if noise_kind else "δ"
    uniform_rng = np.random.default_rng(NOISE_SEED + 1)
    samples = {s.id: s for s in load_samples(config, Path(data))}
    scorer = CocoScorer(coco_paths(Path(data), config.dataset)[1], images)
    rng = np.random.default_rng(NOISE_SEED)
    kinds = [("jnd", t) for t in targets] + [("gauss", t) for t in targets] + [("alpha", 1.0), ("alpha", 2.0)]
    records = {kind: [] for kind in kinds}
    diagnostics = []
    for image in images:
        sample = samples[image]
        tensors, context, _ = cache.of_sample(sample)
        names = list(task.net.names)
        levels = [torch.from_numpy(np.ascontiguousarray(tensors[n], dtype=np.float32)) for n in names]
        with torch.no_grad():
            delta = [d.numpy().astype(np.float64) for d in estimator(levels)]
        perturbation = [d * uniform_rng.uniform(-np.sqrt(3.0), np.sqrt(3.0), d.shape) for d in delta] \
            if noise_kind else delta
        f = [tensors[n].astype(np.float64) for n in names]
        f_norm = np.sqrt(sum(float((x ** 2).sum()) for x in f))
        d_norm = np.sqrt(sum(float((d ** 2).sum()) for d in perturbation))
        noise = [rng.standard_normal(x.shape) for x in f]
        g_norm = np.sqrt(sum(float((g ** 2).sum()) for g in noise))
        for kind, target in kinds:
            if kind == "alpha":
                distorted = [x + target * d for x, d in zip(f, perturbation)]
            else:
                direction, norm = (perturbation, d_norm) if kind == "jnd" else (noise, g_norm)
                distorted = [x + (target * f_norm / norm) * u for x, u in zip(f, direction)]
            prediction = task.back({n: x.astype(np.float32) for n, x in zip(names, distorted)}, context)
            records[kind, target].append({"image": image, "prediction": prediction})
        with torch.no_grad():
            raw = task.net.head_logits({n: torch.from_numpy(x.astype(np.float32)) for n, x in zip(names, f)})
        row = [d_norm / f_norm]
        for x, d, logits in zip(f, delta, raw):
            objectness = torch.sigmoid(logits[0, :, :, :, 4]).amax(dim=0).numpy()      # best anchor per token
            row += level_diagnostics(x[0], d[0], objectness, noise_kind, epsilon)
        diagnostics.append(row)

    quality = {}
    for key, recs in records.items():
        evaluation = scorer.evaluation(recs, "bbox")
        quality[key] = (scorer.stats(evaluation)[1],
                        np.array([scorer.stats(evaluation, row)[1] for row in bootstrap.indices]))
    rows, verdicts = [], []
    for target in targets:
        jnd, gauss = quality["jnd", target], quality["gauss", target]
        sign = compare(jnd[1] - gauss[1])
        rows.append([f"{target:g}", interval_text(*jnd), interval_text(*gauss),
                     interval_text(jnd[0] - gauss[0], jnd[1] - gauss[1])])
        verdicts.append([f"NRMSE {target:g}", f"f + α·{p} {sign} Gaussian", "yes" if sign == ">" else "no"])
    rep.both(f"## (b) Matched NRMSE, {title}: f + α·{p} against i.i.d. Gaussian noise of the same norm "
             "(per image, whole pyramid)")
    rep.both()
    rep.table(["NRMSE", f"f + α·{p}: AP50 % [CI]", "f + Gaussian: AP50 % [CI]", "JND − Gaussian"], rows)
    one, two = quality["alpha", 1.0], quality["alpha", 2.0]
    diagnostics = np.array(diagnostics)
    rep.both(f"At the estimator's own scale on these evaluation images (never seen in training or calibration): "
             f"f + {p} gives AP50 {interval_text(*one)}, f + 2·{p} {interval_text(*two)}; "
             f"mean ‖{p}‖/‖f‖ = {diagnostics[:, 0].mean():.3f}.")
    rep.both()
    rep.both(f"## (d) Diagnostics of {title} (means over the evaluation images)")
    rep.both()
    diag_rows = [[name] + [f"{v:+.3f}" if "corr" in column else f"{v:.3f}" for v, column in
                           zip(diagnostics[:, 1 + 5 * k: 6 + 5 * k].mean(axis=0), DIAGNOSTIC_COLUMNS[noise_kind])]
                 for k, name in enumerate(task.net.names)]
    rep.table(["level"] + DIAGNOSTIC_COLUMNS[noise_kind], diag_rows)
    if noise_kind:
        rep.both("(u_t, v_c: the token and channel terms of the separable fit of L = log2 √12δ, the allocator's; "
                 "R²: the share of L's variance the fit explains; objectness as below.)")
    else:
        rep.both("(objectness: the clean head's best anchor objectness at the token; a tolerance that follows the "
                 "detector's attention correlates negatively with it.)")
    rep.both()
    return verdicts, (one, two)


def coded_bits(rep, config, reference, results, bootstrap):
    """(c): BD-rates of the FeatJND allocations against uniform from the coco_yolov5n_featjnd_bits run."""
    from ctc.report import bd_rates

    tools = [name for name in FEATJND_TOOLS if name in results]
    point_rows = []
    for name in ["uniform"] + tools:
        for point in results[name]:
            value, samples = point.quality[METRIC]
            map_bpp = np.mean([record.get("step_map_bits", 0.0) / record["pixels"] for record in point.records])
            point_rows.append([name, point.label, f"{point.bpp:.4f}", f"{map_bpp:.4f}", f"{point.nrmse:.3f}",
                               interval_text(value, samples), f"{point.md5_ok}/{len(point.records)}"])
    rep.both("## (c) Real coded bits (coco_yolov5n_featjnd_bits, steps at QP's noise power; bits = whole streams)")
    rep.both()
    rep.table(["tool", "rate point", "bpp", "of which map", "NRMSE", "AP50 % [CI]", "MD5 ok"], point_rows,
              align="llrrrrr")
    rep.both("(of which map: the step-offset map's own code length, the records' step_map_bits, per pixel.)")
    rep.both()
    rows, verdicts = [], []
    by_tool = {}
    for tool, metric, value, ci, overlap in bd_rates(config, results, bootstrap, reference="uniform"):
        if metric == METRIC and tool in tools:
            by_tool[tool] = (value, ci)
            rows.append([tool, f"{value:+.1f} %", f"[{ci[0]:+.1f}, {ci[1]:+.1f}]",
                         f"{overlap[0]:.1f} .. {overlap[1]:.1f}" if overlap else "n/a"])
    rep.both(f"BD-rate against token-wise uniform (AP50 vs bpp; uncompressed AP50 {reference[METRIC][0]:.1f}; "
             "negative = fewer bits):")
    rep.both()
    rep.table(["allocation", "BD-rate", "95 % CI", "AP50 overlap"], rows, align="lrrr")
    for tool, (value, ci) in by_tool.items():
        saves = ci[1] < 0
        verdicts.append([f"{tool} vs uniform", f"{value:+.1f} % [{ci[0]:+.1f}, {ci[1]:+.1f}]",
                         "saves bits" if saves else "costs bits" if ci[0] > 0 else "no difference"])
    return verdicts, by_tool


def main_detection(args, rep, command):
    from encoder.featjnd.allocation import weights_path

    start = time.perf_counter()
    ensure_run(STUDY_CONFIG, args.study_out, args)
    ensure_run(BITS_CONFIG, args.bits_out, args)
    config, images, reference, study, bootstrap = report_numbers(args.study_out, args.coco)
    main_config, _, main_reference, main, main_bootstrap = report_numbers(args.bits_out, args.coco)
    # (b) and (d) use the estimators the study's jnd tools code with (their JndWeights)
    estimators = [(title, jnd_tool, random_prefix, weights_path(config.tool(jnd_tool).options["JndWeights"]))
                  for title, jnd_tool, random_prefix in ESTIMATORS if jnd_tool in study]

    rep.both("# FeatJND validation: YOLOv5n P3–P5 on coco-mini (detection)")
    rep.both()
    rep.mdonly("Produced by `benchmarks/bench_featjnd.py --task det` (method: benchmarks/featjnd_detection.py) with:")
    rep.mdonly()
    rep.mdonly("    " + command)
    rep.mdonly()
    rep.both("Estimators: " + "; ".join(f"{title}: {shown(path)}" for title, _, _, path in estimators) + ". "
             f"{len(images)} annotated coco-mini images, uncompressed AP50 {reference[METRIC][0]:.1f}; "
             f"intervals: {bootstrap.resamples} paired bootstrap resamples of the images.")
    rep.both(f"Runs: {shown(args.study_out)} ({STUDY_CONFIG}, part a), {shown(args.bits_out)} ({BITS_CONFIG}, part c).")
    rep.both()
    verdicts_a, verdicts_b = [], []
    for title, jnd_tool, random_prefix, path in estimators:
        verdicts_a += matched_sigma(rep, study, title, jnd_tool, random_prefix)
    for title, jnd_tool, random_prefix, path in estimators:
        verdicts, _ = perturbation_study(rep, config, images, bootstrap, args.coco, args.yolo_weights, path,
                                         args.nrmse_det, title, args.feature_cache)
        verdicts_b += [[f"{jnd_tool}, {row[0]}"] + row[1:] for row in verdicts]
    verdicts_c, by_tool = coded_bits(rep, main_config, main_reference, main, main_bootstrap)
    rep.both("## Verdicts (a difference counts where its paired 95 % CI excludes 0)")
    rep.both()
    rep.table(["(a) matched σ_tgt", "jnd vs random", "random vs uniform", "jnd vs uniform",
               "claim jnd > random > uniform holds"], verdicts_a, align="lllll")
    rep.table(["(b) matched NRMSE", "comparison", "claim holds"], verdicts_b, align="lll")
    rep.table(["(c) coded bits", "BD-rate [CI]", "verdict"], verdicts_c, align="lll")
    if by_tool:
        best = min(by_tool, key=lambda t: by_tool[t][0])
        value, ci = by_tool[best]
        met = value <= -TARGET_SAVING and ci[1] < 0
        rep.both(f"Target (best allocation ≥ {TARGET_SAVING:g} % BD-rate saving against uniform, interval excluding "
                 f"0): best is {best} at {value:+.1f} % [{ci[0]:+.1f}, {ci[1]:+.1f}]: {'met' if met else 'not met'}.")
        rep.both()
    rep.both(f"Wall time {time.perf_counter() - start:.0f} s (runs resumed from their records).")
    return 0
