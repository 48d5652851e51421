"""L-MSFC (ti_tool_idc = LMSFC) end to end: groups in the stream, bit-exact decoding with numpy
and torch and any thread count, the apps, and the ways a stream or an input can be wrong. Uses
the conformance model shipped in common/tools/lmsfc/models/ (no ../shared needed)."""

import copy
import os

import numpy as np
import pytest

from common.codepoints import Tool
from common.stream import STREAM_HEADER_BYTES
from common.errors import BitstreamError, ConfigError, InputError
from common.syntax import SyntaxReader, SyntaxStructure, SyntaxWriter
from common.syntax_structures import feature_parameter_set
from common.tools.lmsfc import models as model_registry
from decoder.decoder import decode_stream
from encoder.conformance import stream_inputs
from encoder.encoder import encode_features
from tests.helpers import REPO, assert_clean_error, options, run_cli, split_units, join_units

LMSFC_CFG = REPO / "cfg" / "lmsfc.cfg"


def lmsfc_options(**overrides):
    return options(**{"Tool": "lmsfc", "LmsfcModels": "conformance", "QP": 0, **overrides})


def pyramid():
    tensors, _ = stream_inputs("lmsfc_pyramid")
    return tensors


@pytest.fixture(scope="module")
def coded():
    return encode_features(pyramid(), lmsfc_options())


def test_group_is_one_payload_and_decodes_to_the_encoders_reconstruction(coded):
    decoded = decode_stream(coded.stream)
    assert [s.tool for s in decoded.specs] == [Tool.LMSFC] * 3
    assert [s.lmsfc.group_start for s in decoded.specs] == [True, False, False]
    assert [r.bits for r in coded.reports][1:] == [coded.reports[1].bits] * 2     # empty payloads: header only
    assert all(check.ok for check in decoded.hash_checks)
    for name, array in coded.reconstruction.items():
        np.testing.assert_array_equal(decoded.tensors[name], array)
        assert decoded.tensors[name].shape == pyramid()[name].shape


@pytest.mark.parametrize("backend, threads", [("numpy", 2), ("torch", 1), ("torch", 2)])
def test_every_backend_and_thread_count_decodes_the_same(coded, backend, threads):
    if backend == "torch":
        pytest.importorskip("torch")
    decoded = decode_stream(coded.stream, backend=backend, threads=threads)
    for name, array in coded.reconstruction.items():
        np.testing.assert_array_equal(decoded.tensors[name], array)


