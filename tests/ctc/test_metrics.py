"""ctc/metrics.py: classification rows, COCO AP with pycocotools and its bootstrap resamples
(re-accumulated per-image matches, which must equal evaluating the resampled image set)."""

import json
import math

import numpy as np
import pytest

from ctc.config import parse_config
from ctc.metrics import CocoScorer, Quality, classification_rows
from ctc.stats import Bootstrap

pytest.importorskip("pycocotools")

# ---------------------------------------------------------------- classification


def rec(top5):
    return {"prediction": {"top5": list(top5)}}


def ref(label, top5):
    return {"label": label, "prediction": {"top5": list(top5)}}


def test_classification_rows():
    reference = [ref(1, [1, 2, 3, 4, 5]), ref(2, [7, 2, 3, 4, 5]), ref(3, [3, 0, 1, 2, 4])]
    records = [rec([1, 9, 9, 9, 9]),            # right, agrees
               rec([2, 7, 8, 9, 10]),           # right, disagrees with the reference's 7
               rec([5, 6, 7, 8, 3])]            # wrong, top-5 right, disagrees
    rows = classification_rows(records, reference)
    assert rows["top1"].tolist() == [1.0, 1.0, 0.0]
    assert rows["top5"].tolist() == [1.0, 1.0, 1.0]
    assert rows["agreement"].tolist() == [1.0, 0.0, 0.0]


def test_classification_top5_miss():
    rows = classification_rows([rec([5, 6, 7, 8, 9])], [ref(1, [1, 2, 3, 4, 5])])
    assert rows["top1"].tolist() == [0.0] and rows["top5"].tolist() == [0.0] and rows["agreement"].tolist() == [0.0]


def test_classification_unlabelled_images_give_nan_accuracy():
    reference = [ref(-1, [1, 2, 3, 4, 5]), ref(2, [2, 3, 4, 5, 6])]
    rows = classification_rows([rec([1, 0, 0, 0, 0]), rec([3, 2, 0, 0, 0])], reference)
    assert np.isnan(rows["top1"]).all() and np.isnan(rows["top5"]).all()
    assert rows["agreement"].tolist() == [1.0, 0.0]        # agreement needs no label


def test_quality_of_classification_point():
    raw = {"name": "t", "dataset": {"kind": "package_images"},
           "task": {"network": "efficientnet-lite0", "split": "backbone"},
           "tools": {"u": {"cfg": "cfg/uniform.cfg", "rate_points": [40]}}, "anchor": "u"}
    config = parse_config(raw, "t.yaml")
    reference = [ref(i % 3, [i % 3, 9, 9, 9, 9]) for i in range(8)]
    records = [rec([i % 3 if i < 6 else 7, 9, 9, 9, 9]) for i in range(8)]
    bootstrap = Bootstrap(8, 25, seed=2)
    result = Quality(config, bootstrap, reference).of_point(records)
    assert set(result) == {"top1", "top5", "agreement"}
    value, resamples = result["top1"]
    assert value == pytest.approx(75.0)
    correct = np.array([1.0] * 6 + [0.0] * 2)
    assert np.allclose(resamples, 100.0 * correct[bootstrap.indices].mean(axis=1))
    assert Quality(config, bootstrap, reference).of_reference()["agreement"][0] == pytest.approx(100.0)
    assert Quality(config, Bootstrap(8, 0), reference).of_point(records)["top1"][1] is None


# ---------------------------------------------------------------- COCO detection

IMAGES = [11, 22, 33]               # ids deliberately unlike the positions 0, 1, 2
CATEGORIES = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
BOXES = {                           # image -> [(category, [x, y, w, h])]
    11: [(1, [10, 10, 40, 30]), (1, [60, 50, 30, 30])],
    22: [(2, [20, 20, 50, 50])],
    33: [(1, [5, 5, 20, 20]), (2, [50, 40, 40, 40])],
}


def polygon(box):
    x, y, w, h = box
    return [[x, y, x + w, y, x + w, y + h, x, y + h]]


def write_annotations(path, boxes):
    images, annotations = [], []
    for image_id, objects in boxes.items():
        images.append({"id": image_id, "width": 100, "height": 100, "file_name": f"{image_id}.jpg"})
        for category, box in objects:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": category,
                                "bbox": list(box), "area": float(box[2] * box[3]), "iscrowd": 0,
                                "segmentation": polygon(box)})
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": CATEGORIES}))
    return path


