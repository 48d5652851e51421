"""Task metrics of a run, from its records, with bootstrap resamples over images.

    classification  top1, top5 (vs the labels), agreement (same top-1 as the uncompressed
                    features), all in %; per image 0/1, so a resample is a mean of rows
    detection       bbox / segm AP, AP50 (the MPEG-VCM metric), AP75 in %, pycocotools
                    COCOeval; a resample re-accumulates COCOeval's per-image matches
                    (evaluateImg) over the resampled images, so matching runs once
    fidelity        the task output against the uncompressed features' output, per image,
                    averaged (large-model conditions): saliency CC and KL divergence
                    (DINOv2-S), PSNR and MS-SSIM of the decoded image (TAEF2); the
                    uncompressed value is the ideal (CC 1, KL 0, PSNR ∞, MS-SSIM 1)
    multiple choice accuracy % on the questions the uncompressed features answer correctly
                    (FCM-LM's selection: 100 % uncompressed); per question 0/1

`quality(metric, ...)` returns the point value and, with a Bootstrap, the
resample values (same resamples for every tool and rate point: paired).
"""

from __future__ import annotations

import contextlib
import copy
import io

import numpy as np

CLASSIFICATION = ("top1", "top5", "agreement")
METRIC_NAMES = {"top1": "top-1 %", "top5": "top-5 %", "agreement": "agreement %",
                "bbox_ap": "bbox AP", "bbox_ap50": "bbox AP50", "bbox_ap75": "bbox AP75",
                "segm_ap": "segm AP", "segm_ap50": "segm AP50", "segm_ap75": "segm AP75",
                "cc": "saliency CC", "kl": "saliency KL", "psnr": "PSNR dB", "ms_ssim": "MS-SSIM",
                "accuracy": "accuracy %"}
# fidelity metric -> its value for the uncompressed features (the output compared with itself)
FIDELITY_IDEAL = {"cc": 1.0, "kl": 0.0, "psnr": float("inf"), "ms_ssim": 1.0}
LOWER_IS_BETTER = ("kl",)


def iou_types(network):
    """COCO evaluations of a detection network: boxes, and masks for Mask R-CNN."""
    return ("bbox", "segm") if network.startswith("mask") else ("bbox",)


def task_metrics(config):
    """Every metric the report shows for the config's task, in table order."""
    from ctc.config import CHOICE_METRICS, FIDELITY_METRICS

    if config.is_fidelity:
        return FIDELITY_METRICS[config.task["network"]]
    if config.is_multiple_choice:
        return CHOICE_METRICS
    if config.is_classification:
        return CLASSIFICATION
    return tuple(f"{iou}_{kind}" for iou in iou_types(config.task["network"]) for kind in ("ap", "ap50", "ap75"))


def classification_rows(records, reference):
    """{metric: per-image 0/1 vector} of one rate point (records and reference aligned by image)."""
    labels = np.array([ref["label"] for ref in reference])
    top5 = np.array([rec["prediction"]["top5"] for rec in records])
    ref_top1 = np.array([ref["prediction"]["top5"][0] for ref in reference])
    rows = {"agreement": (top5[:, 0] == ref_top1).astype(float)}
    if np.all(labels >= 0):
        rows["top1"] = (top5[:, 0] == labels).astype(float)
        rows["top5"] = (top5 == labels[:, None]).any(axis=1).astype(float)
    else:       # unlabelled images: accuracy vs labels is undefined
        rows["top1"] = rows["top5"] = np.full(len(records), np.nan)
    return rows


class CocoScorer:
    """COCO AP of detections on a fixed list of images (their ids in the annotations)."""

    def __init__(self, annotations_path, image_ids):
        from pycocotools.coco import COCO

        with contextlib.redirect_stdout(io.StringIO()):
            self.coco = COCO(str(annotations_path))
        self.image_ids = [int(i) for i in image_ids]

    def evaluation(self, records, iou_type):
        """COCOeval after evaluate() (per-image matches) for the records' detections."""
        from pycocotools.cocoeval import COCOeval

        results = []
        for record in records:
            for detection in record["prediction"]["detections"]:
                entry = dict(detection, image_id=int(record["image"]))
                if iou_type == "segm":
                    entry.pop("bbox", None)      # as detectron2: segm areas come from the masks
                results.append(entry)
        with contextlib.redirect_stdout(io.StringIO()):
            if not results:
                return None
            detections = self.coco.loadRes(results)
            evaluation = COCOeval(self.coco, detections, iou_type)
            evaluation.params.imgIds = self.image_ids
            evaluation.evaluate()
        return evaluation

    def stats(self, evaluation, positions=None):
        """(AP, AP50, AP75) in % over the images at `positions` of image_ids (repeats allowed)."""
        if evaluation is None:
            return (0.0, 0.0, 0.0)
        if positions is not None:
            evaluation = _resampled(evaluation, self.image_ids, positions)
        with contextlib.redirect_stdout(io.StringIO()):
            evaluation.accumulate()
        precision = evaluation.eval["precision"][:, :, :, 0, -1]     # all areas, maxDets 100
        thresholds = evaluation.params.iouThrs

        def mean_ap(p):
            valid = p[p > -1]
            return 100.0 * float(valid.mean()) if valid.size else 0.0

        return (mean_ap(precision), mean_ap(precision[np.isclose(thresholds, 0.5)]),
                mean_ap(precision[np.isclose(thresholds, 0.75)]))


