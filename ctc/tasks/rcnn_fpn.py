"""torchvision Faster / Mask R-CNN R50-FPN split after the FPN (features p2..p6).

    images: list of 3×H×W in 0..1 (sizes may differ)
      │ front ─ model.transform: resize (shorter side min_size, longer ≤ max_size),
      │         normalise, pad the batch to N×3×H'×W' (multiples of 32)
      │       ─ model.backbone: ResNet-50 + FPN
      ▼
    features {"p2": N×256×H'/4×W'/4, "p3": /8, "p4": /16, "p5": /32, "p6": max-pool of p5}
    image_sizes    [(h, w)] per image after resizing, before padding
    original_sizes [(H, W)] per input image
      │ back  ─ model.rpn: anchors + head -> objectness, box deltas -> top-k, NMS -> proposals
      │       ─ model.roi_heads: RoIAlign(p2..p5) -> box head -> class logits, box deltas
      │         -> per-class NMS -> detections (+ mask head on the detected boxes for "mask")
      │       ─ model.transform.postprocess: boxes (and masks) back to original_sizes
      ▼
    detections: [{"boxes", "labels", "scores"(, "masks")}] per image

back(*front(images)) is the unsplit model's eval output. The padded size H'×W'
is not passed along: the anchor generator derives its strides from it, and it
is exactly 4× the p2 size (the transform pads to a multiple of 32 and p2 has
stride 4), so back rebuilds it from the features.

The parts FeatJND's detection losses differentiate (ctc/training/losses.py) are
exposed as functions of the features: ``rpn_outputs`` (the RPN head on all five
levels), ``roi_outputs`` / ``mask_outputs`` (RoIAlign + box / mask head on given
boxes) and ``proposals`` (the RPN's eval-mode proposals, computed once from the
clean feature and then held fixed).

No weights can be downloaded here: the model is built with weights=None and
weights_backbone=None (random, seeded init) and a state_dict is loaded from a
path the user gives, e.g. torchvision's COCO checkpoint file.
"""

from __future__ import annotations

import os
from collections import OrderedDict

import torch
import torchvision
from torch import nn
from torchvision.models.detection.image_list import ImageList
from torchvision.ops.misc import FrozenBatchNorm2d

from common.errors import InputError
from ctc.tasks.state_dict import load_exactly

__all__ = ["RcnnFpnSplit", "LEVELS", "BUILDERS"]

LEVELS = ("p2", "p3", "p4", "p5", "p6")
_TORCHVISION_LEVELS = ("0", "1", "2", "3", "pool")     # the FPN's own names, same order
BUILDERS = {"faster": "fasterrcnn_resnet50_fpn", "mask": "maskrcnn_resnet50_fpn"}
RANDOM_INIT_SEED = 0
_PADDED_STRIDE = 4                                       # padded input size / p2 size