@pytest.fixture
def annotations(tmp_path):
    return write_annotations(tmp_path / "instances.json", BOXES)


def record(image_id, detections):
    return {"image": str(image_id), "prediction": {"detections": detections}}


def det(category, box, score):
    return {"category_id": category, "bbox": [float(v) for v in box], "score": score}


def perfect_records():
    return [record(image_id, [det(c, box, 0.9 - 0.1 * k) for k, (c, box) in enumerate(BOXES[image_id])])
            for image_id in IMAGES]


def imperfect_records():
    """Distinct scores; a miss, a confident false positive, a loose box (IoU ≈ 0.67), a wrong class."""
    return [
        record(11, [det(1, [10, 10, 40, 30], 0.95), det(1, [0, 70, 20, 20], 0.97)]),   # miss + FP
        record(22, [det(2, [20, 20, 50, 60], 0.80)]),                                   # IoU 50·50/(50·60)=0.83
        record(33, [det(1, [5, 5, 20, 20], 0.70), det(1, [50, 40, 40, 40], 0.60),       # wrong class
                    det(2, [55, 45, 40, 40], 0.50)]),                                   # IoU ≈ 0.62
    ]


def test_perfect_detections_give_ap_100(annotations):
    scorer = CocoScorer(annotations, IMAGES)
    assert scorer.stats(scorer.evaluation(perfect_records(), "bbox")) == pytest.approx((100.0, 100.0, 100.0))


def test_no_detections_give_zero(annotations):
    scorer = CocoScorer(annotations, IMAGES)
    empty = [record(image_id, []) for image_id in IMAGES]
    assert scorer.evaluation(empty, "bbox") is None
    assert scorer.stats(scorer.evaluation(empty, "bbox")) == (0.0, 0.0, 0.0)
    assert scorer.stats(None, [0, 0, 1]) == (0.0, 0.0, 0.0)


def test_wrong_detections_give_zero(annotations):
    scorer = CocoScorer(annotations, IMAGES)
    wrong = [record(image_id, [det(1, [90, 90, 5, 5], 0.9)]) for image_id in IMAGES]
    assert scorer.stats(scorer.evaluation(wrong, "bbox")) == pytest.approx((0.0, 0.0, 0.0))


def test_imperfect_detections_are_between(annotations):
    scorer = CocoScorer(annotations, IMAGES)
    ap, ap50, ap75 = scorer.stats(scorer.evaluation(imperfect_records(), "bbox"))
    assert 0.0 < ap < ap75 <= ap50 < 100.0


def test_missing_image_lowers_ap(annotations):
    """Ground truth of an image without records still counts (the scorer's image list is fixed)."""
    scorer = CocoScorer(annotations, IMAGES)
    ap50 = scorer.stats(scorer.evaluation(perfect_records()[:2], "bbox"))[1]
    assert 0.0 < ap50 < 100.0


def test_identity_positions_equal_the_plain_stats(annotations):
    scorer = CocoScorer(annotations, IMAGES)
    evaluation = scorer.evaluation(imperfect_records(), "bbox")
    plain = scorer.stats(evaluation)
    assert scorer.stats(evaluation, [0, 1, 2]) == pytest.approx(plain, abs=1e-12)
    assert scorer.stats(evaluation, np.array([0, 1, 2])) == pytest.approx(plain, abs=1e-12)
    # the evaluation is not changed by a resample: the plain stats again
    scorer.stats(evaluation, [2, 2, 2])
    assert scorer.stats(evaluation) == pytest.approx(plain, abs=1e-12)


def test_permuted_positions_equal_the_plain_stats(annotations):
    scorer = CocoScorer(annotations, IMAGES)
    evaluation = scorer.evaluation(imperfect_records(), "bbox")
    assert scorer.stats(evaluation, [2, 0, 1]) == pytest.approx(scorer.stats(evaluation), abs=1e-12)


@pytest.mark.parametrize("k", [0, 1, 2])
def test_resampling_only_image_k_gives_its_own_ap(annotations, k):
    scorer = CocoScorer(annotations, IMAGES)
    records = imperfect_records()
    evaluation = scorer.evaluation(records, "bbox")
    alone = CocoScorer(annotations, [IMAGES[k]])
    own = alone.stats(alone.evaluation([records[k]], "bbox"))
    assert scorer.stats(evaluation, [k]) == pytest.approx(own, abs=1e-9)
    assert scorer.stats(evaluation, [k, k, k]) == pytest.approx(own, abs=1e-9)


