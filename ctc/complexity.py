"""The complexity of a CTC run's learned parts in kMAC per pixel: MPEG FCM's measure, in its four parts.

    nn_part_1            the task network's front (image -> split features)
    feature reduction    the encoder's learned parts: L-MSFC's analysis (FENet, hyper-analysis, and the
                         hyper-synthesis that gives the entropy coder its means and scales); FeatJND's
                         estimator on every tensor
                         (the hyperprior baseline: g_a, h_a and h_s)
    feature restoration  the decoder's learned parts: L-MSFC's hyper-synthesis and DRNet (the
                         hyperprior baseline: h_s and g_s)
    nn_part_2            the task network's back (split features -> prediction)

MACs are counted by fvcore's FlopCountAnalysis, which counts one per multiply-accumulate of
convolutions, matrix products and linear layers; element-wise operations (activations, batch
norm, additions, the sigmoid gates) and the entropy coders are not counted. Every part is
traced once on the network's input size (YOLOv5n: the 640×640 letterbox; EfficientNet-Lite:
its square crop; DINOv2-S: 224×224; TAEF2: its crop), with untrained layers, as MACs do not
depend on the weights. DINOv2-S with SRT runs its front once per translation (K × the front;
spreading and pooling are not MACs). Per pixel means per pixel of the original images (of
TAEF2's crop), like bpp: MACs per image over the run's mean pixels per image. The image anchor runs the whole network after decoding the image (nn_part_1 0,
nn_part_2 front and back); conventional coders (token-wise, the HEVC / VVC feature anchors)
have no learned parts (0). The R-CNN networks resize each image and pick their proposals from
it, so one count does not describe them: their parts are n/a.

An L-MSFC encoder with DecodedFeatureHash also runs the decoder (to hash what it will
decode); feature reduction counts only what produces the stream.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

from common.errors import InputError
from encoder.featjnd.allocation import ALLOCATIONS

COMPLEXITY_FILE = "complexity.csv"       # in a run folder, beside points.csv
PARTS = ("nn_part_1", "feature_reduction", "feature_restoration", "nn_part_2")
# CompressAI-Vision's column of each part in summary_complexity.csv (after its "Metric" column)
PART_COLUMNS = {"nn_part_1": "nn_part1", "feature_reduction": "feature reduction",
                   "feature_restoration": "feature restoration", "nn_part_2": "nn_part2"}
YOLO_INPUT = 640
# FeatJND allocations that run the estimator (uniform and a bare NoiseBudget do not)
ESTIMATOR_ALLOCATIONS = tuple(allocation for allocation in ALLOCATIONS if allocation != "uniform")


@dataclass(frozen=True)
class TaskCount:
    front: float               # MACs per image; nan: not countable with one trace
    back: float
    features: tuple            # ((name, (C, H, W)), ...) in the front's order


def count_macs(function, *inputs):
    """MACs of function(*inputs) (torch tensors), counted by fvcore on a trace."""
    import warnings

    import torch

    class Traced(torch.nn.Module):
        def forward(self, *args):
            out = function(*args)
            return tuple(out.values()) if isinstance(out, dict) else out

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")     # fvcore's and the tracer's deprecation notices are not ours to act on
        from fvcore.nn import FlopCountAnalysis

        analysis = FlopCountAnalysis(Traced(), inputs)
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        return float(analysis.total())


@functools.cache
def task_count(network, split, crop=0):
    """The MACs of a task network's front and back, and its split's feature shapes (`crop`: TAEF2's
    input side; its whole-image MACs vary with each image)."""
    import torch

    if network == "dinov2s":
        from ctc.tasks.dinov2s import INPUT_SIZE, Dinov2Saliency

        net = Dinov2Saliency()
        image = torch.zeros(1, 3, INPUT_SIZE, INPUT_SIZE)
    elif network == "taef2" and crop:
        from ctc.tasks.taef2 import decoder, encoder

        net = torch.nn.Module()
        net.front, net.back = encoder(), decoder()           # untrained: MACs do not depend on weights
        image = torch.zeros(1, 3, crop, crop)
    elif network == "yolov5n":
        from ctc.tasks.yolov5n import Yolov5n

        net = Yolov5n(None, split)
        image = torch.zeros(1, 3, YOLO_INPUT, YOLO_INPUT)
    elif network.startswith("efficientnet"):
        from ctc.tasks.efficientnet_lite import EfficientNetLiteSplit

        net = EfficientNetLiteSplit(network, split=split)
        image = torch.zeros(1, 3, net.input_size, net.input_size)
    else:
        return TaskCount(math.nan, math.nan, ())
    net.requires_grad_(False)          # the trace keeps the weights as constants
    with torch.no_grad():
        features = net.front(image)
    if not isinstance(features, dict):
        features = {"": features}
    shapes = tuple((name, tuple(value.shape[1:])) for name, value in features.items())
    back = (lambda *levels: net.back(dict(zip(features, levels)))) if len(features) > 1 or "" not in features \
        else net.back
    return TaskCount(count_macs(net.front, image), count_macs(back, *features.values()), shapes)


@functools.cache
def lmsfc_count(model_names, shapes):
    """(encoder, decoder) MACs of L-MSFC models (comma-separated LmsfcModels) on feature shapes."""
    import torch

    from common.tools.lmsfc.graph import drnet, fenet, hyper_analysis, hyper_synthesis, latent_size
    from encoder.tools.lmsfc.coder import models_of
    from encoder.tools.lmsfc.network import FusionModel, TorchOps

    encoder = decoder = 0.0
    remaining = list(shapes)
    for model in models_of(model_names):
        family = model.family
        group, remaining = remaining[:family.num_levels], remaining[family.num_levels:]
        if len(group) != family.num_levels:
            raise InputError(f"L-MSFC models {model_names} need more tensors than the split gives")
        ops = TorchOps({name: value.detach() for name, value in FusionModel(family).params().items()})
        sizes = [shape[1:] for shape in group]
        y_size = latent_size(family, sizes)

        def analysis(*levels):
            y = fenet(ops, family, list(levels), sizes)
            return y, hyper_synthesis(ops, family, hyper_analysis(ops, family, y), y_size)

        def synthesis(z_hat, y_hat):
            return hyper_synthesis(ops, family, z_hat, y_size), *drnet(ops, family, y_hat, sizes)

        levels = [torch.zeros(1, *shape) for shape in group]
        with torch.no_grad():
            y = fenet(ops, family, levels, sizes)
            z = hyper_analysis(ops, family, y)
        encoder += count_macs(analysis, *levels)
        decoder += count_macs(synthesis, z, y)
    return encoder, decoder


@functools.cache
def estimator_count(weights, shapes, allocation="jnd"):
    """MACs of the FeatJND estimator(s) JndWeights (or, empty, the allocation) picks, run once on every
    tensor."""
    import torch

    from encoder.featjnd.allocation import StepAllocator
    from encoder.options import default_options

    allocator = StepAllocator(dict(default_options(), StepAllocation=allocation, JndWeights=weights))
    return sum(count_macs(allocator.estimator(shape[0]).for_channels(shape[0]).requires_grad_(False),
                          torch.zeros(1, *shape)) for shape in shapes)


@functools.cache
def hyperprior_count(model, shape):
    """(encoder, decoder) MACs of a hyperprior baseline model (ctc/baselines) on one feature shape."""
    import numpy as np
    import torch

    from ctc.baselines.hyperprior import HyperpriorModel, model_path

    coder = HyperpriorModel(model_path(model))
    network = coder.network.requires_grad_(False)        # the trace keeps the weights as constants
    x = torch.from_numpy(coder.padded_map(np.zeros(shape, np.float32)))[None]
    with torch.no_grad():
        y = network.analysis(x)
        z = network.h_a(y)
    encoder = count_macs(lambda v: (network.analysis(v), network.h_s(network.h_a(network.analysis(v)))), x)
    decoder = count_macs(lambda zv, yv: (network.h_s(zv), network.synthesis(yv)), z, y)
    return encoder, decoder


def tool_macs(tool, task):
    """{part: MACs per image} of one CTC tool (its first rate point's options) on the task."""
    whole = task.front + task.back
    if tool.kind == "image":
        return {"nn_part_1": 0.0, "feature_reduction": 0.0, "feature_restoration": 0.0, "nn_part_2": whole}
    macs = {"nn_part_1": task.front, "feature_reduction": 0.0, "feature_restoration": 0.0, "nn_part_2": task.back}
    shapes = tuple(shape for _, shape in task.features)
    if not shapes:
        return {part: math.nan for part in PARTS}
    if tool.kind == "hyperprior":
        macs["feature_reduction"], macs["feature_restoration"] = hyperprior_count(tool.model, shapes[0])
        return macs
    options = tool.encoder_options(tool.rate_points[0])
    if options["Tool"] == "lmsfc":
        macs["feature_reduction"], macs["feature_restoration"] = lmsfc_count(options["LmsfcModels"], shapes)
    elif options["Tool"] == "tokenwise" and options["StepAllocation"] in ESTIMATOR_ALLOCATIONS:
        macs["feature_reduction"] = estimator_count(options["JndWeights"], shapes, options["StepAllocation"])
    return macs


def run_complexity(config, pixels_per_image):
    """[(tool name, {part: MACs per image}, {part: kMAC per pixel})] of every tool of a CTC config."""
    options = config.task.get("options") or {}
    task = task_count(config.task["network"], config.task["split"], int(options.get("crop", 0)))
    if int(options.get("srt", 0)) > 1:          # SRT runs the front once per translation
        task = TaskCount(task.front * int(options["srt"]), task.back, task.features)
    rows = []
    for tool in config.tools:
        macs = tool_macs(tool, task)
        rows.append((tool.name, macs, {part: value / pixels_per_image / 1000 for part, value in macs.items()}))
    return rows


def count_for_points(config, points):
    """run_complexity with the mean pixels per image a run's points.csv rows imply (bits / bpp)."""
    rates = [(float(row["bits_per_image"]), float(row["bpp"])) for rows in points.values() for row in rows
             if row["bpp"] and float(row["bpp"]) > 0]
    if not rates:
        raise InputError("points.csv has no rate to derive the pixels per image from")
    if not available():
        raise InputError("counting MACs needs fvcore (pip install -e '.[tasks]')")
    return run_complexity(config, rates[0][0] / rates[0][1])


def csv_table(rows):
    """(header, rows) of complexity.csv: MACs per image and kMAC per pixel of each part (numbers;
    the writer formats them)."""
    header = ["tool"] + [f"{part}_mac" for part in PARTS] + [f"{part}_kmac_per_pixel" for part in PARTS]
    return header, [[tool] + [macs[part] for part in PARTS] + [kmac[part] for part in PARTS]
                    for tool, macs, kmac in rows]


def read_csv(path):
    """The rows csv_table wrote: [(tool, MACs per image, kMAC per pixel)]."""
    import csv

    with open(path, newline="") as handle:
        return [(row["tool"], {part: float(row[f"{part}_mac"] or "nan") for part in PARTS},
                 {part: float(row[f"{part}_kmac_per_pixel"] or "nan") for part in PARTS})
                for row in csv.DictReader(handle)]


def available():
    """Whether the counter is installed (it comes with the `tasks` extra)."""
    try:
        import fvcore.nn  # noqa: F401
    except ImportError:
        return False
    return True
