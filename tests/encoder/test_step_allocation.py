"""FeatJND step allocation: tolerance, the per-token and separable allocation modes, noise budgets,
and JND-allocated streams decoding bit-exactly."""

import os
import subprocess
import sys

import numpy as np
import pytest

from common.tools.tokenwise.sq import step_sizes
from decoder.decoder import decode_stream
from encoder.encoder import encode_features
from common.errors import InputError
from encoder.featjnd.allocation import (RD_OFFSETS, WEIGHT_RANGE, StepAllocator, absolute_tolerance, log_steps,
                                        high_rate_gain, rd_offsets, rd_weights, separable_fit, separable_offsets,
                                        shaped_tolerance,
                                        step_exponents, token_tolerance, weights_path)
from encoder.options import default_options

torch = pytest.importorskip("torch")
from encoder.featjnd.estimator import (FeatJNDEstimator, PyramidJNDEstimator, load_estimator,  # noqa: E402
                                       save_estimator)

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


def test_absolute_tolerance_is_the_harmonic_rms_of_delta():
    delta = np.array([[[1.0, 2.0]], [[1.0, -2.0]], [[0.5, 2.0]]])      # C=3, H=1, W=2
    np.testing.assert_allclose(absolute_tolerance(delta), [[(6.0 / 3) ** -0.5, 2.0]])


def test_rd_offsets_give_tolerant_tokens_larger_steps():
    rng = np.random.default_rng(5)
    grid = rng.normal(scale=2.0, size=(16, 4, 4))
    delta = np.full_like(grid, 0.2)
    delta[:, :2] = 5.0                                   # the top half tolerates 25× more
    offsets = rd_offsets(grid, delta, 48, 0.5)
    assert set(np.unique(offsets)) <= set(RD_OFFSETS)
    assert offsets[:2].min() > offsets[2:].max()
    # a flat tolerance keeps the steps near QP's (μ is the high-rate slope at QP's step)
    flat = rd_offsets(grid, np.ones_like(grid), 48, 0.5)
    assert abs(float(np.mean(flat))) <= 4
    # a token of zeros costs the same at every step: it keeps QP's step
    grid[:, 3, 3] = 0.0
    assert rd_offsets(grid, delta, 48, 0.5)[3, 3] == 0


def test_rd_weights_are_not_set_by_deltas_near_zero():
    # δ is signed: some values pass close to 0. Scaled by their plain mean, 1/δ² would put
    # almost every weight at the floor; scaled by the geometric mean, the typical weight is ~1.
    delta = np.random.default_rng(2).normal(size=(64, 20, 20))
    delta[0, 0, 0] = 1e-9
    weights = rd_weights(delta)
    assert np.exp(np.mean(np.log(weights))) == pytest.approx(1.0, rel=0.05)
    assert 0.3 < np.median(weights) < 3 and np.mean(weights <= 1.001 / WEIGHT_RANGE) < 0.01
    assert weights.max() <= WEIGHT_RANGE * (1 + 1e-12)


def test_rd_offsets_centre_on_the_noise_budget_step():
    grid = np.random.default_rng(3).normal(scale=2.0, size=(16, 4, 4))
    flat = np.ones_like(grid)
    budget = 2.0 ** 5 / np.sqrt(12.0)                       # step 2^5: exponent 48 + 40
    offsets = rd_offsets(grid, flat, 48, 0.5, noise_budget=budget)
    assert abs(float(np.mean(offsets)) - 40) <= 4


def test_jnd_weights_name_a_shipped_estimator_or_a_path(tmp_path):
    assert weights_path("").endswith(".safetensors") and "efficientnet-lite0_" in os.path.basename(weights_path(""))
    assert weights_path(str(tmp_path / "x.safetensors")) == str(tmp_path / "x.safetensors")
    with pytest.raises(InputError, match="featjnd_no-such-network_<hash>.safetensors"):
        weights_path("no-such-network")