def test_resampling_only_image_k_differs_between_images(annotations):
    scorer = CocoScorer(annotations, IMAGES)
    evaluation = scorer.evaluation(imperfect_records(), "bbox")
    per_image = [scorer.stats(evaluation, [k])[0] for k in range(3)]
    assert len({round(v, 9) for v in per_image}) == 3           # the resample really picks the image


def test_image_order_of_the_scorer_is_respected(annotations):
    """positions index the scorer's image_ids, not COCO's sorted ids."""
    records = imperfect_records()
    forward = CocoScorer(annotations, IMAGES)
    backward = CocoScorer(annotations, IMAGES[::-1])
    ev_f, ev_b = forward.evaluation(records, "bbox"), backward.evaluation(records, "bbox")
    for k in range(3):
        assert forward.stats(ev_f, [k]) == pytest.approx(backward.stats(ev_b, [2 - k]), abs=1e-12)


@pytest.mark.parametrize("positions", [[0, 0, 1], [2, 2, 0], [1, 1, 1, 2], [0, 1, 2, 0]])
def test_resample_with_repeats_equals_evaluating_the_duplicated_set(tmp_path, annotations, positions):
    records = imperfect_records()
    scorer = CocoScorer(annotations, IMAGES)
    resampled = scorer.stats(scorer.evaluation(records, "bbox"), positions)

    # the same images as a data set of their own: each repeat a copy under a new id
    boxes, copies, dup_records = {}, [], []
    for n, p in enumerate(positions):
        new_id = 100 + n
        boxes[new_id] = BOXES[IMAGES[p]]
        copies.append(new_id)
        dup_records.append(dict(records[p], image=str(new_id)))
    duplicated = CocoScorer(write_annotations(tmp_path / "dup.json", boxes), copies)
    expected = duplicated.stats(duplicated.evaluation(dup_records, "bbox"))
    assert resampled == pytest.approx(expected, abs=1e-9)


def test_segm_evaluation_uses_the_masks(annotations):
    mask_utils = pytest.importorskip("pycocotools.mask")

    def rle(box):
        encoded = mask_utils.merge(mask_utils.frPyObjects(polygon(box), 100, 100))
        return {"size": encoded["size"], "counts": encoded["counts"].decode("ascii")}

    records = []
    for image_id in IMAGES:
        # the boxes are wrong on purpose: segm AP must come from the masks alone
        records.append(record(image_id, [dict(det(c, [0, 0, 1, 1], 0.9 - 0.1 * k), segmentation=rle(box))
                                         for k, (c, box) in enumerate(BOXES[image_id])]))
    scorer = CocoScorer(annotations, IMAGES)
    assert scorer.stats(scorer.evaluation(records, "segm")) == pytest.approx((100.0, 100.0, 100.0))
    assert scorer.stats(scorer.evaluation(records, "bbox")) == pytest.approx((0.0, 0.0, 0.0))
    assert scorer.stats(scorer.evaluation(records, "segm"), [1, 1]) == pytest.approx((100.0, 100.0, 100.0))


def test_quality_of_detection_point(annotations):
    raw = {"name": "d", "dataset": {"kind": "coco"}, "task": {"network": "fasterrcnn_r50fpn", "split": "fpn"},
           "tools": {"u": {"cfg": "cfg/uniform.cfg", "rate_points": [40]}}, "anchor": "u"}
    config = parse_config(raw, "d.yaml")
    scorer = CocoScorer(annotations, IMAGES)
    bootstrap = Bootstrap(3, 6, seed=1)
    records = imperfect_records()
    result = Quality(config, bootstrap, perfect_records(), scorer).of_point(records)
    assert set(result) == {"bbox_ap", "bbox_ap50", "bbox_ap75"}
    evaluation = scorer.evaluation(records, "bbox")
    assert result["bbox_ap50"][0] == pytest.approx(scorer.stats(evaluation)[1])
    assert result["bbox_ap"][1].shape == (6,)
    for r, row in enumerate(bootstrap.indices):
        assert result["bbox_ap75"][1][r] == pytest.approx(scorer.stats(evaluation, row)[2])
    reference = Quality(config, bootstrap, perfect_records(), scorer).of_reference()
    assert reference["bbox_ap"][0] == pytest.approx(100.0)
    assert np.allclose(reference["bbox_ap"][1], 100.0)
    assert not any(math.isnan(v) for v in result["bbox_ap"][1])