class RcnnFpnSplit(nn.Module):
    """Faster / Mask R-CNN R50-FPN as ``front`` (transform + backbone) and ``back`` (RPN + ROI heads).

    ``kind``: "faster" or "mask". ``weights``: path of a state_dict (``torch.load``
    with weights_only=True), or None for random weights (seeded, so every build is
    the same). ``model_options`` go to the torchvision builder (e.g. min_size,
    max_size, box_score_thresh, num_classes). The network is frozen: parameters
    need no gradient and ``train()`` leaves it in eval mode.
    """

    def __init__(self, kind: str = "faster", weights: str | os.PathLike | None = None,
                 device: str | torch.device = "cpu", **model_options):
        super().__init__()
        if kind not in BUILDERS:
            raise ValueError(f"unknown kind {kind!r}; choose one of {sorted(BUILDERS)}")
        builder = getattr(torchvision.models.detection, BUILDERS[kind])
        with torch.random.fork_rng(devices=[]):             # seed the init without touching the caller's RNG
            torch.manual_seed(RANDOM_INIT_SEED)
            model = builder(weights=None, weights_backbone=None, **model_options)
        _freeze_batch_norm(model.backbone.body)
        if weights is not None:
            _load_weights(model, weights, kind)
        self.kind = kind
        self.model = model
        self.requires_grad_(False).eval().to(device)

    def train(self, mode: bool = True) -> RcnnFpnSplit:
        """Always eval: the RPN and ROI heads take their training path (needing targets) otherwise."""
        return super().train(False)

    # -- the split ----------------------------------------------------------------------------------

    def front(self, images: list[torch.Tensor]):
        """Images (3×H×W, 0..1) -> (OrderedDict p2..p6 of N×256×h×w, image_sizes, original_sizes)."""
        original_sizes = [(int(image.shape[-2]), int(image.shape[-1])) for image in images]
        batch, _ = self.model.transform(images)
        levels = self.model.backbone(batch.tensors)
        features = OrderedDict((ours, levels[theirs]) for ours, theirs in zip(LEVELS, _TORCHVISION_LEVELS))
        return features, batch.image_sizes, original_sizes

    def back(self, features, image_sizes, original_sizes) -> list[dict[str, torch.Tensor]]:
        """Features p2..p6 -> detections in original image coordinates (the unsplit eval output)."""
        levels = _torchvision_levels(features)
        proposals, _ = self.model.rpn(_image_list(features, image_sizes), levels)
        detections, _ = self.model.roi_heads(levels, proposals, image_sizes)
        return self.model.transform.postprocess(detections, image_sizes, original_sizes)

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        """Detections of the whole network, ``back(*front(images))``."""
        return self.back(*self.front(images))

    # -- what the FeatJND losses differentiate --------------------------------------------------------

    def proposals(self, features, image_sizes) -> list[torch.Tensor]:
        """The RPN's eval-mode proposals (K×4 boxes per image, best first, in image_sizes coordinates)."""
        with torch.no_grad():
            boxes, _ = self.model.rpn(_image_list(features, image_sizes), _torchvision_levels(features))
        return boxes

    def rpn_outputs(self, features) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """RPN head per level: objectness logits N×A×h×w and box deltas N×4A×h×w (A = 3 anchors)."""
        return self.model.rpn.head([features[name] for name in LEVELS])

    def roi_outputs(self, features, proposals, image_sizes) -> tuple[torch.Tensor, torch.Tensor]:
        """Box branch on given boxes: class logits R×classes and box deltas R×4·classes (R = all boxes)."""
        heads = self.model.roi_heads
        pooled = heads.box_roi_pool(_torchvision_levels(features), proposals, image_sizes)
        return heads.box_predictor(heads.box_head(pooled))

    def mask_outputs(self, features, proposals, image_sizes) -> torch.Tensor:
        """Mask branch on given boxes (mask model only): mask logits R×classes×28×28."""
        heads = self.model.roi_heads
        if not heads.has_mask():
            raise ValueError("mask_outputs needs kind='mask'")
        pooled = heads.mask_roi_pool(_torchvision_levels(features), proposals, image_sizes)
        return heads.mask_predictor(heads.mask_head(pooled))


def _torchvision_levels(features) -> OrderedDict:
    """p2..p6 -> the FPN's own keys: RoIAlign selects its levels by these names."""
    return OrderedDict((theirs, features[ours]) for ours, theirs in zip(LEVELS, _TORCHVISION_LEVELS))


def _image_list(features, image_sizes) -> ImageList:
    """A stand-in for the padded batch: the RPN reads only its size (anchor strides) and image_sizes."""
    p2 = features["p2"]
    n, _, h, w = p2.shape
    return ImageList(p2.new_empty((n, 0, h * _PADDED_STRIDE, w * _PADDED_STRIDE)), list(image_sizes))


def _freeze_batch_norm(module: nn.Module) -> None:
    """BatchNorm2d -> FrozenBatchNorm2d, as torchvision builds the backbone whenever weights are given.

    weights=None makes the builder use trainable BatchNorm2d; swapping keeps the
    arithmetic of torchvision's pretrained model. A fresh BatchNorm2d holds the
    identity statistics a new FrozenBatchNorm2d starts with, so nothing is copied.
    """
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, FrozenBatchNorm2d(child.num_features, eps=child.eps))
        else:
            _freeze_batch_norm(child)


def _load_weights(model: nn.Module, path, kind: str) -> None:
    """Load a state_dict (or a training checkpoint's "model" entry); any mismatch is one InputError line."""
    if not os.path.isfile(path):
        raise InputError(f"{kind} R-CNN weight file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:    # not a torch file, or it holds more than tensors
        raise InputError(f"{kind} R-CNN weight file {path} is unreadable: {str(exc).splitlines()[0]}") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise InputError(f"{kind} R-CNN weight file {path} holds no state_dict")
    load_exactly(model, state, f"{kind} R-CNN weight file {path}")
