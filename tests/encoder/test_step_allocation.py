"""FeatJND step allocation: tolerance, the three allocation modes, noise budgets, and
JND-allocated streams decoding with the unchanged decoder."""

import os
import subprocess
import sys

import numpy as np
import pytest

from common.tools.tokenwise.sq import step_sizes
from decoder.decoder import decode_stream
from encoder.encoder import encode_features
from encoder.featjnd.allocation import StepAllocator, shaped_tolerance, step_exponents, token_tolerance
from encoder.options import default_options

torch = pytest.importorskip("torch")
from encoder.featjnd.estimator import FeatJNDEstimator, save_estimator  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_token_tolerance_is_mean_relative_perturbation():
    f = np.array([[[1.0, 0.0]], [[3.0, 0.0]]])            # C=2, H=1, W=2
    delta = np.array([[[0.5, 0.1]], [[1.5, 0.1]]])
    np.testing.assert_allclose(token_tolerance(f, delta, 1.0), [[(0.25 + 0.375) / 2, 0.1]])


def test_random_is_a_fixed_permutation_and_uniform_is_flat():
    s = np.arange(12.0).reshape(3, 4)
    permuted = shaped_tolerance(s, "random", 7)
    assert sorted(permuted.ravel()) == sorted(s.ravel()) and not np.array_equal(permuted, s)
    np.testing.assert_array_equal(permuted, shaped_tolerance(s, "random", 7))
    assert not np.array_equal(permuted, shaped_tolerance(s, "random", 8))
    np.testing.assert_array_equal(shaped_tolerance(s, "uniform", 0), np.ones((3, 4)))
    np.testing.assert_array_equal(shaped_tolerance(s, "jnd", 0), s)


@pytest.mark.parametrize("sigma", [0.05, 0.5, 3.0])
def test_noise_budget_is_met_within_the_snapping_grid(sigma):
    weights = np.random.default_rng(1).uniform(0.2, 5.0, size=(7, 7))
    steps = step_sizes(step_exponents(weights, 48, sigma))
    ratio = np.sqrt(np.mean(steps ** 2 / 12)) / sigma
    assert 2 ** (-1 / 16) <= ratio <= 2 ** (1 / 16)        # each step snapped to ±1/16 octave
    order = np.argsort(weights.ravel())
    assert np.all(np.diff(steps.ravel()[order]) >= 0)      # steps follow the weights


def test_qp_mode_keeps_the_uniform_noise_power():
    weights = np.random.default_rng(2).uniform(0.5, 2.0, size=(5, 6))
    steps = step_sizes(step_exponents(weights, 40, 0.0))
    assert abs(np.sqrt(np.mean(steps ** 2)) / step_sizes(np.array([40]))[0] - 1) < 0.05
    np.testing.assert_array_equal(step_exponents(np.ones((2, 3)), 40, 0.0), np.full((2, 3), 40))


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    torch.manual_seed(0)
    model = FeatJNDEstimator(8, width=4, num_blocks=1).eval()
    return save_estimator(model, str(tmp_path_factory.mktemp("w")), "featjnd_test")


@pytest.mark.parametrize("allocation", ["jnd", "random", "uniform"])
def test_allocated_streams_decode_with_the_plain_decoder(tiny_weights, allocation):
    rng = np.random.default_rng(3)
    feature = np.maximum(rng.normal(size=(8, 5, 6)), 0).astype(np.float32)
    options = default_options()
    options.update(StepAllocation=allocation, JndWeights=tiny_weights, NoiseBudget=0.1)
    result = encode_features({"": feature}, options, step_allocator=StepAllocator(options))
    decoded = decode_stream(result.stream)
    assert all(check.ok for check in decoded.hash_checks)
    assert decoded.tensors[""].tobytes() == result.reconstruction[""].tobytes()


def test_estimator_channel_mismatch_is_one_clear_error(tiny_weights, tmp_path):
    np.save(tmp_path / "f.npy", np.ones((3, 4, 4), dtype=np.float32))
    run = subprocess.run([sys.executable, "-m", "encoder.app", "-c", "cfg/featjnd.cfg", "-i", str(tmp_path / "f.npy"),
                          "-o", str(tmp_path / "o.bin"), f"--JndWeights={tiny_weights}"],
                         cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 1 and not (tmp_path / "o.bin").exists()
    assert run.stderr.strip().splitlines() == ["encode: error: the FeatJND estimator takes 8 channels, "
                                               "the tensor has 3"]


def test_missing_weight_file_is_one_clear_error(tmp_path):
    np.save(tmp_path / "f.npy", np.ones((3, 4, 4), dtype=np.float32))
    run = subprocess.run([sys.executable, "-m", "encoder.app", "-c", "cfg/featjnd.cfg", "-i", str(tmp_path / "f.npy"),
                          "-o", str(tmp_path / "o.bin"), "--JndWeights=/nonexistent/w_0123456789ab.safetensors"],
                         cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 1 and run.stderr.startswith("encode: error: FeatJND weight file not found")
    assert len(run.stderr.strip().splitlines()) == 1


def test_uniform_does_not_import_torch(tmp_path):
    np.save(tmp_path / "f.npy", np.ones((3, 4, 4), dtype=np.float32))
    code = ("import sys, encoder.app as a; rc = a.main(['-c', 'cfg/uniform.cfg', '-i', sys.argv[1], '-o', sys.argv[2]]);"
            "assert rc == 0; assert 'torch' not in sys.modules, 'torch imported'")
    run = subprocess.run([sys.executable, "-c", code, str(tmp_path / "f.npy"), str(tmp_path / "o.bin")],
                         cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
