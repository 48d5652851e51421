"""The torchvision R50-FPN split (random weights): back(front(x)) equals the unsplit model,
the loss helpers see what the detector sees, weight files load or fail cleanly, and one
FeatJND training step runs on COCO-mini."""

import math

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")

from common.errors import InputError  # noqa: E402
from ctc.tasks.rcnn_fpn import LEVELS, RcnnFpnSplit  # noqa: E402
from tests.helpers import REPO  # noqa: E402

COCO_MINI = REPO.parent / "shared" / "data" / "coco-mini"
# Small inputs keep each test to a few seconds on a CPU (the default transform resizes to 800).
# box_score_thresh 0: random weights may score every class below the default 0.05.
SMALL = {"min_size": 160, "max_size": 160, "rpn_post_nms_top_n_test": 100, "box_score_thresh": 0.0,
         "box_detections_per_img": 5}
_splits = {}


def split_of(kind):
    if kind not in _splits:
        _splits[kind] = RcnnFpnSplit(kind, **SMALL)
    return _splits[kind]


def random_images():
    generator = torch.Generator().manual_seed(1)
    return [torch.rand(3, 120, 160, generator=generator), torch.rand(3, 90, 128, generator=generator)]


@pytest.mark.parametrize("kind", ["faster", "mask"])
def test_back_of_front_equals_unsplit_model(kind):
    split = split_of(kind)
    images = random_images()
    with torch.no_grad():
        detections = split.back(*split.front(images))
        unsplit = split.model(images)                  # torchvision's own GeneralizedRCNN.forward (eval)
    expected_keys = {"boxes", "labels", "scores"} | ({"masks"} if kind == "mask" else set())
    for ours, theirs, image in zip(detections, unsplit, images):
        assert set(ours) == set(theirs) == expected_keys
        assert len(ours["boxes"]) == SMALL["box_detections_per_img"]
        for key in expected_keys:
            assert torch.equal(ours[key], theirs[key]), key
        if kind == "mask":
            assert ours["masks"].shape[-2:] == image.shape[-2:]


def test_feature_levels_and_shapes():
    split = split_of("faster")
    with torch.no_grad():
        features, image_sizes, original_sizes = split.front(random_images())
    assert list(features) == list(LEVELS)
    # 120×160 stays (160/160 caps the scale at 1); 90×128 -> 112×160; the batch pads to 128×160
    assert original_sizes == [(120, 160), (90, 128)]
    assert image_sizes == [(120, 160), (112, 160)]
    for name, (h, w) in zip(LEVELS, [(32, 40), (16, 20), (8, 10), (4, 5), (2, 3)]):
        assert features[name].shape == (2, 256, h, w), name


def test_loss_helpers_reproduce_the_detections():
    """proposals + roi_outputs give the same detections as back: the losses see the detector's path."""
    split = split_of("faster")
    with torch.no_grad():
        features, image_sizes, original_sizes = split.front(random_images())
        expected = split.back(features, image_sizes, original_sizes)
        proposals = split.proposals(features, image_sizes)
        class_logits, box_regression = split.roi_outputs(features, proposals, image_sizes)
        objectness, deltas = split.rpn_outputs(features)
    heads = split.model.roi_heads
    boxes, scores, labels = heads.postprocess_detections(class_logits, box_regression, proposals, image_sizes)
    rebuilt = split.model.transform.postprocess(
        [{"boxes": b, "scores": s, "labels": c} for b, s, c in zip(boxes, scores, labels)], image_sizes,
        original_sizes)
    for ours, theirs in zip(rebuilt, expected):
        for key in ("boxes", "labels", "scores"):
            assert torch.equal(ours[key], theirs[key]), key
    assert [tuple(o.shape) for o in objectness] == [(2, 3) + tuple(features[n].shape[-2:]) for n in LEVELS]
    assert [d.shape[1] for d in deltas] == [12] * 5
    assert class_logits.shape == (sum(len(p) for p in proposals), 91)
    assert box_regression.shape == (class_logits.shape[0], 91 * 4)


