"""FeatJND distortions and loss: zero on identical inputs, hand-computed values, signs and scales."""

import math

import pytest

torch = pytest.importorskip("torch")

from ctc.training.losses import (  # noqa: E402
    classification_distortion,
    detection_distortion,
    featjnd_loss,
    instance_distortion,
    yolo_detection_distortion,
)


class TableSplit:
    """Stands in for RcnnFpnSplit: each head output is read straight from the 'features' dict."""

    def rpn_outputs(self, features):
        return [features["objectness"]], [features["deltas"]]

    def roi_outputs(self, features, proposals, image_sizes):
        return features["class_logits"], features["box_regression"]

    def mask_outputs(self, features, proposals, image_sizes):
        return features["mask_logits"]


def head_outputs(seed=0):
    generator = torch.Generator().manual_seed(seed)
    shapes = {"objectness": (2, 3, 4, 5), "deltas": (2, 12, 4, 5), "class_logits": (6, 91),
              "box_regression": (6, 364), "mask_logits": (6, 91, 28, 28)}
    return {name: torch.randn(shape, generator=generator) for name, shape in shapes.items()}


def test_classification_kl_matches_hand_computation():
    clean = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    perturbed = torch.tensor([[3.0, 2.0, 1.0], [0.0, 4.0, 0.0]])
    T = 4.0
    expected = 0.0
    for y, z in zip(clean.tolist(), perturbed.tolist()):
        p = [math.exp(v / T) / sum(math.exp(u / T) for u in y) for v in y]
        q = [math.exp(v / T) / sum(math.exp(u / T) for u in z) for v in z]
        expected += T * T * sum(pi * math.log(pi / qi) for pi, qi in zip(p, q)) / 2   # batch mean
    assert float(classification_distortion(clean, perturbed)) == pytest.approx(expected, rel=1e-6)
    # KL(p ‖ q) is not symmetric: the clean logits define p
    assert float(classification_distortion(perturbed, clean)) != pytest.approx(expected, rel=1e-3)


def test_classification_distortion_zero_iff_identical_and_clean_side_detached():
    clean = torch.randn(4, 10, requires_grad=True)
    assert float(classification_distortion(clean, clean.detach().clone())) == 0.0
    perturbed = (clean.detach() + 0.5 * torch.randn(4, 10)).requires_grad_()
    d = classification_distortion(clean, perturbed)
    assert float(d.detach()) > 0
    d.backward()
    assert clean.grad is None and perturbed.grad is not None


def test_detection_and_instance_distortions_are_zero_on_identical_features():
    outputs = head_outputs()
    copy = {name: value.clone() for name, value in outputs.items()}
    assert float(detection_distortion(TableSplit(), outputs, copy, None, None)) == 0.0
    assert float(instance_distortion(TableSplit(), outputs, copy, None, None)) == 0.0


@pytest.mark.parametrize("name", ["objectness", "deltas", "class_logits", "box_regression", "mask_logits"])
def test_each_head_output_contributes(name):
    clean = head_outputs()
    shift = torch.full_like(clean[name], 0.3)
    if name == "class_logits":
        shift[:, 0] = 0.0                        # a constant shift of all logits leaves the softmax as it is
    perturbed = dict(clean, **{name: clean[name] + shift})
    instance = float(instance_distortion(TableSplit(), clean, perturbed, None, None))
    detection = float(detection_distortion(TableSplit(), clean, perturbed, None, None))
    assert instance > 0
    assert (detection == 0.0) == (name == "mask_logits")
    if name == "mask_logits":
        assert instance == pytest.approx(0.09, rel=1e-5)           # MSE of a 0.3 shift
    if name == "box_regression":
        assert detection == pytest.approx(0.3 - 0.5 / 9, rel=1e-5)  # smooth-L1, β = 1/9, |d| ≥ β


def test_objectness_term_is_the_mean_bernoulli_kl():
    clean = head_outputs()
    a = torch.tensor([[[[0.0, 2.0]]]])
    b = torch.tensor([[[[1.0, -1.0]]]])
    clean.update(objectness=a, deltas=torch.zeros(1, 4, 1, 2))
    perturbed = dict(clean, objectness=b)

    def kl(p, q):
        return p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q))

    def sigmoid(x):
        return 1 / (1 + math.exp(-x))

    expected = (kl(sigmoid(0.0), sigmoid(1.0)) + kl(sigmoid(2.0), sigmoid(-1.0))) / 2
    got = float(detection_distortion(TableSplit(), clean, perturbed, None, None))
    assert got == pytest.approx(expected, rel=1e-6)