def test_pyramid_estimator_picks_the_network_by_channels(tmp_path):
    torch.manual_seed(0)
    model = PyramidJNDEstimator([4, 8], width=4, num_blocks=1).eval()
    path = save_estimator(model, str(tmp_path), "featjnd_pyramid")
    loaded = load_estimator(path)
    assert loaded.config == {"levels": [4, 8], "width": 4, "num_blocks": 1} and loaded.for_channels(5) is None
    rng = np.random.default_rng(4)
    levels = {"p3": rng.normal(size=(1, 4, 6, 6)).astype(np.float32),
              "p4": rng.normal(size=(1, 8, 3, 3)).astype(np.float32)}
    options = default_options()
    options.update(StepAllocation="jnd", JndWeights=path, QP=40)
    allocator = StepAllocator(options)
    with torch.no_grad():
        expected = loaded.for_channels(8)(torch.from_numpy(levels["p4"]))[0].double().numpy()
    np.testing.assert_allclose(allocator.delta(levels["p4"][0].astype(np.float64)), expected, rtol=1e-6)
    result = encode_features(levels, options, step_allocator=allocator)
    decoded = decode_stream(result.stream)
    for name in levels:
        assert decoded.tensors[name].tobytes() == result.reconstruction[name].tobytes()
    with pytest.raises(InputError, match=r"takes \[4, 8\] channels, the tensor has 3"):
        allocator.delta(np.zeros((3, 2, 2)))


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    torch.manual_seed(0)
    model = FeatJNDEstimator(8, width=4, num_blocks=1).eval()
    return save_estimator(model, str(tmp_path_factory.mktemp("w")), "featjnd_test")


@pytest.mark.parametrize("allocation", ["jnd", "jnd_abs", "jnd_rd", "random", "uniform"])
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


def test_the_calibration_scale_is_stored_and_applied(tmp_path):
    torch.manual_seed(1)
    model = PyramidJNDEstimator([4, 8], width=4, num_blocks=1).eval()
    x = torch.randn(1, 8, 3, 3)
    with torch.no_grad():
        unscaled = model.for_channels(8)(x)
    model.set_scale(0.25)
    loaded = load_estimator(save_estimator(model, str(tmp_path), "featjnd_scaled"))
    assert loaded.config["scale"] == 0.25
    with torch.no_grad():
        torch.testing.assert_close(loaded.for_channels(8)(x), 0.25 * unscaled)


