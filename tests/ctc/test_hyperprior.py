"""FCM-LM's hyperprior baseline as a CTC tool (ctc/baselines/hyperprior.py): the token layout,
model files, the stream, the configuration's tool kind and a run of the smoke condition with an
untrained model (the shipped models are checked where they are used: docs/results)."""

import numpy as np
import pytest
import yaml

pytest.importorskip("compressai")

from common.errors import ConfigError, InputError  # noqa: E402
from ctc.baselines.hyperprior import HyperpriorModel, Layout, build_network, save_model  # noqa: E402
from ctc.config import parse_config  # noqa: E402
from tests.helpers import REPO  # noqa: E402


def test_layout_puts_tokens_on_a_grid_and_back():
    rng = np.random.default_rng(0)
    tokens = rng.normal(size=(1 + 4 * 3, 5)).astype(np.float32)
    layout = Layout(5, (4, 3))
    fmap = layout.to_map(tokens)
    assert fmap.shape == (5, 5, 3)
    assert np.array_equal(fmap[:, 0, 1], tokens[2]) and np.array_equal(fmap[:, 4, 0], tokens[0])
    assert not fmap[:, 4, 1:].any()                   # the [CLS] row's other places are zero
    assert np.array_equal(layout.from_map(fmap, tokens.shape), tokens)
    latent = rng.normal(size=(2, 6, 7)).astype(np.float32)
    assert np.array_equal(Layout(2).from_map(Layout(2).to_map(latent), latent.shape), latent)


def small_model(tmp_path, channels=6, grid=None, rates=3):
    import torch

    torch.manual_seed(0)
    latent = max(8, channels)             # the shortcut needs a latent channel per feature channel
    network = build_network(channels, 8, latent, 8, rates)
    meta = {"feature": "test", "channels": channels, "grid": list(grid) if grid else None, "widths": [8, latent, 8],
            "lambdas": [1.0] * rates, "mean": [0.5] * channels, "std": [2.0] * channels, "command": "test"}
    return save_model(network, meta, tmp_path)


def test_model_file_codes_a_feature_and_the_decoder_matches_the_encoder(tmp_path):
    path = small_model(tmp_path, grid=(3, 4))
    assert path.name.startswith("hyperprior-test-") and len(path.stem.split("-")[-1]) == 16
    model = HyperpriorModel(path)
    feature = np.random.default_rng(1).normal(size=(1 + 12, 6)).astype(np.float32)
    streams = []
    for rate in range(model.rates):
        stream, reconstruction = model.encode(feature, rate)
        decoded = model.decode(stream, feature.shape)
        assert decoded.shape == feature.shape and np.array_equal(decoded, reconstruction)
        streams.append(stream)
    assert len(set(streams)) == model.rates            # the gains differ, so do the streams
    with pytest.raises(InputError, match="truncated header"):
        model.decode(streams[0][:3], feature.shape)
    with pytest.raises(InputError, match="malformed header"):
        model.decode(bytes([9]) + streams[0][1:], feature.shape)
    with pytest.raises(InputError, match="malformed header"):          # a map larger than the feature's
        model.decode(streams[0][:1] + bytes([255, 255]) + streams[0][3:], feature.shape)
    with pytest.raises(InputError, match="rate index 3 outside"):
        model.encode(feature, 3)


def test_model_file_errors_are_one_line(tmp_path):
    with pytest.raises(InputError, match="hyperprior model not found"):
        HyperpriorModel(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(InputError, match="not a hyperprior model file"):
        HyperpriorModel(tmp_path / "junk.safetensors")
    path = small_model(tmp_path)
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), "pt") as fh:
        meta, state = fh.metadata(), {key: fh.get_tensor(key) for key in fh.keys()}
    state.pop("g_a.0.weight")
    broken = tmp_path / "broken.safetensors"
    save_file(state, str(broken), metadata=meta)
    with pytest.raises(InputError, match="does not match the hyperprior network"):
        HyperpriorModel(broken)
    assert json.loads(meta["fcrs"])["feature"] == "test"


def smoke_with_hyperprior(model):
    raw = yaml.safe_load((REPO / "ctc" / "cfg" / "smoke.yaml").read_text())
    raw["tools"] = {"uniform": raw["tools"]["uniform"],
                    "hyperprior": {"kind": "hyperprior", "model": str(model), "rate_points": [0, 2]}}
    raw["anchor"], raw["report"]["bootstrap"] = "uniform", 20
    return raw


def test_config_checks_the_hyperprior_tool(tmp_path):
    raw = smoke_with_hyperprior(tmp_path / "m.safetensors")
    config = parse_config(raw)
    assert [p.options for p in config.tool("hyperprior").rate_points] == [{"rate": 0}, {"rate": 2}]
    raw["tools"]["hyperprior"]["rate_points"] = [-1]
    with pytest.raises(ConfigError, match="rate index"):
        parse_config(raw)
    del raw["tools"]["hyperprior"]["model"]
    with pytest.raises(ConfigError, match="'model' is the hyperprior tool's"):
        parse_config(raw)
    raw["tools"]["uniform"]["model"] = "x"
    with pytest.raises(ConfigError, match="'model' is the hyperprior tool's"):
        parse_config(raw)


def test_smoke_condition_runs_the_hyperprior_tool(tmp_path):
    from ctc.records import RecordStore
    from ctc.report import write_report
    from ctc.runner import run_generated

    model = small_model(tmp_path, channels=1280, rates=3)         # EfficientNet-Lite0's 1280×7×7
    out = tmp_path / "run"
    run_generated(smoke_with_hyperprior(model), out, workers=1, limit=2, cache_root=str(tmp_path / "cache"),
                  progress=False, command="test")
    records = RecordStore(out).read("hyperprior")
    assert len(records) == 4 and all(r["md5"] == "ok" and r["bits"] > 0 for r in records)
    text = write_report(out)[0]
    assert "FCM-LM's hyperprior baseline, model" in text
    from ctc import complexity

    if complexity.available():          # its learned parts count: g_a, h_a, h_s to code; h_s, g_s to decode
        (_, macs, _), = [row for row in complexity.read_csv(out / complexity.COMPLEXITY_FILE) if row[0] == "hyperprior"]
        assert macs["feature_reduction"] > macs["feature_restoration"] > 0
