"""FeatJND training (ctc.training.featjnd) and the tolerance picture (ctc.featjnd_picture), on tiny inputs."""

import hashlib
import math
import os
import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("efficientnet_lite_pytorch")
pytest.importorskip("safetensors")
from PIL import Image  # noqa: E402

from ctc.training.data import random_resized_crop  # noqa: E402
from ctc.training.featjnd import parse_args, run_classification  # noqa: E402
from encoder.featjnd.estimator import FeatJNDEstimator, estimator_metadata, load_estimator  # noqa: E402


@pytest.fixture(scope="module")
def net():
    from ctc.tasks.efficientnet_lite import EfficientNetLiteSplit
    return EfficientNetLiteSplit("efficientnet-lite0")


@pytest.fixture
def images(tmp_path):
    """Two small synthetic photos (one PNG, one JPEG in a subfolder: the reader recurses)."""
    rng = np.random.default_rng(7)
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(folder / "a.png")
    Image.fromarray(rng.integers(0, 256, (72, 40, 3), dtype=np.uint8)).save(folder / "sub" / "b.jpg")
    (folder / "notes.txt").write_text("not an image")
    return folder


def train_tiny(images, out, net):
    args = parse_args(["--data", str(images), "--crops", "1", "--steps", "2", "--batch", "2",
                       "--width", "8", "--blocks", "1", "--seed", "3", "--out", str(out)])
    return run_classification(args, net)


def test_two_steps_save_a_loadable_hash_named_estimator(images, tmp_path, net):
    path, history = train_tiny(images, tmp_path / "first", net)
    name = path.rsplit("/", 1)[-1]
    match = re.fullmatch(r"featjnd_efficientnet-lite0_([0-9a-f]{12})\.safetensors", name)
    assert match, name
    with open(path, "rb") as fh:
        assert hashlib.sha256(fh.read()).hexdigest()[:12] == match.group(1)
    model = load_estimator(path)
    assert model.config == {"channels": 1280, "width": 8, "num_blocks": 1}
    assert history[-1]["steps"] == 2
    assert all(math.isfinite(record[key]) for record in history for key in ("loss", "distortion", "delta_norm"))

    metadata = estimator_metadata(path)
    assert (metadata["task"], metadata["model"], metadata["seed"], metadata["steps"]) == (
        "cls", "efficientnet-lite0", "3", "2")
    assert math.isfinite(float(metadata["final_loss"]))

    # Same seed -> the same file, byte for byte (so the same hash in its name).
    again, _ = train_tiny(images, tmp_path / "second", net)
    assert os.path.basename(again) == name and estimator_metadata(again) == metadata
    for key, value in load_estimator(again).state_dict().items():
        assert torch.equal(value, model.state_dict()[key]), key


def test_random_resized_crop_is_seeded_and_sized():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8))
    first = random_resized_crop(image, np.random.default_rng([1, 2]), 32)
    second = random_resized_crop(image, np.random.default_rng([1, 2]), 32)
    assert first.size == (32, 32)
    assert first.tobytes() == second.tobytes()


def test_picture_is_a_png(tmp_path, net):
    from ctc.featjnd_picture import write_tolerance_picture

    torch.manual_seed(0)
    estimator = FeatJNDEstimator(1280, width=8, num_blocks=1).eval()
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (240, 300, 3), dtype=np.uint8))
    path = tmp_path / "pictures" / "tolerance.png"
    maps = write_tolerance_picture(image, net, estimator, str(path), 0.01)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert maps["energy"].shape == maps["tolerance"].shape == (7, 7)
    assert np.all(np.isfinite(maps["tolerance"])) and np.all(maps["tolerance"] >= 0)


def test_detection_hook_runs_one_step(tmp_path):
    """--task det against the R50-FPN split with random weights (no pretrained ones can be had here)."""
    pytest.importorskip("torchvision")
    from ctc.tasks.rcnn_fpn import RcnnFpnSplit
    from ctc.training.featjnd import run_detection

    weights = tmp_path / "faster_random.pt"
    torch.save(RcnnFpnSplit("faster").model.state_dict(), weights)
    folder = tmp_path / "coco"
    folder.mkdir()
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (96, 128, 3), dtype=np.uint8)).save(folder / "1.jpg")
    args = parse_args(["--task", "det", "--weights", str(weights), "--coco-images", str(folder), "--steps", "1",
                       "--min-size", "96", "--width", "8", "--blocks", "1", "--out", str(tmp_path / "out")])
    assert (args.lambda_t, args.lr) == (200.0, 2e-5)
    path, history = run_detection(args)
    assert load_estimator(path).config == {"channels": 256, "width": 8, "num_blocks": 1}
    assert math.isfinite(history[-1]["loss"])