def test_without_jnd_weights_each_tensor_gets_the_shipped_estimator_for_its_channels(tmp_path):
    """A YOLOv5n P3–P5 pyramid through cfg/featjnd.cfg needs no option; 3 channels ask for one."""
    rng = np.random.default_rng(5)
    pyramid = {f"p{3 + i}": rng.normal(size=(c, 8 >> i, 8 >> i)).astype(np.float32)
               for i, c in enumerate((64, 128, 256))}
    np.savez(tmp_path / "pyramid.npz", **pyramid)
    run = subprocess.run([sys.executable, "-m", "encoder.app", "-c", "cfg/featjnd.cfg", "-i",
                          str(tmp_path / "pyramid.npz"), "-o", str(tmp_path / "o.bin")],
                         cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "estimator featjnd_yolov5n-neck_" in run.stdout.splitlines()[-1]
    np.save(tmp_path / "f.npy", np.ones((3, 4, 4), dtype=np.float32))
    run = subprocess.run([sys.executable, "-m", "encoder.app", "-c", "cfg/featjnd.cfg", "-i", str(tmp_path / "f.npy"),
                          "-o", str(tmp_path / "f.bin")], cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 1 and not (tmp_path / "f.bin").exists()
    (line,) = run.stderr.strip().splitlines()
    assert line.startswith("encode: error: no shipped FeatJND estimator takes 3-channel tensors")
    assert "JndWeights" in line


# -- separable allocations (a noise-tolerance estimator's δ) ---------------------------------------

def test_separable_fit_recovers_an_exactly_separable_log_step():
    rng = np.random.default_rng(6)
    tokens, channels = rng.normal(size=(4, 5)), rng.normal(size=7)
    tokens -= tokens.mean()
    channels -= channels.mean()
    fitted_tokens, fitted_channels = separable_fit(3.0 + tokens[None] + channels[:, None, None])
    np.testing.assert_allclose(fitted_tokens, tokens, atol=1e-12)
    np.testing.assert_allclose(fitted_channels, channels, atol=1e-12)


def test_log_steps_are_capped_where_a_step_zeroes_the_channel():
    grid = np.ones((2, 2, 2))
    grid[1] *= 4.0
    delta = np.full((2, 2, 2), 1e6)
    delta[0, 0, 0] = 0.1
    capped = log_steps(grid, delta)
    np.testing.assert_allclose(capped[0, 0, 0], np.log2(np.sqrt(12.0) * 0.1))
    assert capped[0].max() == 1.0 and capped[1].max() == 3.0          # log2(2 · max |f| of the channel)


@pytest.mark.parametrize("allocation", ["jnd_separable", "jnd_channel", "random_separable"])
def test_separable_offsets_follow_delta_at_the_uniform_noise_power(allocation):
    rng = np.random.default_rng(7)
    grid = rng.normal(size=(16, 24, 24)) * 100.0                       # far from the cap, every element coded
    channel_scale = 2.0 ** rng.integers(-2, 3, size=16)
    token_scale = 2.0 ** rng.integers(-1, 2, size=(24, 24))
    delta = channel_scale[:, None, None] * token_scale[None]
    tokens, channels, choice = separable_offsets(grid, delta, allocation, 40, 0.0, seed=3)
    steps = step_sizes(40 + tokens[None] + channels[:, None, None])
    assert abs(np.sqrt(np.mean(steps ** 2)) / step_sizes(np.array([40]))[0] - 1) < 0.1
    expected_channels = 8 * np.log2(channel_scale / channel_scale.min())
    if allocation == "random_separable":
        assert choice[0] == "separable" and sorted(channels - channels.min()) == sorted(expected_channels)
        return
    np.testing.assert_array_equal(channels - channels.min(), expected_channels)
    if allocation == "jnd_channel":
        assert choice[0] == "channels" and len(np.unique(tokens)) == 1
    else:
        assert choice[0] == "separable"
        np.testing.assert_array_equal(tokens - tokens.min(), 8 * np.log2(token_scale / token_scale.min()))


def test_a_map_that_costs_more_than_it_saves_is_not_sent():
    rng = np.random.default_rng(9)
    grid = rng.normal(size=(8, 4, 4)) * 100.0
    flat = np.ones_like(grid)
    assert separable_offsets(grid, flat, "jnd_separable", 40, 0.0, seed=0)[2] == ("uniform", 0)
    slight = np.exp(0.05 * rng.normal(size=grid.shape))           # a 5 % ripple saves less than its map costs
    tokens, channels, choice = separable_offsets(grid, slight, "jnd_separable", 40, 0.0, seed=0)
    assert choice == ("uniform", 0) and not tokens.any() and not channels.any()


def test_the_high_rate_gain_is_zero_for_uniform_steps_and_positive_for_steps_that_follow_delta():
    target = np.log2(np.array([[[1.0, 2.0]], [[4.0, 8.0]]]))
    coded = np.ones(target.shape, bool)
    assert high_rate_gain(target, np.zeros_like(target), coded) == pytest.approx(0.0)
    assert high_rate_gain(target, target, coded) > 0
    # four elements, w = 4^-L: the gain is (n/2)·log2(A(w)/G(w))
    w = 4.0 ** -target
    assert high_rate_gain(target, target, coded) == pytest.approx(2 * np.log2(w.mean() / np.exp(np.log(w).mean())))
    assert high_rate_gain(target, target, np.zeros(target.shape, bool)) == 0.0


@pytest.fixture(scope="module")
def tiny_noise_weights(tmp_path_factory):
    torch.manual_seed(0)
    model = FeatJNDEstimator(8, width=4, num_blocks=1, output="noise").eval()
    with torch.no_grad():                                            # δ from e^-2 to e^2 over the channels
        model.exit.bias.copy_(torch.linspace(-2.0, 2.0, 8))
    return save_estimator(model, str(tmp_path_factory.mktemp("w")), "featjnd_test-noise")


@pytest.mark.parametrize("allocation", ["jnd_separable", "jnd_channel", "random_separable"])
def test_separable_streams_carry_a_channel_vector_and_decode_bit_exactly(tiny_noise_weights, allocation):
    rng = np.random.default_rng(8)
    tensors = {"map": (rng.normal(size=(8, 40, 40)) * 8).astype(np.float32),
               "tokens": rng.normal(size=(30, 8)).astype(np.float32)}
    options = default_options()
    options.update(StepAllocation=allocation, JndWeights=tiny_noise_weights, QP=40)
    allocator = StepAllocator(options)
    result = encode_features(tensors, options, step_allocator=allocator)
    decoded = decode_stream(result.stream)
    assert all(check.ok for check in decoded.hash_checks)
    for spec, report, (kind, _) in zip(decoded.specs, result.reports, allocator.choices):
        assert spec.channel_offsets == (kind in ("channels", "separable"))
        assert spec.step_map == (kind in ("tokens", "separable"))
        assert (report.step_map_bits > 0) == (kind != "uniform")
        assert decoded.tensors[spec.name].tobytes() == result.reconstruction[spec.name].tobytes()
    assert allocator.choices[0][0] == "channels"          # δ varies over channels only: no token map


def test_a_noise_estimator_gives_positive_amplitudes_and_round_trips(tmp_path):
    torch.manual_seed(2)
    model = PyramidJNDEstimator([4, 8], width=4, num_blocks=1, output="noise").eval()
    x = [torch.randn(1, 4, 3, 3), torch.randn(1, 8, 2, 2)]
    with torch.no_grad():
        first = model(x)
    torch.testing.assert_close(first[0], torch.full_like(first[0], np.exp(-2.0)))   # the constant start
    loaded = load_estimator(save_estimator(model, str(tmp_path), "featjnd_noise"))
    assert loaded.config["output"] == "noise"
    with torch.no_grad():
        torch.testing.assert_close(loaded(x)[1], first[1])


def test_the_allocation_picks_the_shipped_estimator_of_its_kind():
    from encoder.featjnd.allocation import shipped_estimators

    shipped = shipped_estimators()
    kinds = {name: entry[2] for name, entry in shipped.items()}
    assert all(kind == ("noise" if name.endswith("-noise") else "direction") for name, kind in kinds.items())
    for allocation, kind in (("jnd", "direction"), ("jnd_separable", "noise")):
        options = default_options()
        options.update(StepAllocation=allocation)
        allocator = StepAllocator(options)
        assert allocator.estimator_output == kind
        names = {name for name, entry in shipped.items() if entry[2] == kind and 256 in entry[1]}
        if len(names) == 1:
            assert allocator.estimator(256) is not None
            assert os.path.basename(allocator.estimators_used[0]).startswith(f"featjnd_{names.pop()}_")


def test_channels_of_zeros_stay_out_of_the_separable_fit():
    grid = np.full((3, 2, 2), 100.0)                         # far above the cap
    grid[1] = 0.0                                           # a ReLU channel that is all zeros here
    delta = np.ones((3, 2, 2))
    delta[2] *= 4.0
    target = log_steps(grid, delta)
    assert np.isnan(target[1]).all()
    tokens, channels = separable_fit(target)
    np.testing.assert_allclose(tokens, 0.0, atol=1e-12)
    np.testing.assert_allclose(channels, [-1.0, 0.0, 1.0])  # ±1 octave around the live channels' mean
