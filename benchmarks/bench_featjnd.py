"""FeatJND validation: EfficientNet-Lite0 (backbone or blocks split) and YOLOv5n P3–P5 (ARCHITECTURE.md §4.2).

--task det runs the detection study instead (benchmarks/featjnd_detection.py: CTC runs of
coco_yolov5n_featjnd and coco_yolov5n plus a matched-NRMSE loop; AP50 on coco-mini) and
writes featjnd_validation_yolov5n.md. What follows describes classification (--task cls).
--split blocks uses the 320×7×7 output of the last MBConv block, whose head (1×1 conv,
BN, ReLU6 per token, then the pool) is spatial; its estimator is featjnd_<model>-blocks_*.
--allocation separable tests the noise-tolerance estimator (featjnd_<model>[-blocks]-noise_*)
instead: jnd and random become its separable token × channel steps and their permutation
(StepAllocation jnd_separable and random_separable), the perturbation of (b) is δ ⊙ n (n one
seeded unit-variance uniform draw), and the results go to featjnd_validation[_blocks]_separable.md.

Checks the paper's claims with the trained estimator G_θ on the 200 images of
../shared/data/imagenet-dev (backbone: features 1280×7×7 after the head
conv/BN/ReLU6). Every coded setting of (a), (c) and (d) is a rate point of one
CTC configuration (benchmarks/ctc_sweep.py writes it: cfg/featjnd.cfg, one tool
per allocation and seed; --run-out keeps the run folder, so an interrupted run
resumes), run by ctc/runner.py on the local pool or a Ray cluster (--backend):
the encoder's StepAllocator computes δ and the steps, every stream is decoded and
its decoded-feature MD5 checked, and the decoded features are classified. (b)
and the diagnostics of (d) read the same features from the runner's feature
cache and compute δ = G_θ(f) here. The token tolerance is
s_t = mean_c |δ| / (|f| + ε) (token_tolerance, ε = --epsilon, default the
encoder's JndEpsilon). Accuracy is always measured with the frozen head
(EfficientNetLiteSplit().back) on the distorted features: top-1 against the
labels and top-1 agreement with the uncompressed features' prediction, each
with a 95 % percentile bootstrap interval over images (--bootstrap resamples,
fixed seed).

(a) Matched noise budget. For each σ_tgt (--sigmas), the rate point
    {NoiseBudget: σ}: steps Δ_t = λ·w_t with w = shaped_tolerance(s, mode,
    seed) and λ such that E_t[Δ_t²/12] = σ² (step_exponents(w, QP, σ): snapped
    to the 1/8-octave exponent grid), RoundingOffset 0.5. Modes: jnd, random
    (the same s permuted over tokens, RandomSeed --seeds; mean ± std over
    seeds, and the bootstrap interval of the seed-averaged per-image accuracy)
    and uniform. Also: realised NRMSE and coded bits, and paired bootstrap
    intervals of the agreement differences jnd − random and jnd − uniform.
(b) Matched NRMSE (||f̂ − f||₂ / ||f||₂ per image) at --nrmse targets:
    f + α·δ (α per image) against f + i.i.d. Gaussian noise scaled per image to
    the same norm, and, as a control for the head's blindness to zero-mean
    spatial patterns, Gaussian noise with each channel's spatial mean removed.
(c) Real coded bits. For jnd, random (seed 0) and uniform, the rate points
    {QP: q} for the QPs of --qps-jnd / --qps-random / --qps-uniform (steps
    e = step_exponents(w, QP, 0): the noise power of QP's uniform step);
    bits = 8 × len(stream) (whole stream incl. parameter set and MD5 unit),
    bits per feature point = bits / feature points; the step map's share is
    the record's step_map_bits (its ideal code length, −log2 P).
    BD-rate (bjontegaard, pchip, log rate over the overlapping accuracy range)
    of jnd and random against uniform, with agreement and with top-1 as the
    quality axis, and a bootstrap interval over images (--bd-bootstrap
    resamples: curves recomputed per resample; resamples whose curves are not
    strictly monotone or do not overlap are skipped and counted).
(d) ε sensitivity (jnd at {NoiseBudget: --sigma-mid, JndEpsilon: ε} for each
    --epsilons value) and a
    diagnostic of the estimator: mean |δ|, fraction |δ| ≥ 9.99 (the clamp is
    ±10), per-channel spatial mean of δ relative to mean |δ| and the share of
    ||δ||² in the per-channel spatial means (i.i.d. noise: ≈ 0.14 and 1/49;
    the head only sees spatial means), the head's agreement on f + δ itself,
    and the coefficient of variation of s_t over the 49 tokens.

Writes docs/results/featjnd_validation.md (--out) with the tables and the
command, and featjnd_matched_sigma.png, featjnd_matched_nrmse.png,
featjnd_rate.png next to it.

The run reported in docs/results (about 10 minutes on 2 cores; the features are
computed once into the runner's cache):

    .venv/bin/python benchmarks/bench_featjnd.py

Quick smoke run (20 images):

    .venv/bin/python benchmarks/bench_featjnd.py --limit 20 --bootstrap 200 --bd-bootstrap 50 --out /tmp/featjnd_smoke
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402

from bench_effnet_rate import DEFAULT_DATA  # noqa: E402
from ctc_sweep import add_runner_arguments, imagenet_config, run_sweep  # noqa: E402
from ctc.stats import Bootstrap, bd_rate, interval  # noqa: E402

DEFAULT_OUT = REPO / "docs" / "results"
BOOT_SEED = 20240601
NOISE_SEED = 7


def parse_floats(text):
    return [float(v) for v in text.split(",") if v.strip()]


def parse_ints(text):
    if ":" in text:
        parts = [int(p) for p in text.split(":")]
        return list(range(parts[0], parts[1] + 1, parts[2] if len(parts) > 2 else 1))
    return [int(v) for v in text.split(",") if v.strip()]


# -- the coded settings: one CTC configuration -----------------------------------------------------

def coded_settings(sigmas, seeds, epsilons, sigma_mid, modes_c, estimator, epsilon, separable=False):
    """The coded settings in table order, [(mode, tool, rate point)], and the CTC tools that hold
    them: cfg/featjnd.cfg with one tool per allocation and seed; a rate point sets NoiseBudget (a),
    NoiseBudget and JndEpsilon (d) or QP (c). separable: jnd and random are jnd_separable and
    random_separable."""
    modes_a = [("jnd", 0)] + [("random", s) for s in seeds] + [("uniform", 0)]
    tools = {}

    def setting(mode, seed, point):
        name = f"random{seed}" if mode == "random" else mode
        if mode == "uniform":
            options = {"StepAllocation": "uniform"}
        else:
            options = {"JndWeights": str(estimator), "JndEpsilon": epsilon}
            if separable:
                options["StepAllocation"] = "jnd_separable"
            if mode == "random":
                options.update(StepAllocation="random_separable" if separable else "random", RandomSeed=seed)
        tool = tools.setdefault(name, {"cfg": "cfg/featjnd.cfg", "options": options, "label": name,
                                       "rate_points": []})
        if point not in tool["rate_points"]:     # (d) at the default ε is an (a) point
            tool["rate_points"].append(point)
        return mode, name, point

    settings = [setting(mode, seed, {"NoiseBudget": sigma}) for sigma in sigmas for mode, seed in modes_a]
    settings += [setting("jnd", 0, {"NoiseBudget": sigma_mid, **({"JndEpsilon": eps} if eps != epsilon else {})})
                 for eps in epsilons]
    settings += [setting(mode, seed, {"QP": qp}) for mode, seed, qps in modes_c for qp in qps]
    return modes_a, settings, tools


def estimator_deltas(estimator_path, features):
    """δ = G_θ(f) of every image (float32, batches of 25)."""
    import torch

    from encoder.featjnd.estimator import load_estimator

    estimator = load_estimator(estimator_path)
    out = []
    with torch.no_grad():
        for start in range(0, len(features), 25):
            out.append(estimator(torch.from_numpy(features[start:start + 25])).numpy())
    return np.concatenate(out)


def estimator_diagnostics(f, d, s):
    """Per image: mean |δ|, share at the ±10 clamp, DC share of δ, the CV and max/min of s_t."""
    absd = np.abs(d)
    dc = d.mean(axis=(1, 2))
    return np.array([
        absd.mean(),
        np.mean(absd >= 9.99),
        np.abs(dc).mean() / max(absd.mean(), 1e-300),
        d.shape[1] * d.shape[2] * np.sum(dc ** 2) / max(np.sum(d ** 2), 1e-300),
        s.std() / max(s.mean(), 1e-300),
        s.max() / max(s.min(), 1e-300),
    ])



# -- statistics -----------------------------------------------------------------------------------

class Boot(Bootstrap):
    """ctc.stats.Bootstrap with percentages: one fixed set of resamples (comparisons are paired)."""

    def __init__(self, n, resamples, seed=BOOT_SEED):
        super().__init__(n, resamples, seed)
        self.idx = self.indices

    def ci(self, per_image):
        """(mean, lo, hi) in % of a per-image 0/1 (or averaged) vector."""
        values = np.asarray(per_image, dtype=float)
        lo, hi = interval(self.means(values))
        return 100 * values.mean(), 100 * lo, 100 * hi


def fmt_ci(m, lo, hi, width=19):
    return f"{m:5.1f} [{lo:5.1f},{hi:5.1f}]".rjust(width)


def strictly_monotone(values):
    d = np.diff(np.asarray(values, dtype=float))
    return bool(np.all(d > 0) or np.all(d < 0))


def bd_rate_or_none(rate_anchor, q_anchor, rate_test, q_test, use_envelope=False):
    """pchip BD-rate (%) of test vs anchor (ctc.stats.bd_rate); None when undefined. Without
    use_envelope, a curve that is not strictly monotone in rate and quality is refused as a whole
    instead of being reduced to its envelope."""
    if not use_envelope:
        for r, q in ((rate_anchor, q_anchor), (rate_test, q_test)):
            if not (strictly_monotone(r) and strictly_monotone(q)):
                return None
    value = bd_rate(rate_anchor, q_anchor, rate_test, q_test)
    return None if not np.isfinite(value) else value


# -- main -----------------------------------------------------------------------------------------

class Report:
    """Prints and collects markdown."""

    def __init__(self):
        self.md = []

    def out(self, text=""):
        print(text, flush=True)

    def both(self, text=""):
        print(text, flush=True)
        self.md.append(text)

    def mdonly(self, text=""):
        self.md.append(text)

    def table(self, header, rows, align=None):
        """Print a fixed-width table and add it to the markdown as a pipe table."""
        cols = list(zip(*([header] + rows))) if rows else [[h] for h in header]
        widths = [max(len(str(c)) for c in col) for col in cols]
        print("  " + "  ".join(str(h).rjust(w) for h, w in zip(header, widths)))
        for r in rows:
            print("  " + "  ".join(str(c).rjust(w) for c, w in zip(r, widths)))
        print(flush=True)
        self.md.append("| " + " | ".join(str(h) for h in header) + " |")
        self.md.append("|" + "|".join(("---:" if (align is None or align[i] == "r") else ":---")
                                      for i in range(len(header))) + "|")
        for r in rows:
            self.md.append("| " + " | ".join(str(c).strip() for c in r) + " |")
        self.md.append("")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"image folder with labels.csv (cls; default "
                    f"{DEFAULT_DATA})")
    ap.add_argument("--model", default="efficientnet-lite0")
    ap.add_argument("--weights", help="FeatJND estimator .safetensors (default: the shipped "
                    "encoder/featjnd/weights/featjnd_<model>[-blocks]_<hash>.safetensors)")
    ap.add_argument("--epsilon", type=float, help="ε of s_t for (a)-(c) (default: the encoder's JndEpsilon)")
    ap.add_argument("--sigmas", default="1.5,2.5,3.25,3.5,4.5", help="σ_tgt values of (a)")
    ap.add_argument("--seeds", default="0,1,2,3,4", help="permutation seeds of random in (a)")
    ap.add_argument("--nrmse", default="1,3,5,10,20", help="NRMSE targets of (b)")
    ap.add_argument("--qps-jnd", default="64,72,76,78,82,86", help="QPs of jnd in (c)")
    ap.add_argument("--qps-random", default="64,72,76,78,82,86", help="QPs of random (seed 0) in (c)")
    ap.add_argument("--qps-uniform", default="64,72,74,75,76,77", help="QPs of uniform in (c)")
    ap.add_argument("--epsilons", default="0.001,0.01,0.1,1", help="ε values of (d)")
    ap.add_argument("--sigma-mid", type=float, default=3.5, help="σ_tgt of the ε sweep (d)")
    ap.add_argument("--bootstrap", type=int, default=1000,
                    help="bootstrap resamples for intervals (cls; det: the configs' report.bootstrap)")
    ap.add_argument("--bd-bootstrap", type=int, default=200, help="bootstrap resamples for BD-rate")
    ap.add_argument("--bd-floor", type=float, default=50.0,
                    help="second BD-rate: only points with quality ≥ this %% (default 50)")
    add_runner_arguments(ap, run_folder_flag="--run-out")    # --out is the results folder here
    ap.add_argument("--limit", type=int, help="first N images only")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"results folder (default {DEFAULT_OUT})")
    ap.add_argument("--task", choices=("cls", "det"), default="cls",
                    help="cls: EfficientNet-Lite on imagenet-dev; det: YOLOv5n P3-P5 on coco-mini")
    ap.add_argument("--split", choices=("backbone", "blocks"), default="backbone", help="EfficientNet-Lite split (cls)")
    ap.add_argument("--allocation", choices=("per-token", "separable"), default="per-token",
                    help="cls: the paper's estimator with per-token steps, or the noise-tolerance estimator with "
                         "separable token × channel steps")
    ap.add_argument("--coco", type=Path, default=REPO.parent / "shared" / "data" / "coco-mini",
                    help="coco-mini root (det)")
    ap.add_argument("--yolo-weights", type=Path,
                    default=REPO.parent / "shared" / "data" / "weights" / "yolov5n_coco.safetensors",
                    help="YOLOv5n weights (det)")
    ap.add_argument("--study-out", type=Path, default=DEFAULT_OUT / "ctc_coco_yolov5n_featjnd",
                    help="run folder of coco_yolov5n_featjnd, part (a) (det)")
    ap.add_argument("--bits-out", type=Path, default=DEFAULT_OUT / "ctc_coco_yolov5n_featjnd_bits",
                    help="run folder of coco_yolov5n_featjnd_bits, part (c) (det)")
    ap.add_argument("--nrmse-det", default="0.1,0.2,0.3,0.5,0.7", help="NRMSE targets of (b) (det)")
    args = ap.parse_args(argv)
    command = ".venv/bin/python benchmarks/bench_featjnd.py" + "".join(
        " " + shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    if args.task == "det":
        from featjnd_detection import main_detection

        args.nrmse_det = parse_floats(args.nrmse_det)
        rep = Report()
        main_detection(args, rep, command)
        args.out.mkdir(parents=True, exist_ok=True)
        md_path = args.out / "featjnd_validation_yolov5n.md"
        md = "\n".join(rep.md) + "\n"
        discussion = args.out / "featjnd_discussion_yolov5n.md"
        if discussion.is_file():   # hand-written interpretation, kept across re-runs
            md += "\n" + discussion.read_text()
        md_path.write_text(md)
        rep.out(f"Wrote {md_path}")
        return 0
    separable = args.allocation == "separable"
    model_name = (args.model if args.split == "backbone" else f"{args.model}-{args.split}") + (
        "-noise" if separable else "")
    t0 = time.perf_counter()
    from encoder.featjnd.allocation import weights_path
    from encoder.options import default_options

    epsilon = args.epsilon if args.epsilon is not None else default_options()["JndEpsilon"]
    weights = str(Path(args.weights or weights_path(model_name)).resolve())

    sigmas, seeds, targets = parse_floats(args.sigmas), parse_ints(args.seeds), parse_floats(args.nrmse)
    epsilons = parse_floats(args.epsilons)
    modes_c = [("jnd", 0, parse_ints(args.qps_jnd)), ("random", 0, parse_ints(args.qps_random)),
               ("uniform", 0, parse_ints(args.qps_uniform))]
    modes_a, settings, tools = coded_settings(sigmas, seeds, epsilons, args.sigma_mid, modes_c, weights, epsilon,
                                              separable)
    n_a = len(sigmas) * len(modes_a)
    n_d = len(epsilons)
    n_cfg = len(settings)

    # Every coded setting is a CTC rate point: the runner codes, decodes (MD5-checked) and classifies.
    raw = imagenet_config(f"bench_featjnd_{args.split}" + ("_separable" if separable else ""), tools,
                          split=args.split, network=args.model,
                          description=f"bench_featjnd.py: FeatJND settings, {model_name}")
    sweep = run_sweep(raw, args, args.data, args.limit)
    n = len(sweep.images)
    label_arr, ref_arr = sweep.labels, sweep.reference_top1
    pred = np.stack([sweep.top1(tool, point) for _, tool, point in settings])
    bits = np.stack([sweep.field(tool, point, "bits") for _, tool, point in settings])
    nrmse = np.stack([sweep.field(tool, point, "nrmse") for _, tool, point in settings])
    map_bits = np.stack([sweep.field(tool, point, "step_map_bits", default=0.0)
                         for _, tool, point in settings[n_a + n_d:]])
    encode_ms = 1000 * np.mean([sweep.field(tool, point, "encode_s").mean() for _, tool, point in settings])
    checked, coded = sweep.md5_checks()

    # (b) and (d): the same images' features from the runner's cache; δ and the head in this process
    import torch

    from ctc.datasets import load_samples
    from ctc.feature_cache import DEFAULT_ROOT, FeatureCache
    from ctc.tasks.evaluation import ClassificationTask
    from encoder.featjnd.allocation import token_tolerance

    torch.set_num_threads(1)
    task = ClassificationTask(args.model, args.split)
    cache = FeatureCache(args.feature_cache or DEFAULT_ROOT, task)
    samples = {sample.id: sample for sample in load_samples(sweep.config, args.data)}
    features = np.stack([cache.of_sample(samples[image])[0][""] for image in sweep.images])
    delta = estimator_deltas(weights, features)
    net = task.net

    def predict(x):
        with torch.no_grad():
            return net.back(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).argmax(1).numpy()

    F = features.astype(np.float64)
    D = delta.astype(np.float64)
    p = "δ ⊙ n" if separable else "δ"     # the perturbation of (b) and of the α = 1 check
    if separable:      # the noise estimator's perturbation: δ ⊙ n, one seeded unit-variance uniform draw
        D = D * np.random.default_rng(NOISE_SEED + 1).uniform(-np.sqrt(3.0), np.sqrt(3.0), D.shape)
    diag = np.stack([estimator_diagnostics(f, d, token_tolerance(f, d, epsilon)) for f, d in zip(F, D)])
    fnorm = np.linalg.norm(F.reshape(n, -1), axis=1)
    dnorm = np.linalg.norm(D.reshape(n, -1), axis=1)
    gauss = np.random.default_rng(NOISE_SEED).standard_normal(F.shape)
    gauss_dc = gauss - gauss.mean(axis=(2, 3), keepdims=True)
    unit = {"jnd": D / dnorm[:, None, None, None],
            "gauss": gauss / np.linalg.norm(gauss.reshape(n, -1), axis=1)[:, None, None, None],
            "gauss_dcfree": gauss_dc / np.linalg.norm(gauss_dc.reshape(n, -1), axis=1)[:, None, None, None]}
    pred_b = {}
    for kind, u in unit.items():
        for t in targets:
            pred_b[kind, t] = predict(F + (t * fnorm)[:, None, None, None] * u)
    pred_delta1 = predict(F + D)
    pred_clean = predict(F)
    # the linear-head diagnostics apply where the head is pool + linear (the backbone split)
    head = (head_diagnostics(net.net._fc.weight.detach().double().numpy(), F, D, epsilon)
            if args.split == "backbone" else None)
    wall = time.perf_counter() - t0

    # ---------------------------------------------------------------------------------------------
    boot = Boot(n, args.bootstrap)
    top1 = pred == label_arr[None]
    agree = pred == ref_arr[None]
    rep = Report()
    points = int(np.prod(features.shape[1:]))
    w_hash = Path(weights).stem.rsplit("_", 1)[-1]

    rep.both(f"# FeatJND validation: EfficientNet-Lite0 ({args.split} split) on imagenet-dev")
    rep.both()
    rep.mdonly("Produced by `benchmarks/bench_featjnd.py` (see its docstring for the method) with:")
    rep.mdonly()
    rep.mdonly("    " + command)
    rep.mdonly()
    rep.both(f"Estimator: {os.path.relpath(weights, REPO)} (sha256 prefix {w_hash}); ε = {epsilon:g}")
    rep.both(f"Images: {n} of {args.data}, features {'×'.join(map(str, features.shape[1:]))} = "
             f"{points:,} points; uncompressed top-1 {np.mean(ref_arr == label_arr) * 100:.1f} % "
             f"(the head on the cached features agrees with the run's reference records on "
             f"{np.mean(pred_clean == ref_arr) * 100:.1f} %)")
    resumed = ("" if sweep.written >= coded
               else f"; {sweep.written:,} of them coded now, the rest read from the run folder")
    rep.both(f"{n_cfg} settings × {n} images = {coded:,} encodes of distinct rate points (one CTC run, "
             f"{args.workers} {args.backend} worker(s), {encode_ms:.1f} ms per encode; every stream decoded, "
             f"decoded-feature MD5 ok on {checked:,}{resumed}) + {len(pred_b) * n:,} noise trials in "
             f"{wall:.0f} s wall")
    rep.both(f"Intervals: 95 % percentile bootstrap over images, {args.bootstrap} resamples (seed {BOOT_SEED}).")
    rep.both()

    # ----- (a)
    rep.both("## (a) Matched noise budget σ_tgt (steps λ·w_t, E[Δ²/12] = σ²: the CTC rate points "
             "{NoiseBudget: σ})")
    rep.both()
    rep.both("Top-1 agreement with the uncompressed prediction and top-1 accuracy, % [95 % CI]; random: "
             f"seeds {seeds[0]}..{seeds[-1]}, mean ± std over seeds and the CI of the seed-averaged per-image "
             "score; NRMSE and bits: means over images (and seeds).")
    rep.both()
    rows, rows_diff = [], []
    summary_a, verdict_a, verdict_b = {}, {}, {}
    nm = len(modes_a)
    rnd = [k for k, (m, _) in enumerate(modes_a) if m == "random"]
    for si, sigma in enumerate(sigmas):
        base_k = si * nm
        uni_qp = int(np.rint(48 + 8 * np.log2(np.sqrt(12) * sigma)))
        for label, ks in (("jnd", [0]), ("random", rnd), ("uniform", [nm - 1])):
            ks = [base_k + k for k in ks]
            ag = agree[ks].mean(axis=0)
            t1 = top1[ks].mean(axis=0)
            a_ci, t_ci = boot.ci(ag), boot.ci(t1)
            if label == "random":
                per_seed_a = agree[ks].mean(axis=1) * 100
                per_seed_t = top1[ks].mean(axis=1) * 100
                extra_a = f"{per_seed_a.mean():.1f} ± {per_seed_a.std(ddof=1) if len(ks) > 1 else 0:.1f}"
                extra_t = f"{per_seed_t.mean():.1f} ± {per_seed_t.std(ddof=1) if len(ks) > 1 else 0:.1f}"
            else:
                extra_a = extra_t = ""
            summary_a[sigma, label] = (a_ci, t_ci)
            rows.append([f"{sigma:g}" + (f" (uniform QP {uni_qp})" if label == "jnd" else ""), label,
                         fmt_ci(*a_ci), extra_a, fmt_ci(*t_ci), extra_t,
                         f"{np.nanmean(nrmse[ks]):.3f}", f"{bits[ks].mean() / points:.4f}"])
        ag_j = agree[base_k].astype(float)
        ag_r = agree[[base_k + k for k in rnd]].mean(axis=0)
        ag_u = agree[base_k + nm - 1].astype(float)
        diffs = [boot.ci(ag_j - ag_r), boot.ci(ag_r - ag_u), boot.ci(ag_j - ag_u)]
        verdict_a[sigma] = diffs
        rows_diff.append([f"{sigma:g}"] + [fmt_ci(*d, width=21) for d in diffs])
    rep.table(["σ_tgt", "mode", "agree % [CI]", "agree seeds", "top-1 % [CI]", "top-1 seeds", "NRMSE", "bits/pt"],
              rows, align="llrrrrrr")
    rep.both("Paired differences in agreement (percentage points, [95 % CI], same bootstrap resamples; random = "
             "seed average):")
    rep.both()
    rep.table(["σ_tgt", "jnd − random", "random − uniform", "jnd − uniform"], rows_diff)

    # ----- (b)
    rep.both(f"## (b) Matched NRMSE: f + α·{p} against Gaussian noise of the same norm (per image)")
    rep.both()
    rows = []
    names = {"jnd": f"f + α·{p} (JND)", "gauss": "f + Gaussian (i.i.d.)",
             "gauss_dcfree": "f + Gaussian, channel spatial mean removed"}
    summary_b = {}
    for t in targets:
        for kind in unit:
            a_ci = boot.ci(pred_b[kind, t] == ref_arr)
            t_ci = boot.ci(pred_b[kind, t] == label_arr)
            summary_b[t, kind] = (a_ci, t_ci)
            rows.append([f"{t:g}", names[kind], fmt_ci(*a_ci), fmt_ci(*t_ci)])
    rep.table(["NRMSE", "distortion", "agree % [CI]", "top-1 % [CI]"], rows, align="llrr")
    rows = []
    for t in targets:
        d = (pred_b["jnd", t] == ref_arr).astype(float) - (pred_b["gauss", t] == ref_arr)
        d2 = (pred_b["jnd", t] == ref_arr).astype(float) - (pred_b["gauss_dcfree", t] == ref_arr)
        verdict_b[t] = (boot.ci(d), boot.ci(d2))
        rows.append([f"{t:g}", fmt_ci(*verdict_b[t][0], width=21), fmt_ci(*verdict_b[t][1], width=21)])
    rep.both("Paired agreement differences (percentage points [95 % CI]):")
    rep.both()
    rep.table(["NRMSE", "JND − Gaussian", "JND − DC-free Gaussian"], rows)

    # ----- (c)
    rep.both("## (c) Real coded bits (StepAllocation semantics: steps keep the noise power of QP's uniform step)")
    rep.both()
    rows = []
    curves = {}
    k = n_a + n_d
    for mode, seed, qps in modes_c:
        ks = list(range(k, k + len(qps)))
        k += len(qps)
        curves[mode] = ks
        for q, kk in zip(qps, ks):
            rows.append([mode + (f" (seed {seed})" if mode == "random" else ""), q, f"{bits[kk].mean():,.0f}",
                         f"{map_bits[kk - n_a - n_d].mean():,.0f}",
                         f"{bits[kk].mean() / points:.4f}", f"{np.nanmean(nrmse[kk]):.3f}",
                         fmt_ci(*boot.ci(agree[kk])), fmt_ci(*boot.ci(top1[kk]))])
    rep.table(["mode", "QP", "bits/image", "of which map", "bits/pt", "NRMSE", "agree % [CI]", "top-1 % [CI]"],
              rows, align="lrrrrrrr")
    rep.both("('of which map': the step-offset map's own code length, −log2 P under its adaptive model: the "
             "record's step_map_bits.)")
    rep.both()

    bd_boot = Boot(n, args.bd_bootstrap, seed=BOOT_SEED + 1)
    rows = []
    bd_results = {}
    for (qname, correct), floor in [(q, fl) for fl in (None, args.bd_floor)
                                    for q in (("agreement", agree), ("top-1", top1))]:
        for test in ("jnd", "random"):
            ka, kt = curves["uniform"], curves[test]
            if floor is not None:   # only the points whose full-sample quality reaches the floor
                ka = [k for k in ka if correct[k].mean() * 100 >= floor]
                kt = [k for k in kt if correct[k].mean() * 100 >= floor]
                if len(ka) < 2 or len(kt) < 2:
                    rows.append([qname, f"{test} vs uniform", f"≥ {floor:g} %", "n/a (< 2 points)", "", "", "",
                                 "", "", ""])
                    continue
            cells = []
            for use_env in (False, True):
                def bd_for(idx):
                    rate = bits[:, idx].mean(axis=1) / points
                    q = correct[:, idx].mean(axis=1) * 100
                    return bd_rate_or_none(rate[ka], q[ka], rate[kt], q[kt], use_env)

                point = bd_for(np.arange(n))
                vals = [bd_for(idx) for idx in bd_boot.idx]
                ok = np.array([v for v in vals if v is not None])
                skipped = len(vals) - len(ok)
                ci = (f"[{np.percentile(ok, 2.5):+.1f}, {np.percentile(ok, 97.5):+.1f}]" if len(ok) >= 20
                      else "n/a")
                bd_results[qname, test, floor, use_env] = (point, ci, skipped, len(vals))
                cells += ["n/a (non-monotone)" if point is None else f"{point:+.1f} %", ci, f"{skipped}/{len(vals)}"]
            qa, qt = correct[ka].mean(axis=1) * 100, correct[kt].mean(axis=1) * 100
            lo, hi = max(qa.min(), qt.min()), min(qa.max(), qt.max())
            rows.append([qname, f"{test} vs uniform", "all" if floor is None else f"≥ {floor:g} %"] + cells
                        + [f"{lo:.1f} .. {hi:.1f}" if hi > lo else "none"])
    rep.both(f"BD-rate (bjontegaard pchip, log bits/pt over the overlapping quality range; negative = fewer "
             f"bits than uniform). CI: {args.bd_bootstrap} bootstrap resamples of images, curves recomputed per "
             "resample. 'strict': resamples where a curve is not strictly monotone (or the curves do not "
             "overlap) are skipped and counted; 'envelope': each curve's dominated points (no better quality "
             "than a cheaper point) are dropped first, so ties and wiggles no longer void a resample. Points: "
             f"all six per mode, or only those whose full-sample quality is ≥ {args.bd_floor:g} % (this drops "
             "degenerate points such as an all-zero reconstruction, so the integral stays where the curves have "
             "samples):")
    rep.both()
    rep.table(["quality", "comparison", "points", "BD strict", "95 % CI", "skipped", "BD envelope", "95 % CI",
               "skipped", "overlap (%)"], rows, align="lllrrrrrrr")
    # the same without the step-map bits: how much of the difference is signalling, how much allocation
    net_bits = bits.astype(float).copy()
    net_bits[n_a + n_d:] -= map_bits
    rows = []
    for qname, correct in (("agreement", agree), ("top-1", top1)):
        for test in ("jnd", "random"):
            ka = [k for k in curves["uniform"] if correct[k].mean() * 100 >= args.bd_floor]
            kt = [k for k in curves[test] if correct[k].mean() * 100 >= args.bd_floor]
            if len(ka) < 2 or len(kt) < 2:
                continue

            def bd_net(idx):
                rate = net_bits[:, idx].mean(axis=1) / points
                q = correct[:, idx].mean(axis=1) * 100
                return bd_rate_or_none(rate[ka], q[ka], rate[kt], q[kt], True)

            point = bd_net(np.arange(n))
            ok = np.array([v for v in (bd_net(idx) for idx in bd_boot.idx) if v is not None])
            ci = f"[{np.percentile(ok, 2.5):+.1f}, {np.percentile(ok, 97.5):+.1f}]" if len(ok) >= 20 else "n/a"
            rows.append([qname, f"{test} vs uniform", "n/a" if point is None else f"{point:+.1f} %", ci,
                         f"{len(bd_boot.idx) - len(ok)}/{len(bd_boot.idx)}"])
    rep.both(f"The same BD-rate without the step-map bits (points ≥ {args.bd_floor:g} %, envelope rule): the part "
             "of the difference that is not signalling cost")
    rep.both()
    rep.table(["quality", "comparison", "BD-rate", "95 % CI", "skipped"], rows, align="llrrr")

    # ----- (d)
    rep.both(f"## (d) ε sensitivity (jnd at σ_tgt = {args.sigma_mid:g}) and estimator diagnostics")
    rep.both()
    rows = []
    mid_uniform = None
    if args.sigma_mid in sigmas:
        mid_uniform = summary_a[args.sigma_mid, "uniform"]
    for j, eps in enumerate(epsilons):
        kk = n_a + j
        rows.append([f"{eps:g}", fmt_ci(*boot.ci(agree[kk])), fmt_ci(*boot.ci(top1[kk])),
                     f"{np.nanmean(nrmse[kk]):.3f}", f"{bits[kk].mean() / points:.4f}"])
    rep.table(["ε", "agree % [CI]", "top-1 % [CI]", "NRMSE", "bits/pt"], rows)
    if mid_uniform:
        rep.both(f"(uniform at σ_tgt = {args.sigma_mid:g}: agreement {fmt_ci(*mid_uniform[0]).strip()}, "
                 f"top-1 {fmt_ci(*mid_uniform[1]).strip()})")
        rep.both()
    d1 = boot.ci(pred_delta1 == ref_arr)
    d1_nrmse = np.mean(dnorm / fnorm)
    rows = [
        ["mean |δ|", f"{diag[:, 0].mean():.4f}", "mean |f| = " + f"{np.abs(F).mean():.4f}"],
        ["fraction |δ| ≥ 9.99 (clamp ±10)", f"{diag[:, 1].mean() * 100:.2f} %", ""],
        ["mean_c |spatial mean of δ_c| / mean |δ|", f"{diag[:, 2].mean():.4f}", "i.i.d. noise ≈ 1/7 = 0.143"],
        ["share of ||δ||² in channel spatial means", f"{diag[:, 3].mean():.4f}", "i.i.d. noise ≈ 1/49 = 0.020"],
        [f"agreement of f + {p} (α = 1)", fmt_ci(*d1).strip(), f"NRMSE of {p}: {d1_nrmse:.3f}"],
        [f"CV of s_t over the 49 tokens (ε = {epsilon:g})", f"{diag[:, 4].mean():.3f}",
         f"median max/min s_t: {np.median(diag[:, 5]):.1f}"],
    ]
    if head:
        rows += [
            ["corr(s_t, fraction of exact zeros at the token)", f"{head['corr_zeros']:.3f}", "per image, mean"],
            ["share of ||mean_hw δ||² in the null space of W", f"{head['null_share']:.3f}",
             f"random direction: 1 − rank/C = {head['null_random']:.3f}"],
            ["visible logit change ||C·W·mean_hw δ|| vs a random direction of equal norm",
             f"{head['visibility']:.3f}",
             "1 = as visible as random (C centres the logits)"],
            ["mean cosine between two images' mean_hw δ", f"{head['cosine']:.3f}", "image-independent δ: 1"],
        ]
    rep.table(["diagnostic (mean over images)", "value", "reference"], rows, align="lrl")

    # ----- verdicts
    def word(ci, better, worse):
        return better if ci[1] > 0 else worse if ci[2] < 0 else "no significant difference"

    rep.both("## Verdicts on the paper's claims (automatic; a difference counts where its paired 95 % CI "
             "excludes 0)")
    rep.both()
    rows = []
    for sigma in sigmas:
        jr, ru, ju = verdict_a[sigma]
        holds = jr[1] > 0 and ru[1] > 0
        rows.append([f"{sigma:g}", word(jr, "jnd > random", "jnd < random"),
                     word(ru, "random > uniform", "random < uniform"), word(ju, "jnd > uniform", "jnd < uniform"),
                     "yes" if holds else "no"])
    rep.both("(a) matched σ_tgt, agreement: the claim is jnd > random > uniform")
    rep.both()
    rep.table(["σ_tgt", "jnd vs random", "random vs uniform", "jnd vs uniform", "claim holds"], rows, align="lllll")
    rows = []
    for t in targets:
        g, g0 = verdict_b[t]
        rows.append([f"{t:g}", word(g, "JND better", "JND worse"), word(g0, "JND better", "JND worse")])
    rep.both(f"(b) matched NRMSE, agreement: the claim is that f + α·{p} hurts less than Gaussian noise")
    rep.both()
    rep.table(["NRMSE", "vs Gaussian", "vs DC-free Gaussian"], rows, align="lll")
    rows = []
    for (qname, test, floor, use_env), (point, ci, skipped, total) in bd_results.items():
        rows.append([qname, f"{test} vs uniform", "all" if floor is None else f"≥ {floor:g} %",
                     "envelope" if use_env else "strict",
                     "n/a" if point is None else f"{point:+.1f} %", ci, f"{skipped}/{total}"])
    rep.both("(c) BD-rate against uniform (the claim implies a negative BD-rate for jnd, below random's)")
    rep.both()
    rep.table(["quality", "comparison", "points", "rule", "BD-rate", "95 % CI", "skipped"], rows,
              align="lllllll")

    # ----- plots and markdown
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = ("" if args.split == "backbone" else f"_{args.split}") + ("_separable" if separable else "")
    pngs = make_plots(args.out, sigmas, summary_a, targets, summary_b, modes_c, curves, bits, agree, top1,
                      boot, points, suffix)
    rep.out("Plots: " + ", ".join(str(p) for p in pngs))
    md_path = args.out / f"featjnd_validation{suffix}.md"
    md = "\n".join(rep.md)
    md += "\n\n" + "\n".join(f"![{p.stem}]({p.name})" for p in pngs) + "\n"
    discussion = args.out / f"featjnd_discussion{suffix}.md"
    if discussion.is_file():   # hand-written interpretation, kept across re-runs
        md += "\n" + discussion.read_text()
    md_path.write_text(md)
    rep.out(f"Wrote {md_path}")
    return 0


def head_diagnostics(weight, F, D, epsilon):
    """Where δ hides from the head logits = W·mean_hw(f) + b (W: classes × C)."""
    from encoder.featjnd.allocation import token_tolerance

    classes, channels = weight.shape
    dc = D.mean(axis=(2, 3))
    _, sv, vt = np.linalg.svd(weight, full_matrices=False)
    rank = int((sv > 1e-8 * sv[0]).sum())
    row = vt[:rank]
    null_share = 1 - np.sum((dc @ row.T) ** 2, axis=1) / np.sum(dc ** 2, axis=1)
    centred = weight - weight.mean(axis=0, keepdims=True)      # softmax ignores a common logit shift
    typical = np.sqrt(np.sum(centred ** 2) / channels)           # E||C·W·u|| for a random unit u (rms)
    visibility = np.linalg.norm(dc @ centred.T, axis=1) / (np.linalg.norm(dc, axis=1) * typical)
    unit = dc / np.linalg.norm(dc, axis=1, keepdims=True)
    cos = unit @ unit.T
    n = len(F)
    corr = []
    for i in range(n):
        s = token_tolerance(F[i], D[i], epsilon).ravel()
        z = (F[i] == 0).mean(axis=0).ravel()
        if s.std() > 0 and z.std() > 0:
            corr.append(np.corrcoef(s, z)[0, 1])
    return dict(null_share=float(null_share.mean()), null_random=1 - rank / channels,
                visibility=float(visibility.mean()),
                cosine=float(cos[np.triu_indices(n, 1)].mean()) if n > 1 else float("nan"),
                corr_zeros=float(np.mean(corr)) if corr else float("nan"))


def _ci_figure(path, title, xlabel, panels, log_x=False, grid_which="major"):
    """One figure, a panel per (ylabel, series); a series (x, rows of (mean, lo, hi), label, colour)
    is drawn with its confidence interval as error bars."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(10, 4))
    for ax, (ylabel, series) in zip(axes, panels):
        for x, m, label, color in series:
            m = np.asarray(m)
            ax.errorbar(x, m[:, 0], yerr=[m[:, 0] - m[:, 1], m[:, 2] - m[:, 0]], marker="o", capsize=3,
                        label=label, color=color)
        ax.set_xlabel(xlabel)
        if log_x:
            ax.set_xscale("log")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3, which=grid_which)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def make_plots(out, sigmas, summary_a, targets, summary_b, modes_c, curves, bits, agree, top1, boot, points,
               suffix=""):
    import matplotlib

    matplotlib.use("Agg")

    colors = {"jnd": "C0", "random": "C1", "uniform": "C2", "gauss": "C1", "gauss_dcfree": "C3"}
    quality_names = ("agreement with uncompressed %", "top-1 %")
    names_b = {"jnd": "f + α·δ", "gauss": "Gaussian", "gauss_dcfree": "Gaussian, DC-free"}
    panels_a = [(name, [(sigmas, [summary_a[s, mode][which] for s in sigmas], mode, colors[mode])
                        for mode in ("jnd", "random", "uniform")])
                for which, name in enumerate(quality_names)]
    panels_b = [(name, [(targets, [summary_b[t, kind][which] for t in targets], names_b[kind], colors[kind])
                        for kind in ("jnd", "gauss", "gauss_dcfree")])
                for which, name in enumerate(quality_names)]
    panels_c = [(name, [(bits[curves[mode]].mean(axis=1) / points, [boot.ci(correct[k]) for k in curves[mode]],
                         mode, colors[mode]) for mode, _, _ in modes_c])
                for correct, name in zip((agree, top1), quality_names)]
    return [_ci_figure(out / f"featjnd_matched_sigma{suffix}.png", "(a) matched noise budget, 95 % bootstrap CI",
                       "σ_tgt (noise budget)", panels_a),
            _ci_figure(out / f"featjnd_matched_nrmse{suffix}.png", "(b) matched NRMSE, 95 % bootstrap CI", "NRMSE",
                       panels_b, log_x=True),
            _ci_figure(out / f"featjnd_rate{suffix}.png", "(c) accuracy vs coded bits, 95 % bootstrap CI",
                       "bits per feature point (whole stream)", panels_c, log_x=True, grid_which="both")]


if __name__ == "__main__":
    from common.errors import exit_code_of

    raise SystemExit(exit_code_of("bench_featjnd", main))