def test_apps_decode_the_same_md5_with_numpy_torch_one_and_two_threads(tmp_path):
    pytest.importorskip("torch")
    np.savez(tmp_path / "pyramid.npz", **pyramid())
    encoded = run_cli("encode", "-c", LMSFC_CFG, "--LmsfcModels=conformance", "--QP=-4", "-i",
                      tmp_path / "pyramid.npz", "-o", tmp_path / "out.bin")
    assert encoded.returncode == 0, encoded.stderr
    md5_lines = set()
    for backend, threads in (("numpy", "1"), ("numpy", "2"), ("torch", "1"), ("torch", "2")):
        env = {"OMP_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
        os.environ.update(env)
        try:
            decoded = run_cli("decode", "-i", tmp_path / "out.bin", "--backend", backend, "--threads", threads)
        finally:
            for key in env:
                os.environ.pop(key)
        assert decoded.returncode == 0, decoded.stderr
        md5_lines.add(tuple(line for line in decoded.stdout.splitlines() if "MD5" in line))
    assert len(md5_lines) == 1 and len(next(iter(md5_lines))) == 3


def test_two_groups_and_the_ablation_layout():
    tensors, _ = stream_inputs("lmsfc_two_groups")
    result = encode_features(tensors, lmsfc_options(LmsfcModels="conformance,conformance"))
    decoded = decode_stream(result.stream)
    assert [s.lmsfc.group_start for s in decoded.specs] == [True, False, False] * 2
    assert all(check.ok for check in decoded.hash_checks)
    assert decoded.tensors["b_p3"].dtype == np.float16


def test_rate_index_orders_rate_and_error():
    bits, errors = [], []
    for rate_index in (-16, 0, 16):
        result = encode_features(pyramid(), lmsfc_options(QP=rate_index))
        bits.append(sum(r.bits for r in result.reports))
        errors.append(sum(r.mse for r in result.reports))
    assert bits[0] > bits[1] > bits[2]
    assert errors[0] <= errors[2]


@pytest.mark.parametrize("change, error, match", [
    (lambda t: t.pop("p5"), InputError, "code 3 tensors"),
    (lambda t: t.update(p4=t["p4"][:, :64]), InputError, "does not fit"),
    (lambda t: t.update(p4=t["p4"][:, :, :9]), InputError, "not half"),
])
def test_inputs_the_model_cannot_code_are_refused(change, error, match):
    tensors = pyramid()
    change(tensors)
    with pytest.raises(error, match=match):
        encode_features(tensors, lmsfc_options())


def test_unknown_model_and_rate_index_out_of_range_are_config_errors():
    with pytest.raises(ConfigError, match="no L-MSFC model named"):
        encode_features(pyramid(), lmsfc_options(LmsfcModels="nonexistent"))
    with pytest.raises(ConfigError, match="rate index"):
        encode_features(pyramid(), lmsfc_options(QP=100))


def units_of(stream):
    """(header bytes, [(unit_type, payload)]) of a well-formed stream."""
    return stream[:STREAM_HEADER_BYTES], [(u.unit_type, u.payload) for u in split_units(stream)]


def rewrite_fps(stream, change, writer=SyntaxWriter):
    header, units = units_of(stream)
    fps = SyntaxStructure()
    feature_parameter_set(SyntaxReader(units[0][1]), fps)
    fps = copy.deepcopy(fps)
    change(fps)
    rw = writer()
    feature_parameter_set(rw, fps)
    units[0] = (units[0][0], rw.getvalue())
    return join_units(header, units)


def test_a_stream_naming_a_model_the_decoder_lacks_is_refused_naming_the_hash(coded, tmp_path):
    stream = rewrite_fps(coded.stream, lambda f: setattr(f.fps_tensors[0].ti_lmsfc_params, "lm_model_hash",
                                                          b"\x01\x23\x45\x67\x89\xab\xcd\xef"))
    model_registry._CACHE.clear()
    with pytest.raises(BitstreamError, match="0123456789abcdef, which is not installed"):
        decode_stream(stream)
    (tmp_path / "bad.bin").write_bytes(stream)
    result = run_cli("decode", "-i", tmp_path / "bad.bin", "-o", tmp_path / "rec.npz")
    assert_clean_error(result.returncode, result.stdout, result.stderr, "decode", tmp_path / "rec.npz")
    assert "0123456789abcdef" in result.stderr


def test_a_family_other_than_the_models_is_refused(coded):
    stream = rewrite_fps(coded.stream, lambda f: setattr(f.fps_tensors[0].ti_lmsfc_params,
                                                          "lm_trunk_channels_minus1", 15))
    with pytest.raises(BitstreamError, match="has family"):
        decode_stream(stream)


@pytest.mark.parametrize("change", [
    lambda f: setattr(f.fps_tensors[1], "ti_lmsfc_params", copy.deepcopy(f.fps_tensors[0].ti_lmsfc_params)),
    lambda f: setattr(f.fps_tensors[0].ti_lmsfc_params, "lm_latent_width_minus1", 9),
    lambda f: setattr(f.fps_tensors[2], "ti_width_minus1", 2),
    lambda f: setattr(f.fps_tensors[0].ti_lmsfc_params, "lm_num_levels_minus1", 3),
])
def test_broken_group_geometry_is_a_conformance_error(coded, change):
    """The writer refuses it (constraint), and a stream written without the check is refused."""
    from tests.decoder.test_malformed import CraftingWriter
    with pytest.raises(BitstreamError, match="L-MSFC"):
        rewrite_fps(coded.stream, change)
    with pytest.raises(BitstreamError, match="L-MSFC"):
        decode_stream(rewrite_fps(coded.stream, change, CraftingWriter))


def test_a_later_member_with_a_payload_is_refused(coded):
    from common.syntax_structures import tensor_data_unit
    header, units = units_of(coded.stream)
    rw = SyntaxWriter()
    tensor_data_unit(rw, SyntaxStructure(tdu_tensor_idx=1, tdu_entropy_payload=b"\x00\x00\x00\x01"))
    units[2] = (units[2][0], rw.getvalue())
    with pytest.raises(BitstreamError, match="later level of an L-MSFC group"):
        decode_stream(join_units(header, units))


def test_every_truncation_of_the_group_payload_is_a_clean_error(coded):
    from common.syntax_structures import tensor_data_unit
    header, units = units_of(coded.stream)
    tdu = SyntaxStructure()
    tensor_data_unit(SyntaxReader(units[1][1]), tdu)
    payload = tdu.tdu_entropy_payload
    for cut in range(0, len(payload), max(1, len(payload) // 12)):
        rw = SyntaxWriter()
        tensor_data_unit(rw, SyntaxStructure(tdu_tensor_idx=0, tdu_entropy_payload=payload[:cut]))
        broken = list(units)
        broken[1] = (units[1][0], rw.getvalue())
        with pytest.raises(BitstreamError):
            decode_stream(join_units(header, broken))


def test_a_damaged_model_file_is_one_error_line(coded, tmp_path, monkeypatch):
    good = next(model_registry.DEFAULT_MODEL_DIR.glob("conformance-" + "[0-9a-f]" * 16 + ".safetensors"))
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / good.name).write_bytes(good.read_bytes()[:1000])
    (tmp_path / "out.bin").write_bytes(coded.stream)
    monkeypatch.setenv(model_registry.MODEL_PATH_VARIABLE, str(tmp_path / "models"))
    result = run_cli("decode", "-i", tmp_path / "out.bin", "-o", tmp_path / "rec.npz")
    assert_clean_error(result.returncode, result.stdout, result.stderr, "decode", tmp_path / "rec.npz")
    assert "unreadable" in result.stderr


def test_every_shipped_model_file_is_named_by_its_hash():
    """<name>-<first 16 hex digits of the content hash>.safetensors: how the decoder finds a model."""
    files = sorted(model_registry.DEFAULT_MODEL_DIR.glob("*.safetensors"))
    assert files
    for path in files:
        model = model_registry.Model(path)
        assert path.name == f"{path.name.rsplit('-', 1)[0]}-{model.hash[:16]}.safetensors", path.name
