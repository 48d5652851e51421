"""L-MSFC's training network against the normative integer decoder it is exported to."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from common.tools.lmsfc.arithmetic import FRACTION_BITS, FloatOps, IntegerOps  # noqa: E402
from common.tools.lmsfc.entropy import tables  # noqa: E402
from common.tools.lmsfc.graph import Family, drnet, fenet, layer_shapes  # noqa: E402
from common.tools.lmsfc.models import Model  # noqa: E402
from encoder.tools.lmsfc.model_file import save_model  # noqa: E402
from encoder.tools.lmsfc.network import FusionModel, TorchOps  # noqa: E402

FAMILY = Family(channels=(6, 10, 12), trunk=8, latent=6, hyper=4, extra_stages=2)
SIZES = [(13, 18), (7, 9), (4, 5)]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    model = FusionModel(FAMILY)
    with torch.no_grad():
        for value in model.weights.values():
            value.add_(0.05 * torch.randn_like(value))
    path = save_model(model, tmp_path_factory.mktemp("models"), "test", {})
    return model, Model(path)


def test_model_parameters_are_the_layer_table():
    model = FusionModel(FAMILY)
    shapes = layer_shapes(FAMILY)
    assert {name: tuple(t.shape) for name, t in model.params().items() if name.endswith(".weight")} == {
        name + ".weight": shape for name, shape in shapes.items()}


def test_exported_file_is_named_by_its_hash(exported):
    _, model = exported
    assert model.path.name == f"test-{model.hash[:16]}.safetensors"
    assert set(model.integer_layers) == {n for n in layer_shapes(FAMILY) if n.startswith(("hs.", "dec."))}


def test_integer_drnet_tracks_the_simulated_network(exported):
    """The straight-through simulation the fine-tuning uses stays within a few units of the
    last place of the integer decoder (rounding ties and the weight rounding differ only)."""
    trained, model = exported
    rng = np.random.default_rng(0)
    y_fixed = rng.integers(-600, 600, size=(FAMILY.latent, 2, 2))
    integer = drnet(IntegerOps(model.integer_layers, tables()["sigmoid"]), FAMILY, y_fixed, SIZES)
    with torch.no_grad():
        y = torch.from_numpy(y_fixed / 2.0 ** FRACTION_BITS).float()[None]
        simulated = drnet(TorchOps(trained.params(), simulate_integer=True), FAMILY, y, SIZES)
    for level_int, level_sim in zip(integer, simulated):
        difference = np.abs(level_int / 2.0 ** FRACTION_BITS - level_sim[0].double().numpy())
        assert difference.max() < 0.05, difference.max()


def test_float_analysis_matches_torch(exported):
    trained, model = exported
    rng = np.random.default_rng(1)
    levels = [rng.normal(size=(c,) + size).astype(np.float32) for c, size in zip(FAMILY.channels, SIZES)]
    y_numpy = fenet(FloatOps(model.float_layers), FAMILY, levels, SIZES)
    with torch.no_grad():
        # the file stores the analysis in float16: compare with the rounded weights
        params = {name: value.half().float() for name, value in trained.params().items()}
        y_torch = fenet(TorchOps(params), FAMILY, [torch.from_numpy(a)[None] for a in levels],
                       SIZES)[0].numpy()
    np.testing.assert_allclose(y_numpy, y_torch, rtol=1e-3, atol=1e-3)


# -- gain units and the per-level normalisation -------------------------------------------------------

GAIN_FAMILY = Family(channels=(6, 10, 12), trunk=8, latent=6, hyper=4, extra_stages=1)
GAIN_SIZES = [(16, 20), (8, 10), (4, 5)]


@pytest.fixture(scope="module")
def gain_model(tmp_path_factory):
    """A model with a 3-row gain table and a non-trivial normalisation, exported."""
    torch.manual_seed(1)
    model = FusionModel(GAIN_FAMILY, gain_init=[-6.0, 2.0, 11.0])
    rng = np.random.default_rng(2)
    model.set_normalisation([rng.normal(size=c).astype(np.float32) for c in GAIN_FAMILY.channels],
                            [rng.uniform(0.5, 3, size=c).astype(np.float32) for c in GAIN_FAMILY.channels])
    with torch.no_grad():
        for value in model.weights.values():
            value.add_(0.05 * torch.randn_like(value))
        model.gain_exponents.add_(torch.linspace(-1.4, 1.4, GAIN_FAMILY.latent))
    folder = tmp_path_factory.mktemp("gain_models")
    return model, Model(save_model(model, folder, "gains", {}))


def test_the_gain_table_is_exported_rounded_and_selects_each_channels_step(gain_model):
    trained, model = gain_model
    expected = torch.round(trained.gain_exponents.detach()).numpy().astype(np.int64)
    np.testing.assert_array_equal(model.gain_exponents, expected)
    assert model.rate_indices == (0, 2)
    np.testing.assert_array_equal(model.latent_exponents(1), expected[1])
    with pytest.raises(Exception, match="codes rate indices 0 … 2"):
        model.latent_exponents(3)
    rates = torch.tensor([0.0, 2.0])
    np.testing.assert_array_equal(trained.latent_exponents(rates).detach().numpy(), expected[[0, 2]])


def test_the_normalisation_folds_into_the_output_convolutions(gain_model):
    """The integer DRNet of the file gives the levels themselves: what the float model gives after
    its denormalisation, to the integer arithmetic's precision."""
    trained, model = gain_model
    rng = np.random.default_rng(3)
    y_fixed = rng.integers(-500, 500, size=(GAIN_FAMILY.latent, 2, 2))
    sizes = [(12, 12), (6, 6), (3, 3)]
    integer = drnet(IntegerOps(model.integer_layers, tables()["sigmoid"]), GAIN_FAMILY, y_fixed, sizes)
    with torch.no_grad():
        y = torch.from_numpy(y_fixed / 2.0 ** FRACTION_BITS).float()[None]
        normalised = drnet(TorchOps(trained.params()), GAIN_FAMILY, y, sizes)
    for i, (level_int, level_float) in enumerate(zip(integer, normalised)):
        mean, std = (t.numpy()[:, None, None] for t in trained.normalisation(i))
        expected = level_float[0].double().numpy() * std + mean
        assert np.abs(level_int / 2.0 ** FRACTION_BITS - expected).max() < 0.05 * std.max()


