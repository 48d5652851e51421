"""YOLOv5n from the shared weights: the split equals the unsplit network, the reference output
is reproduced, COCO AP on the 79 annotated coco-mini images matches the publisher's figures,
and bad weight files are one-line errors. Tests needing ../shared skip cleanly without it."""

import json
import struct

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")
pytest.importorskip("cv2")

from common.errors import InputError  # noqa: E402
from ctc.tasks.yolov5n import (Yolov5n, letterbox, non_max_suppression, scale_boxes,  # noqa: E402
                               to_input)
from tests.helpers import REPO  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
WEIGHTS = SHARED / "weights" / "yolov5n_coco.safetensors"
REFERENCE = SHARED / "weights" / "yolov5n_reference_000000568290.npz"
COCO_MINI = SHARED / "coco-mini"
needs_weights = pytest.mark.skipif(not WEIGHTS.is_file(), reason=f"YOLOv5n weights not found at {WEIGHTS}")
_networks = {}


def network(split="neck"):
    if split not in _networks:
        _networks[split] = Yolov5n(WEIGHTS, split)
    return _networks[split]


@needs_weights
@pytest.mark.parametrize("split, shapes", [("neck", {"p3": (64, 80), "p4": (128, 40), "p5": (256, 20)}),
                                           ("backbone", {"c3": (64, 80), "c4": (128, 40), "c5": (256, 20)})])
def test_back_of_front_equals_unsplit_network(split, shapes):
    images = torch.rand(2, 3, 640, 640, generator=torch.Generator().manual_seed(3))
    net = network(split)
    with torch.no_grad():
        features = net.front(images)
        assert {name: (f.shape[1], f.shape[2]) for name, f in features.items()} == shapes
        assert torch.equal(net.back(features), net(images))


@needs_weights
@pytest.mark.skipif(not REFERENCE.is_file(), reason=f"YOLOv5n reference output not found at {REFERENCE}")
def test_reference_output_is_reproduced():
    from ctc.images import read_rgb

    reference = np.load(REFERENCE)
    rgb = read_rgb(COCO_MINI / "val2017" / "000000568290.jpg")
    letterboxed, placement = letterbox(rgb)
    assert np.array_equal(letterboxed, reference["letterboxed_rgb"])
    assert (placement.pad_left, placement.pad_top, placement.ratio) == (0.0, 106.5, 1.0)
    net = network()
    with torch.no_grad():
        features = net.front(to_input(letterboxed))
        detections = scale_boxes(non_max_suppression(net.back(features), conf=0.25, iou=0.45)[0], placement)
    for name in ("p3", "p4", "p5"):
        assert np.abs(features[name].numpy() - reference[name]).max() < 1e-4, name
    expected = reference["detections_xyxy_score_class"]
    assert detections.shape == expected.shape
    assert np.array_equal(detections[:, 5].numpy(), expected[:, 5])
    assert np.abs(detections[:, :5].numpy() - expected[:, :5]).max() < 1e-2


def test_letterbox_scales_up_and_pads_in_halves():
    rgb = np.full((333, 500, 3), 200, dtype=np.uint8)
    image, placement = letterbox(rgb)
    assert image.shape == (640, 640, 3)
    assert placement.ratio == 640 / 500
    new_height = round(333 * 640 / 500)                            # 426: pad 214 = 107 + 107
    assert placement.pad_top == (640 - new_height) / 2
    assert (image[:107] == 114).all() and (image[107 + new_height:] == 114).all()
    assert (image[107:107 + new_height] == 200).all()


