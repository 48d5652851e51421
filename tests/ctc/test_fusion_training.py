"""L-MSFC training (ctc/training/fusion.py) on a folder of a few synthetic photos, features
computed on the fly: one process, then two under torchrun with the gloo backend (the two ranks
end with equal weights), and a run that resumes from its checkpoint. Needs the YOLOv5n weights
of ../shared (skipped without them)."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import REPO

pytest.importorskip("torch")
YOLO_WEIGHTS = REPO.parent / "shared" / "data" / "weights" / "yolov5n_coco.safetensors"
pytestmark = pytest.mark.skipif(not YOLO_WEIGHTS.is_file(), reason=f"YOLOv5n weights not found at {YOLO_WEIGHTS}")

TINY = ["--trunk", "8", "--latent", "8", "--hyper", "8", "--extra-stages", "1", "--rates", "3", "--batch", "1",
        "--crop", "8", "--task-weight", "1", "--mse-weight", "0.1", "--warmup", "1", "--checkpoint-every", "2",
        "--seed", "0", "--threads", "1"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Four small photos in a nested folder (any layout is searched recursively)."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("photos")
    (folder / "train2017").mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        pixels = rng.integers(0, 256, size=(96 + 16 * i, 128, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / "train2017" / f"{i}.png")
    return folder


def fusion_command(photos, tmp_path, steps, *launcher, extra=()):
    return [*launcher, "-m", "ctc.training.fusion", "--weights", str(YOLO_WEIGHTS), "--images", str(photos),
            "--steps", str(steps), "--out", str(tmp_path / "out"), "--model-dir", str(tmp_path / "models"),
            "--name", "tiny", *TINY, *extra]


def run(command):
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_two_processes_under_torchrun_end_with_equal_weights(photos, tmp_path):
    out = run(fusion_command(photos, tmp_path, 3, sys.executable, "-m", "torch.distributed.run", "--standalone",
                             "--nproc_per_node", "2"))
    digests = dict(re.findall(r"rank (\d) parameter digest ([0-9a-f]{16})", out))
    assert set(digests) == {"0", "1"} and digests["0"] == digests["1"], out
    assert "2 process(es) on cpu" in out
    (model,) = (tmp_path / "models").glob("tiny-*.safetensors")
    curve = json.loads((tmp_path / "out" / "tiny_curve.json").read_text())
    assert curve == [] or curve[-1]["step"] == 3


def test_a_run_resumes_from_its_checkpoint(photos, tmp_path):
    """Stopped after step 2 (--stop-at, its checkpoint), continued: the same model file as 4 steps in
    one go."""
    run(fusion_command(photos, tmp_path / "once", 4, sys.executable))
    stopped = run(fusion_command(photos, tmp_path / "twice", 4, sys.executable, extra=["--stop-at", "2"]))
    assert "stopped at step 2 of 4" in stopped and not (tmp_path / "twice" / "models").exists()
    resumed = run(fusion_command(photos, tmp_path / "twice", 4, sys.executable))
    assert "resumed at step 2" in resumed
    once = [p.name for p in (tmp_path / "once" / "models").glob("*.safetensors")]
    twice = [p.name for p in (tmp_path / "twice" / "models").glob("*.safetensors")]
    assert len(once) == 1 and once == twice


def test_the_jnd_weighted_error_trains_with_a_noise_estimator(photos, tmp_path):
    """--jnd-weight with a tiny noise-tolerance estimator: the run logs its weights' source and saves a model."""
    import torch

    from encoder.featjnd.estimator import PyramidJNDEstimator, save_estimator

    torch.manual_seed(0)
    estimator = PyramidJNDEstimator([64, 128, 256], width=4, num_blocks=1, output="noise")
    path = save_estimator(estimator, str(tmp_path), "featjnd_tiny-noise")
    out = run(fusion_command(photos, tmp_path, 2, sys.executable, extra=["--mse-weight", "0", "--jnd-weight", "1",
                                                                          "--jnd-estimator", path]))
    assert "JND weights from featjnd_tiny-noise_" in out
    assert len(list((tmp_path / "models").glob("tiny-*.safetensors"))) == 1


def test_jnd_weights_follow_the_inverse_square_tolerance_and_average_one_on_the_sample():
    import torch

    from ctc.training.fusion import JndWeights
    from encoder.featjnd.estimator import PyramidJNDEstimator

    estimator = PyramidJNDEstimator([1, 2, 3], width=2, num_blocks=1, output="noise").eval()   # δ = e^-2 everywhere
    sample = [[np.ones((c, 2, 2), np.float32) for c in (1, 2, 3)]]
    weights = JndWeights(estimator, sample, "cpu")
    assert weights.log_scales == pytest.approx([-4.0] * 3)                 # a = 1 / E[1/δ²] = e^-4
    levels = [torch.ones(1, c, 2, 2) for c in (1, 2, 3)]
    assert all(torch.allclose(w, torch.ones_like(w)) for w in weights(levels))
    estimator.networks[1].set_scale(2.0)                       # δ doubled on one level: weights (1/2)²
    assert torch.allclose(weights(levels)[1], torch.full((1, 2, 2, 2), 0.25))