SHARED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), os.pardir, "shared", "data")
YOLO_WEIGHTS = os.path.join(SHARED, "weights", "yolov5n_coco.safetensors")
needs_yolo = pytest.mark.skipif(not os.path.isfile(YOLO_WEIGHTS), reason=f"YOLOv5n weights not found at {YOLO_WEIGHTS}")


@needs_yolo
def test_detection_pool_holds_back_the_calibration_photos_and_the_evaluation_set():
    import json

    from ctc.training.featjnd import detection_pool

    paths = detection_pool(SHARED)
    with open(os.path.join(SHARED, "coco-mini", "annotations", "instances_val2017.json")) as fh:
        evaluation = {entry["file_name"] for entry in json.load(fh)["images"]}
    assert len(paths) == 233
    assert not any("coco-train" in str(p) for p in paths) and not any(p.name in evaluation for p in paths)


def train_tiny_yolo(tmp_path, monkeypatch, seed, *options):
    """Two steps of --task det --model yolov5n (a tiny estimator) on four random pyramids, the
    feature cache stubbed; returns (weight path, history, the pyramids)."""
    pytest.importorskip("torchvision")
    import ctc.training.data as training_data
    import ctc.training.featjnd as train_featjnd

    rng = np.random.default_rng(seed)
    pyramids = [[rng.normal(size=(c, s, s)).astype(np.float16) for c, s in ((64, 48), (128, 24), (256, 12))]
                for _ in range(4)]
    monkeypatch.setattr(training_data, "cached_pyramids", lambda *args: pyramids)
    monkeypatch.setattr(train_featjnd, "detection_pool", lambda data: ["a", "b"])
    args = parse_args(["--task", "det", "--model", "yolov5n", "--weights", YOLO_WEIGHTS, "--steps", "2",
                       "--batch", "2", "--crop", "40", "--width", "4", "--blocks", "1", *options,
                       "--out", str(tmp_path)])
    path, history = train_featjnd.run_yolo(args)
    return path, history, pyramids


@needs_yolo
def test_yolov5n_estimator_trains_with_the_relative_reward(tmp_path, monkeypatch):
    """Two steps of --task det --model yolov5n on four random pyramids (the feature cache is stubbed)."""
    path, history, _ = train_tiny_yolo(tmp_path, monkeypatch, 0, "--reward", "relative", "--lambda-t", "64")
    model = load_estimator(path)
    assert model.config == {"levels": [64, 128, 256], "width": 4, "num_blocks": 1}
    assert os.path.basename(path).startswith("featjnd_yolov5n-neck_")
    assert estimator_metadata(path)["reward"] == "relative" and math.isfinite(history[-1]["loss"])


@needs_yolo
def test_yolov5n_noise_estimator_trains_on_noise_and_is_named_apart(tmp_path, monkeypatch):
    """Two steps of --perturbation noise: positive δ, the mean-log reward, a `-noise` file name."""
    path, history, pyramids = train_tiny_yolo(tmp_path, monkeypatch, 1, "--perturbation", "noise", "--lr", "1e-3",
                                              "--lambda-t", "100")
    model = load_estimator(path)
    assert model.config["output"] == "noise" and os.path.basename(path).startswith("featjnd_yolov5n-neck-noise_")
    assert estimator_metadata(path)["perturbation"].startswith("noise")
    assert history[-1]["delta_norm"] == pytest.approx(-2.0, abs=0.05)      # mean log δ near its start
    with torch.no_grad():
        assert all(float(d.min()) > 0 for d in model([torch.from_numpy(p.astype(np.float32))[None]
                                                       for p in pyramids[0]]))


def test_noise_is_refused_for_the_rcnn_estimators():
    with pytest.raises(SystemExit):
        parse_args(["--task", "det", "--perturbation", "noise"])