def test_a_model_file_read_back_computes_what_it_computes(gain_model):
    """initialise_from: a fresh model with the file's normalisation reconstructs as the original
    does and carries its gain table; with another normalisation, the first convolution is
    re-expressed in it (equal away from the zero padding, which now pads another value)."""
    from encoder.tools.lmsfc.model_file import initialise_from

    trained, model = gain_model
    norms = [trained.normalisation(i) for i in range(GAIN_FAMILY.num_levels)]
    same = FusionModel(GAIN_FAMILY, gain_init=[0.0, 0.0, 0.0])
    same.set_normalisation([m for m, _ in norms], [s for _, s in norms])
    initialise_from(same, model.path)
    np.testing.assert_array_equal(same.gain_exponents.detach().numpy(), model.gain_exponents)
    rng = np.random.default_rng(4)
    levels = [torch.from_numpy(rng.normal(size=(1, c) + s).astype(np.float32))
              for c, s in zip(GAIN_FAMILY.channels, GAIN_SIZES)]
    with torch.no_grad():
        original, _, _ = trained(levels, torch.tensor([0.0]))
        again, _, _ = same(levels, torch.tensor([0.0]))
    for a, b in zip(original, again):
        assert float((a - b).abs().max()) < 0.05 * float(a.abs().max())

    other = FusionModel(GAIN_FAMILY)                     # identity normalisation
    initialise_from(other, model.path)
    mean, std = (t.view(1, -1, 1, 1) for t in norms[0])
    with torch.no_grad():
        expected = TorchOps(trained.params()).conv("enc.0.in", (levels[0] - mean) / std, GAIN_FAMILY.trunk, 3)
        got = TorchOps(other.params()).conv("enc.0.in", levels[0], GAIN_FAMILY.trunk, 3)
    interior = (slice(None), slice(None), slice(1, -1), slice(1, -1))
    assert float((expected - got)[interior].abs().max()) < 1e-2 * float(expected.abs().max())