def test_nms_multi_label_keeps_one_box_per_class_and_suppresses_overlaps():
    prediction = torch.zeros(1, 3, 85)
    prediction[0, :, :4] = torch.tensor([[100.0, 100, 50, 50], [102, 100, 50, 50], [400, 400, 20, 20]])
    prediction[0, :, 4] = torch.tensor([0.9, 0.8, 0.0005])            # the third is below conf
    prediction[0, 0, 5 + 2], prediction[0, 0, 5 + 7] = 0.9, 0.5      # two classes above conf
    prediction[0, 1, 5 + 2] = 0.9                                      # overlaps box 0, same class
    multi = non_max_suppression(prediction, conf=0.001, iou=0.6)[0]
    assert sorted(multi[:, 5].tolist()) == [2.0, 7.0]
    assert torch.allclose(multi[0, :4], torch.tensor([75.0, 75, 125, 125]))
    single = non_max_suppression(prediction, conf=0.001, iou=0.6, multi_label=False)[0]
    assert single[:, 5].tolist() == [2.0]


@needs_weights
@pytest.mark.skipif(not (COCO_MINI / "annotations" / "instances_val2017.json").is_file(),
                    reason=f"COCO-mini not found at {COCO_MINI}")
@pytest.mark.parametrize("multi_label, expected", [(True, (31.85, 51.34)), (False, (31.58, 51.34))])
def test_coco_mini_ap_matches_the_published_figures(multi_label, expected):
    """bbox AP and AP50 on the 79 annotated images within ±0.003 (0.3 points) of the README."""
    from ctc.coco import load_coco
    from ctc.images import read_rgb
    from ctc.metrics import CocoScorer
    from ctc.tasks.evaluation import YoloTask

    annotations = COCO_MINI / "annotations" / "instances_val2017.json"
    images = load_coco(COCO_MINI / "val2017", annotations)
    assert len(images) == 79
    task = YoloTask("neck", WEIGHTS, {"multi_label": multi_label})
    records = [{"image": image_id, "prediction": task.back(*task.front(read_rgb(path)))}
               for image_id, path in images]
    scorer = CocoScorer(annotations, [image_id for image_id, _ in images])
    ap, ap50, _ = scorer.stats(scorer.evaluation(records, "bbox"))
    assert abs(ap - expected[0]) <= 0.3 and abs(ap50 - expected[1]) <= 0.3, (ap, ap50)


def _safetensors(path, tensors, metadata):
    from safetensors.torch import save_file
    save_file(tensors, str(path), metadata=metadata)


@needs_weights
def test_bad_weight_files_are_one_line_input_errors(tmp_path):
    from safetensors import safe_open

    with safe_open(str(WEIGHTS), framework="pt") as f:
        metadata = f.metadata()
        state = {key: f.get_tensor(key) for key in f.keys()}
    (tmp_path / "garbage.safetensors").write_bytes(struct.pack("<Q", 5) + b"nojso")
    _safetensors(tmp_path / "wrong_nc.safetensors", state, {**metadata, "nc": "81"})
    _safetensors(tmp_path / "wrong_stride.safetensors", state, {**metadata, "stride": "[8.0, 16.0, 64.0]"})
    anchors = json.loads(metadata["anchors_pixels"])
    anchors[0][0] = [11.0, 13.0]
    _safetensors(tmp_path / "wrong_anchors.safetensors", state, {**metadata, "anchors_pixels": json.dumps(anchors)})
    _safetensors(tmp_path / "no_metadata.safetensors", state, {})
    _safetensors(tmp_path / "lacks_tensor.safetensors",
                 {k: v for k, v in state.items() if k != "model.24.m.0.bias"}, metadata)
    _safetensors(tmp_path / "wrong_shape.safetensors", {**state, "model.24.m.0.bias": torch.zeros(3)}, metadata)
    for name in ("missing.safetensors", "garbage.safetensors", "wrong_nc.safetensors", "wrong_stride.safetensors",
                 "wrong_anchors.safetensors", "no_metadata.safetensors", "lacks_tensor.safetensors",
                 "wrong_shape.safetensors"):
        with pytest.raises(InputError) as info:
            Yolov5n(tmp_path / name)
        message = str(info.value)
        assert "\n" not in message and name in message, message