def test_mask_outputs_need_the_mask_model():
    features = {name: torch.zeros(1, 256, 64 >> i, 64 >> i) for i, name in enumerate(LEVELS)}
    with pytest.raises(ValueError, match="kind='mask'"):
        split_of("faster").mask_outputs(features, [torch.tensor([[0.0, 0.0, 10.0, 10.0]])], [(256, 256)])


def test_seeded_init_and_weight_loading(tmp_path):
    rng_before = torch.random.get_rng_state()
    first, second = RcnnFpnSplit("faster"), RcnnFpnSplit("faster")
    assert torch.equal(torch.random.get_rng_state(), rng_before)      # the caller's RNG is untouched
    state = first.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in second.model.state_dict().items())
    assert not any(p.requires_grad for p in first.parameters())
    first.train()
    assert not first.model.training and not first.model.rpn.training

    # a checkpoint with other values loads exactly, as a state_dict or a training checkpoint's "model" entry
    changed = {k: (v + 1 if v.is_floating_point() else v) for k, v in state.items()}
    path = tmp_path / "faster.pth"
    torch.save({"model": changed}, path)
    loaded = RcnnFpnSplit("faster", weights=path).model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in changed.items())


def test_bad_weight_files_are_one_line_input_errors(tmp_path):
    key = "roi_heads.box_predictor.cls_score.weight"
    (tmp_path / "garbage.pth").write_bytes(b"not a torch file")
    cases = {   # small files: any key set other than the model's is refused, as is a wrong shape
        "missing.pth": None,
        "garbage.pth": None,
        "lacks_keys.pth": {key: torch.zeros(91, 1024)},
        "extra_key.pth": {"roi_heads.mask_head.0.weight": torch.zeros(1)},
        "wrong_shape.pth": {key: torch.zeros(2, 1024)},
        "no_dict.pth": [torch.zeros(1)],
    }
    for name, content in cases.items():
        if content is not None:
            torch.save(content, tmp_path / name)
        with pytest.raises(InputError) as info:
            RcnnFpnSplit("faster", weights=tmp_path / name)
        message = str(info.value)
        assert "\n" not in message and name in message, message


def test_featjnd_training_step_on_coco_mini():
    """One FeatJND step for Mask R-CNN (random weights) on two COCO-mini images: finite loss, G moves."""
    if not (COCO_MINI / "annotations" / "instances_val2017.json").is_file():
        pytest.skip(f"COCO-mini not found at {COCO_MINI} (expects val2017/ and annotations/instances_val2017.json)")
    from ctc.coco import load_coco, load_image
    from ctc.training.losses import LAMBDA_INSTANCE, featjnd_loss, instance_distortion
    from encoder.featjnd.estimator import FeatJNDEstimator

    entries = load_coco(COCO_MINI / "val2017", COCO_MINI / "annotations" / "instances_val2017.json")
    assert entries
    images = [load_image(path) for _, path in entries[:2]]
    split = RcnnFpnSplit("mask", min_size=160, max_size=160, rpn_post_nms_top_n_test=100)
    with torch.no_grad():
        clean, image_sizes, _ = split.front(images)
    proposals = split.proposals(clean, image_sizes)
    top_boxes = [boxes[:4] for boxes in proposals]

    torch.manual_seed(0)
    estimator = FeatJNDEstimator(256, width=16, num_blocks=1).train()      # one G for every level
    before = [p.detach().clone() for p in estimator.parameters()]
    optimiser = torch.optim.Adam(estimator.parameters(), lr=2e-5)
    delta = {name: estimator(f) for name, f in clean.items()}
    perturbed = {name: clean[name] + delta[name] for name in clean}
    distortion = instance_distortion(split, clean, perturbed, image_sizes, proposals, mask_proposals=top_boxes)
    loss = featjnd_loss(distortion, delta, LAMBDA_INSTANCE)
    optimiser.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(estimator.parameters(), 1.0)
    optimiser.step()

    assert math.isfinite(float(loss.detach())) and float(distortion.detach()) > 0
    assert all(p.grad is None for p in split.parameters())
    assert any(not torch.equal(b, p) for b, p in zip(before, estimator.parameters()))
