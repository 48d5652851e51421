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
    "instance_distortion",
    "featjnd_loss",
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


def _bernoulli_kl(logits_clean: torch.Tensor, logits_perturbed: torch.Tensor) -> torch.Tensor:
    """Mean over elements of KL(Bern(σ(a)) ‖ Bern(σ(b))), in log-sigmoid form for stability."""
    p = torch.sigmoid(logits_clean)
    kl = (p * (F.logsigmoid(logits_clean) - F.logsigmoid(logits_perturbed))
          + (1 - p) * (F.logsigmoid(-logits_clean) - F.logsigmoid(-logits_perturbed)))
    return kl.mean()


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


def featjnd_loss(distortion: torch.Tensor, delta, lambda_t: float) -> torch.Tensor:
    """λ_t·D − mean over the batch of ‖δ‖₂.

    ``delta``: an N×… tensor, or the levels of a pyramid (a dict or list of N×…
    tensors) whose elements together form one sample's δ.
    """
    levels = list(delta.values()) if isinstance(delta, Mapping) else (
        list(delta) if isinstance(delta, (list, tuple)) else [delta])
    per_sample = torch.cat([level.flatten(1) for level in levels], dim=1)
    # vector_norm's gradient at δ = 0 is 0 (a sqrt of summed squares would give NaN)
    return lambda_t * distortion - torch.linalg.vector_norm(per_sample, dim=1).mean()
