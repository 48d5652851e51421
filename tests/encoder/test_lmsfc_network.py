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
    y_numpy = fenet(FloatOps(model.float_layers), FAMILY, levels)
    with torch.no_grad():
        # the file stores the analysis in float16: compare with the rounded weights
        params = {name: value.half().float() for name, value in trained.params().items()}
        y_torch = fenet(TorchOps(params), FAMILY, [torch.from_numpy(a)[None] for a in levels])[0].numpy()
    np.testing.assert_allclose(y_numpy, y_torch, rtol=1e-3, atol=1e-3)
