"""FeatJND training losses (ARCHITECTURE.md §4.2): task distortion D_t and L = λ_t·D_t − ‖δ‖₂.

    f ──────────────► frozen head ─► y  (clean side: detached, the target)
    f ─► G_θ ─► δ ─► f + δ ─► frozen head ─► ỹ
    L = λ_t · D_t(ỹ ‖ y) − mean over the batch of ‖δ‖₂

The estimator is pushed to make δ as large as possible while the head's output
barely moves. Every distortion compares the perturbed output with the clean
one, never with labels: the clean prediction is the target, so no annotations
are needed.

Detection / instance segmentation (``split`` is a ``ctc.tasks.rcnn_fpn.RcnnFpnSplit``):

    D_det = KL_Bernoulli(RPN objectness)  + smoothL1(RPN box deltas)       every anchor, every level
          + KL_softmax(ROI class logits)  + smoothL1(ROI box regression)   on the clean proposals
    D_ins = D_det + MSE(mask logits)                                         on the clean top boxes

YOLOv5n (one-stage; ``yolo_detection_distortion``, on the Detect head's raw outputs per anchor):

    D_yolo = KL_Bernoulli(objectness)                                          every anchor
           + mean_a σ(o_a)·KL(classes_a)                                         weighted by clean objectness
           + smoothL1(σ(box outputs))                on anchors with clean objectness × best class ≥ 0.25

(the classes are 80 independent sigmoids, so the class distribution's KL is the
sum of 80 Bernoulli KLs).

The proposals (ROIs) are computed once from the clean feature and held fixed,
so both sides pool the same boxes and D is differentiable in f + δ. Each term is
a mean per item (anchor, ROI, logit), so it does not grow with the image size;
the smooth-L1 β = 1/9 is the one torchvision's RPN and box losses use.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

__all__ = [
    "classification_distortion",
    "detection_distortion",
    "yolo_detection_distortion",
    "instance_distortion",
    "featjnd_loss",
    "noise_tolerance_loss",
    "unit_uniform_noise",
    "LAMBDA_CLASSIFICATION",
    "LAMBDA_DETECTION",
    "LAMBDA_INSTANCE",
    "TEMPERATURE",
]

# The paper's settings ("Just Noticeable Difference Modeling for Deep Visual
# Features"): λ_t = 50 for classification, 200 for detection and instance
# segmentation; the classification KL at temperature T = 4.
LAMBDA_CLASSIFICATION = 50.0
LAMBDA_DETECTION = 200.0
LAMBDA_INSTANCE = 200.0
TEMPERATURE = 4.0

BOX_SMOOTH_L1_BETA = 1.0 / 9.0


def classification_distortion(logits_clean: torch.Tensor, logits_perturbed: torch.Tensor,
                              temperature: float = TEMPERATURE) -> torch.Tensor:
    """T²·KL(softmax(y/T) ‖ softmax(ỹ/T)) over the last axis, mean over the other rows (y detached)."""
    log_p = F.log_softmax(logits_clean.detach() / temperature, dim=-1)
    log_q = F.log_softmax(logits_perturbed / temperature, dim=-1)
    kl = (log_p.exp() * (log_p - log_q)).sum(dim=-1)
    return temperature ** 2 * kl.mean()


def _bernoulli_kl_elements(logits_clean: torch.Tensor, logits_perturbed: torch.Tensor) -> torch.Tensor:
    """KL(Bern(σ(a)) ‖ Bern(σ(b))) per element, in log-sigmoid form for stability."""
    p = torch.sigmoid(logits_clean)
    return (p * (F.logsigmoid(logits_clean) - F.logsigmoid(logits_perturbed))
            + (1 - p) * (F.logsigmoid(-logits_clean) - F.logsigmoid(-logits_perturbed)))


def _bernoulli_kl(logits_clean: torch.Tensor, logits_perturbed: torch.Tensor) -> torch.Tensor:
    """Mean over elements of KL(Bern(σ(a)) ‖ Bern(σ(b)))."""
    return _bernoulli_kl_elements(logits_clean, logits_perturbed).mean()


def _flat(levels: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([level.flatten() for level in levels])


def detection_distortion(split, feats_clean, feats_perturbed, image_sizes, proposals) -> torch.Tensor:
    """D_det between clean and perturbed FPN features (dicts p2..p6), on ROIs from the clean feature.

    ``proposals``: boxes per image, e.g. ``split.proposals(feats_clean, image_sizes)``.
    """
    with torch.no_grad():
        objectness_clean, deltas_clean = split.rpn_outputs(feats_clean)
        logits_clean, boxes_clean = split.roi_outputs(feats_clean, proposals, image_sizes)
    objectness, deltas = split.rpn_outputs(feats_perturbed)
    logits, boxes = split.roi_outputs(feats_perturbed, proposals, image_sizes)
    return (_bernoulli_kl(_flat(objectness_clean), _flat(objectness))
            + F.smooth_l1_loss(_flat(deltas), _flat(deltas_clean), beta=BOX_SMOOTH_L1_BETA)
            + classification_distortion(logits_clean, logits, temperature=1.0)
            + F.smooth_l1_loss(boxes, boxes_clean, beta=BOX_SMOOTH_L1_BETA))


# YOLOv5's detect.py threshold (objectness × class probability) for a detection it would show
YOLO_CONFIDENT_SCORE = 0.25


def yolo_detection_distortion(logits_clean: list[torch.Tensor], logits_perturbed: list[torch.Tensor]) -> torch.Tensor:
    """D_yolo between the Detect head's raw outputs (per level B×3×ny×nx×85; clean side detached)."""
    clean = torch.cat([level.detach().reshape(-1, level.shape[-1]) for level in logits_clean])
    perturbed = torch.cat([level.reshape(-1, level.shape[-1]) for level in logits_perturbed])
    objectness = _bernoulli_kl(clean[:, 4], perturbed[:, 4])
    weight = torch.sigmoid(clean[:, 4])
    class_kl = _bernoulli_kl_elements(clean[:, 5:], perturbed[:, 5:]).sum(dim=1)
    classes = (weight * class_kl).mean()     # where nothing is, class changes cannot matter
    confident = weight * torch.sigmoid(clean[:, 5:]).amax(dim=1) >= YOLO_CONFIDENT_SCORE
    boxes = (F.smooth_l1_loss(torch.sigmoid(perturbed[confident, :4]), torch.sigmoid(clean[confident, :4]),
                              beta=BOX_SMOOTH_L1_BETA) if bool(confident.any()) else perturbed.sum() * 0)
    return objectness + classes + boxes