def test_featjnd_loss_sign_and_scale():
    distortion = torch.tensor(0.25, requires_grad=True)
    delta = torch.zeros(2, 2, 2, requires_grad=True)
    assert float(featjnd_loss(distortion, delta, 200.0).detach()) == pytest.approx(50.0)   # δ = 0: λ·D only
    loss = featjnd_loss(distortion, delta, 200.0)
    loss.backward()
    assert float(distortion.grad) == 200.0
    assert torch.all(torch.isfinite(delta.grad))                                     # no NaN at δ = 0

    delta = torch.zeros(2, 4)
    delta[0] = 3.0                                       # ‖δ₀‖₂ = 6, ‖δ₁‖₂ = 0 -> batch mean 3
    assert float(featjnd_loss(torch.tensor(0.1), delta, 50.0)) == pytest.approx(5.0 - 3.0)


def test_featjnd_loss_takes_one_norm_over_all_pyramid_levels():
    delta = {"p2": torch.full((1, 1, 1, 1), 3.0), "p3": torch.full((1, 1, 1, 1), 4.0)}
    assert float(featjnd_loss(torch.tensor(0.0), delta, 200.0)) == pytest.approx(-5.0)   # not −(3 + 4)
    assert float(featjnd_loss(torch.tensor(0.0), list(delta.values()), 200.0)) == pytest.approx(-5.0)


def yolo_outputs(seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn((1, 3, n, n, 85), generator=generator) for n in (8, 4, 2)]


def test_yolo_distortion_zero_on_identical_outputs_and_clean_side_detached():
    clean = [level.requires_grad_() for level in yolo_outputs()]
    assert float(yolo_detection_distortion(clean, [level.detach().clone() for level in clean])) == 0.0
    perturbed = [(level.detach() + 0.3 * torch.randn(level.shape)).requires_grad_() for level in clean]
    d = yolo_detection_distortion(clean, perturbed)
    assert float(d.detach()) > 0
    d.backward()
    assert all(level.grad is None for level in clean) and all(level.grad is not None for level in perturbed)


def test_yolo_distortion_terms():
    """Objectness KL on every anchor; class KL weighted by the clean objectness; boxes only where
    the clean detector is confident (objectness × best class ≥ 0.25)."""
    clean = [torch.full((1, 3, 2, 2, 85), -20.0)]          # nothing anywhere: objectness and classes ~0
    perturbed = [clean[0].clone()]
    perturbed[0][..., :4] += 5.0                            # boxes move, but no anchor is confident
    assert float(yolo_detection_distortion(clean, perturbed)) == pytest.approx(0.0, abs=1e-6)
    perturbed = [clean[0].clone()]
    perturbed[0][..., 5:] = 0.0                             # classes change where objectness is ~0
    assert float(yolo_detection_distortion(clean, perturbed)) < 1e-6
    confident = clean[0].clone()
    confident[0, 0, 0, 0, 4:] = 20.0                        # one anchor: sure object, every class sure
    moved = confident.clone()
    moved[0, 0, 0, 0, 0] = 0.0                              # its x output: σ 1 -> 0.5
    d = float(yolo_detection_distortion([confident], [moved]))
    # smooth-L1 (β = 1/9) of |Δσ| = 0.5 over the one confident anchor's 4 box outputs
    assert d == pytest.approx((0.5 - 1 / 18) / 4, rel=1e-4)


def test_relative_reward_divides_by_the_feature_norm():
    delta = [torch.full((2, 1, 2, 2), 3.0), torch.full((2, 4, 1, 1), 3.0)]    # ‖δ‖ = √(8·9) = 8.485
    features = [torch.full((2, 1, 2, 2), 2.0), torch.full((2, 4, 1, 1), 2.0)]  # ‖f‖ = √(8·4) = 5.657
    d = torch.tensor(0.5)
    assert float(featjnd_loss(d, delta, 10.0)) == pytest.approx(5.0 - math.sqrt(72), rel=1e-6)
    assert float(featjnd_loss(d, delta, 10.0, features)) == pytest.approx(5.0 - 1.5, rel=1e-6)


def test_noise_tolerance_loss_rewards_the_mean_log_amplitude():
    from ctc.training.losses import noise_tolerance_loss

    delta = [torch.full((2, 1, 2, 2), math.e), torch.full((2, 4, 1, 1), 1.0)]   # log δ: 1 on 4 of 8 values
    assert float(noise_tolerance_loss(torch.tensor(0.5), delta, 10.0)) == pytest.approx(5.0 - 0.5, rel=1e-6)


def test_unit_uniform_noise_has_unit_variance_and_the_quantiser_error_shape():
    from ctc.training.losses import unit_uniform_noise

    noise = unit_uniform_noise(torch.zeros(200_000), torch.Generator().manual_seed(0))
    assert float(noise.var()) == pytest.approx(1.0, abs=0.02)
    assert float(noise.abs().max()) <= math.sqrt(3.0)