def test_a_gain_model_codes_and_decodes_bit_exactly(gain_model, monkeypatch):
    """Through the encoder and decoder libraries: every rate index of the table decodes to the
    encoder's reconstruction with the MD5 OK; rate falls as the index rises; an index outside the
    table is a configuration error."""
    from common.errors import ConfigError
    from decoder.decoder import decode_stream
    from encoder.encoder import encode_features
    from tests.helpers import options

    _, model = gain_model
    monkeypatch.setenv("FCRS_LMSFC_MODELS", str(model.path.parent))
    rng = np.random.default_rng(6)
    tensors = {f"p{3 + i}": rng.normal(size=(c,) + s).astype(np.float32)
               for i, (c, s) in enumerate(zip(GAIN_FAMILY.channels, GAIN_SIZES))}
    sizes = []
    for rate in range(3):
        result = encode_features(tensors, options(Tool="lmsfc", LmsfcModels=str(model.path), QP=rate))
        decoded = decode_stream(result.stream)
        assert all(check.ok for check in decoded.hash_checks)
        for name in tensors:
            np.testing.assert_array_equal(decoded.tensors[name], result.reconstruction[name])
        sizes.append(len(result.stream))
    assert sizes[0] > sizes[2]
    with pytest.raises(ConfigError, match="codes the rate indices"):
        encode_features(tensors, options(Tool="lmsfc", LmsfcModels=str(model.path), QP=3))


def test_a_widened_model_reconstructs_as_the_narrow_one(gain_model):
    """widened_from: a wider trunk, latent and hyper-latent, the same reconstruction (the new
    channels are seen by nothing old); the new channels' weights are live."""
    from encoder.tools.lmsfc.network import widened_from

    narrow, _ = gain_model
    wide = widened_from(narrow, Family(channels=GAIN_FAMILY.channels, trunk=12, latent=9, hyper=6, extra_stages=1))
    rng = np.random.default_rng(7)
    levels = [torch.from_numpy(rng.normal(size=(2, c) + s).astype(np.float32))
              for c, s in zip(GAIN_FAMILY.channels, GAIN_SIZES)]
    rates = torch.tensor([0.0, 2.0])
    with torch.no_grad():
        before, _, _ = narrow(levels, rates)
        after, _, _ = wide(levels, rates)
    for a, b in zip(before, after):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert float(wide.params()["enc.0.in.weight"][GAIN_FAMILY.trunk:].detach().abs().sum()) > 0
    np.testing.assert_array_equal(wide.gain_exponents[:, :GAIN_FAMILY.latent].detach().numpy(),
                                  narrow.gain_exponents.detach().numpy())


def test_a_zero_initialised_checkerboard_context_changes_nothing_until_trained():
    """The checkerboard ablation starts as the model without context: same bits, same output."""
    torch.manual_seed(0)
    plain = FusionModel(GAIN_FAMILY, [0.0, 8.0])
    context = FusionModel(GAIN_FAMILY, [0.0, 8.0], checkerboard=True)
    context.load_state_dict(plain.state_dict(), strict=False)
    sizes = [(12, 12), (6, 6), (3, 3)]
    levels = [torch.randn(2, c, *size) for c, size in zip(GAIN_FAMILY.channels, sizes)]
    rates = torch.tensor([0, 1])
    outputs = []
    for model in (plain, context):
        torch.manual_seed(1)
        outputs.append(model(levels, rates))
    for a, b in zip(outputs[0][0], outputs[1][0]):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(outputs[0][1], outputs[1][1])