def _resampled(evaluation, image_ids, positions):
    """A shallow COCOeval copy whose per-image matches are those of the resampled images, reduced
    to the one area range ("all") and detection limit (100) `stats` reads: accumulate() then does
    a twelfth of the work, and those precisions are computed exactly as before."""
    sorted_ids = list(evaluation._paramsEval.imgIds)
    where = {image_id: k for k, image_id in enumerate(sorted_ids)}
    columns = [where[image_ids[p]] for p in positions]
    images, ranges = len(sorted_ids), len(evaluation._paramsEval.areaRng)
    categories = len(evaluation._paramsEval.catIds) if evaluation._paramsEval.useCats else 1
    all_range = [k for k, label in enumerate(evaluation.params.areaRngLbl) if label == "all"][0]
    matches = []
    for category in range(categories):
        base = (category * ranges + all_range) * images
        matches.extend(evaluation.evalImgs[base + column] for column in columns)
    clone = copy.copy(evaluation)
    clone.evalImgs = matches
    clone.params = copy.copy(evaluation.params)
    clone._paramsEval = copy.copy(evaluation._paramsEval)
    clone.params.imgIds = clone._paramsEval.imgIds = list(range(len(columns)))
    for params in (clone.params, clone._paramsEval):
        params.areaRng, params.areaRngLbl = [params.areaRng[all_range]], ["all"]
        params.maxDets = [params.maxDets[-1]]
    return clone


class Quality:
    """Point values and bootstrap resamples of every metric of a run."""

    def __init__(self, config, bootstrap, reference, scorer=None):
        self.config = config
        self.bootstrap = bootstrap
        self.reference = reference
        self.scorer = scorer

    def of_point(self, records):
        """{metric: (value, resample values or None)} for one rate point's records (image order)."""
        if self.config.is_fidelity:
            return {metric: self._mean([rec["prediction"][metric] for rec in records])
                    for metric in task_metrics(self.config)}
        if self.config.is_multiple_choice:
            value, resamples = self._mean([100.0 * rec["prediction"]["correct"] for rec in records])
            return {"accuracy": (value, resamples)}
        if self.config.is_classification:
            rows = classification_rows(records, self.reference)
            return {metric: (100.0 * float(np.mean(rows[metric])),
                             100.0 * self.bootstrap.means(rows[metric]) if self.bootstrap.resamples else None)
                    for metric in CLASSIFICATION}
        return self._detection(records)

    def _mean(self, values):
        values = np.asarray(values, dtype=np.float64)
        return float(values.mean()), self.bootstrap.means(values) if self.bootstrap.resamples else None

    def of_reference(self):
        if self.config.is_fidelity:
            return {metric: (FIDELITY_IDEAL[metric],
                             np.full(self.bootstrap.resamples, FIDELITY_IDEAL[metric]) if self.bootstrap.resamples
                             else None) for metric in task_metrics(self.config)}
        if self.config.is_classification or self.config.is_multiple_choice:
            return self.of_point(self.reference)
        return self._detection(self.reference)

    def _detection(self, records):
        result = {}
        for iou_type in iou_types(self.config.task["network"]):
            evaluation = self.scorer.evaluation(records, iou_type)
            point = self.scorer.stats(evaluation)
            resamples = None
            if self.bootstrap.resamples:
                resamples = np.array([self.scorer.stats(evaluation, row) for row in self.bootstrap.indices])
            for k, suffix in enumerate(("ap", "ap50", "ap75")):
                result[f"{iou_type}_{suffix}"] = (point[k], None if resamples is None else resamples[:, k])
        return result