def instance_distortion(split, feats_clean, feats_perturbed, image_sizes, proposals,
                        mask_proposals=None) -> torch.Tensor:
    """D_ins = D_det + MSE of the mask logits on ``mask_proposals`` (default: ``proposals``).

    The mask head is costly per box: pass the clean detections' boxes or the
    first K proposals as ``mask_proposals``.
    """
    mask_proposals = proposals if mask_proposals is None else mask_proposals
    with torch.no_grad():
        masks_clean = split.mask_outputs(feats_clean, mask_proposals, image_sizes)
    masks = split.mask_outputs(feats_perturbed, mask_proposals, image_sizes)
    return (detection_distortion(split, feats_clean, feats_perturbed, image_sizes, proposals)
            + F.mse_loss(masks, masks_clean))


def _per_sample(tensors) -> torch.Tensor:
    """An N×… tensor, or the levels of a pyramid (a dict or list of N×… tensors), as N × (all values)."""
    levels = list(tensors.values()) if isinstance(tensors, Mapping) else (
        list(tensors) if isinstance(tensors, (list, tuple)) else [tensors])
    return torch.cat([level.flatten(1) for level in levels], dim=1)


def featjnd_loss(distortion: torch.Tensor, delta, lambda_t: float, features=None) -> torch.Tensor:
    """λ_t·D − mean over the batch of ‖δ‖₂ (the paper's), or of ‖δ‖₂ / ‖f‖₂ when ``features`` is given.

    ``delta`` (and ``features``): an N×… tensor, or the levels of a pyramid (a dict or list of N×…
    tensors) whose elements together form one sample. The relative form makes λ_t independent of
    the feature's size and scale, so one calibration procedure serves every task and split.
    """
    # vector_norm's gradient at δ = 0 is 0 (a sqrt of summed squares would give NaN)
    norm = torch.linalg.vector_norm(_per_sample(delta), dim=1)
    if features is not None:
        norm = norm / torch.linalg.vector_norm(_per_sample(features).detach(), dim=1).clamp_min(1e-12)
    return lambda_t * distortion - norm.mean()


def noise_tolerance_loss(distortion: torch.Tensor, delta, lambda_t: float) -> torch.Tensor:
    """λ_t·D − mean over the batch of mean_i log δ_i: the noise-tolerance estimator's loss.

    D is measured at f + δ ⊙ n (``unit_uniform_noise``). The reward is what a quantiser at steps
    Δ_i = √12·δ_i saves: at high rate an element's bits fall as −log2 Δ_i, so the rate of the
    whole feature falls with the mean of log δ, not with ‖δ‖₂ (which a few large values dominate).
    ``delta``: positive, an N×… tensor or the levels of a pyramid forming one sample.
    """
    return lambda_t * distortion - torch.log(_per_sample(delta)).mean(dim=1).mean()


def unit_uniform_noise(like: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """i.i.d. uniform noise of unit variance on [−√3, √3], shaped like ``like``: the error of a
    uniform quantiser of step √12 at high rate, per unit of δ."""
    uniform = torch.rand(like.shape, generator=generator, dtype=like.dtype)
    return (2.0 * uniform - 1.0) * 3.0 ** 0.5
