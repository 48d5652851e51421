"""The video anchor (ti_tool_idc = VIDEO_ANCHOR): packing, syntax, round trips through x265 /
libde265-dec265 over C×H×W, token and pyramid inputs, the apps, and the inner codecs' failure
modes. Tests that run x265 or libde265-dec265 skip when they are not on PATH; the VVC path runs
against VTM when EncoderAppStatic / DecoderAppStatic are on PATH and is otherwise exercised
with stand-in scripts (an identity "codec") that check the plumbing."""

import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.codepoints import InnerCodec, Layout, Tool
from common.errors import BitstreamError, ConfigError, ExternalToolError, InputError
from common.syntax import SyntaxReader, SyntaxStructure, SyntaxWriter
from common.syntax_structures import feature_parameter_set
from common.tools.video_anchor.format import (AnchorParams, F32_MAX, dequantise_levels, levels_to_picture,
                                              picture_to_levels, tile_grid)
from common.tools.video_anchor.syntax import video_anchor_params
from encoder.tools.video_anchor.coder import choose_tile_layout, float32_bounds, padded_size, quantise_levels
from tests.helpers import REPO, assert_clean_error, cli, options, relu_like, split_units

ANCHOR_CFG = REPO / "cfg" / "anchor_hevc.cfg"
HAVE_HEVC = shutil.which("x265") is not None and shutil.which("libde265-dec265") is not None
HAVE_VTM = shutil.which("EncoderAppStatic") is not None and shutil.which("DecoderAppStatic") is not None
needs_hevc = pytest.mark.skipif(not HAVE_HEVC, reason="needs x265 and libde265-dec265 on PATH")


def anchor_options(**overrides):
    return options(**{"Tool": "anchor", "InnerCodec": "hevc", **overrides})


def nrmse(decoded, original):
    original = original.astype(np.float64)
    return np.linalg.norm(decoded.astype(np.float64) - original) / np.linalg.norm(original)


def params_for(layout, shape, **changes):
    tile_channels, tile_columns = choose_tile_layout(layout, shape)
    grid = tile_grid(layout, shape, tile_channels, tile_columns)
    fields = dict(inner_codec=InnerCodec.HEVC, bit_depth=10, min_value=-1.0, max_value=1.0,
                  picture_width=padded_size(grid.width), picture_height=padded_size(grid.height),
                  tile_columns=tile_columns, tile_channels=tile_channels)
    fields.update(changes)
    return AnchorParams(**fields)


# -- packing, quantisation and layout choice (no external programs) ------------------------------

@given(layout=st.sampled_from([Layout.CHW, Layout.TOKENS]), a=st.integers(1, 40), b=st.integers(1, 12),
       c=st.integers(1, 12), seed=st.integers(0, 2**32 - 1))
def test_tiles_round_trip(layout, a, b, c, seed):
    shape = (a, b, c) if layout == Layout.CHW else (a, b * c)
    levels = np.random.default_rng(seed).integers(0, 1024, size=shape).astype(np.uint16)
    params = params_for(layout, shape)
    picture = levels_to_picture(layout, shape, levels, params, fill=1023)
    assert picture.shape == (params.picture_height, params.picture_width)
    assert picture.shape[0] % 8 == 0 and picture.shape[1] % 8 == 0 and min(picture.shape) >= 64
    assert np.array_equal(picture_to_levels(layout, shape, picture, params), levels)
    # every element appears once; all other samples are padding
    assert np.count_nonzero(picture != 1023) == np.count_nonzero(levels != 1023)


def test_tile_order_is_raster_over_channels():
    levels = np.arange(6, dtype=np.uint16)[:, None, None] * np.ones((6, 2, 3), dtype=np.uint16)
    params = params_for(Layout.CHW, (6, 2, 3), tile_columns=4)
    picture = levels_to_picture(Layout.CHW, (6, 2, 3), levels, params, fill=9)
    assert picture[0, 0] == 0 and picture[0, 3] == 1 and picture[0, 9] == 3 and picture[2, 0] == 4
    assert picture[2, 3] == 5 and picture[2, 6] == 9            # the two empty tiles are padding


def test_token_strips():
    tokens = np.arange(5 * 7, dtype=np.uint16).reshape(5, 7)   # token n, channel c -> 7n + c
    params = params_for(Layout.TOKENS, (5, 7), tile_channels=3, tile_columns=1)
    picture = levels_to_picture(Layout.TOKENS, (5, 7), tokens, params, fill=999)
    assert np.array_equal(picture[0:5, 0:3], tokens[:, 0:3])     # strip 0: channels 0..2
    assert np.array_equal(picture[5:10, 0:3], tokens[:, 3:6])    # strip 1 below it
    assert np.array_equal(picture[10:15, 0:1], tokens[:, 6:7]) and (picture[10:15, 1:3] == 999).all()


def test_layout_choice():
    assert choose_tile_layout(Layout.CHW, (1280, 7, 7)) == (1, 40)        # 280 × 224, 32 tile rows
    assert choose_tile_layout(Layout.CHW, (48, 7, 7)) == (1, 8)
    assert choose_tile_layout(Layout.TOKENS, (197, 768)) == (384, 1)      # two strips stacked
    assert choose_tile_layout(Layout.TOKENS, (50, 16)) == (16, 1)         # the matrix as it is
    assert choose_tile_layout(Layout.TOKENS, (20000, 4)) is None          # taller than any picture


def test_float32_bounds_round_outwards():
    low, high = float32_bounds(0.1, 0.3)                # neither is a float32
    assert low <= 0.1 and high >= 0.3
    assert float(np.float32(low)) == low and float(np.float32(high)) == high
    assert np.nextafter(np.float32(low), np.float32(1)) > 0.1
    assert float32_bounds(0.5, 6.0) == (0.5, 6.0)       # float32 values stay exact
    assert float32_bounds(-F32_MAX, F32_MAX) == (-F32_MAX, F32_MAX)
    with pytest.raises(InputError, match="float32"):
        float32_bounds(-1e39, 0.0)


def test_min_max_quantisation_error():
    values = np.random.default_rng(5).uniform(-3, 7, size=(4, 9, 9))
    low, high = float32_bounds(values.min(), values.max())
    levels, zero = quantise_levels(values, low, high, 10)
    params = params_for(Layout.CHW, (4, 9, 9), min_value=low, max_value=high)
    step = (high - low) / 1023
    assert np.abs(dequantise_levels(levels, params) - values).max() <= step / 2 * (1 + 1e-9)
    assert levels.min() == 0 and levels.max() == 1023 and abs(zero * step + low) <= step / 2
    constant, _ = quantise_levels(np.full((2, 2), 1.5), 1.5, 1.5, 10)
    assert (constant == 0).all()


# -- syntax --------------------------------------------------------------------------------------

def va_structure(**changes):
    s = SyntaxStructure(va_shared_picture_flag=0, va_inner_codec_idc=0, va_bit_depth_minus8=2, va_min_value=-0.5,
                        va_max_value=6.0, va_picture_width_minus1=279, va_picture_height_minus1=223,
                        va_tile_columns_minus1=39, va_tile_channels_minus1=0, va_tile_origin_x=0,
                        va_tile_origin_y=0, va_encoder_info_flag=1, va_encoder_info_length=4, va_encoder_info=b"x265")
    s.__dict__.update(changes)
    return s


def test_video_anchor_params_round_trip():
    for s in (va_structure(), va_structure(va_encoder_info_flag=0)):
        rw = SyntaxWriter()
        video_anchor_params(rw, s)
        rw.byte_alignment()
        back = SyntaxStructure()
        reader = SyntaxReader(rw.getvalue())
        video_anchor_params(reader, back)
        if not s.va_encoder_info_flag:
            del s.va_encoder_info_length, s.va_encoder_info
        assert back == s and reader.bits_left < 8


@pytest.mark.parametrize("changes,match", [
    (dict(va_bit_depth_minus8=1), "va_bit_depth_minus8"), (dict(va_inner_codec_idc=2), "va_inner_codec_idc"),
    (dict(va_min_value=7.0), "va_min_value"), (dict(va_max_value=float("nan")), "va_min_value"),
    (dict(va_max_value=float("inf")), "va_min_value"), (dict(va_picture_width_minus1=16888), "va_picture_width"),
    (dict(va_picture_width_minus1=16887, va_picture_height_minus1=16887), "MAX_PICTURE_SAMPLES")])
def test_video_anchor_params_ranges(changes, match):
    with pytest.raises(BitstreamError, match=match):
        video_anchor_params(SyntaxWriter(), va_structure(**changes))


def anchor_fps(layout, shape, **va_changes):
    info = SyntaxStructure(ti_name_length=0, ti_name=b"", ti_layout_idc=layout, ti_dtype_idc=1,
                           ti_batch_dim_flag=0, ti_tool_idc=Tool.VIDEO_ANCHOR,
                           ti_video_anchor_params=va_structure(**va_changes))
    if layout == Layout.CHW:
        info.ti_num_channels_minus1, info.ti_height_minus1, info.ti_width_minus1 = (n - 1 for n in shape)
    else:
        info.ti_num_tokens_minus1, info.ti_num_channels_minus1 = (n - 1 for n in shape)
    return SyntaxStructure(fps_num_tensors_minus1=0, fps_tensors=[info], fps_extension_flag=0)


TOKENS_300x16 = dict(va_tile_channels_minus1=15, va_tile_columns_minus1=0, va_picture_width_minus1=63,
                     va_picture_height_minus1=303)


@pytest.mark.parametrize("layout,shape,good,changes", [
    (Layout.CHW, (1280, 7, 7), {}, dict(va_tile_channels_minus1=1)),      # a map has one channel per tile
    (Layout.CHW, (1280, 7, 7), {}, dict(va_tile_columns_minus1=1280)),    # more columns than tiles
    (Layout.CHW, (1280, 7, 7), {}, dict(va_picture_width_minus1=278)),    # grid wider than the picture
    (Layout.CHW, (1280, 7, 7), {}, dict(va_tile_columns_minus1=29)),      # 43 tile rows: too high
    (Layout.TOKENS, (300, 16), TOKENS_300x16, dict(va_picture_height_minus1=298)),
    (Layout.TOKENS, (300, 16), TOKENS_300x16, dict(va_tile_columns_minus1=1)),
    (Layout.CHW, (1280, 7, 7), {}, dict(va_tile_origin_x=1)),             # the origin pushes it out
    (Layout.TOKENS, (300, 16), TOKENS_300x16, dict(va_tile_origin_y=5))])
def test_tile_grid_constraints(layout, shape, good, changes):
    rw = SyntaxWriter()
    feature_parameter_set(rw, anchor_fps(layout, shape, **good))
    feature_parameter_set(SyntaxReader(rw.getvalue()), SyntaxStructure())
    with pytest.raises(BitstreamError, match="tile grid"):
        feature_parameter_set(SyntaxWriter(), anchor_fps(layout, shape, **{**good, **changes}))


def pyramid_fps(*va_changes):
    """A feature_parameter_set of a 16×8×8 and an 8×4×4 map in one 32×48 picture (origins 0 and 32)."""
    tensors = []
    for (channels, side), origin_y, columns, changes in zip(((16, 8), (8, 4)), (0, 32), (4, 8), va_changes):
        placement = dict(va_picture_width_minus1=31, va_picture_height_minus1=47, va_tile_columns_minus1=columns - 1,
                         va_tile_origin_y=origin_y, va_shared_picture_flag=int(origin_y > 0))
        info = anchor_fps(Layout.CHW, (channels, side, side), **{**placement, **changes}).fps_tensors[0]
        tensors.append(info)
    return SyntaxStructure(fps_num_tensors_minus1=1, fps_tensors=tensors, fps_extension_flag=0)


@pytest.mark.parametrize("first,second", [
    (dict(va_shared_picture_flag=1), {}),                   # the first tensor cannot share a picture
    ({}, dict(va_picture_height_minus1=63)),                # a shared picture's size differs
    ({}, dict(va_inner_codec_idc=1)),                       # ... or its codec
    ({}, dict(va_tile_origin_y=24))])                       # the grids overlap
def test_shared_picture_constraints(first, second):
    rw = SyntaxWriter()
    feature_parameter_set(rw, pyramid_fps({}, {}))
    back = SyntaxStructure()
    feature_parameter_set(SyntaxReader(rw.getvalue()), back)
    assert back.fps_tensors[1].ti_video_anchor_params.va_shared_picture_flag == 1
    with pytest.raises(BitstreamError, match="va_shared_picture_flag"):
        feature_parameter_set(SyntaxWriter(), pyramid_fps(first, second))


def test_frame_packing_layout_of_yolov5n_p3_p5():
    """MPEG-VCM's packing: 64×80×80, 128×40×40, 256×20×20 as full-width bands of one 640×1120 picture."""
    from encoder.tools.video_anchor.coder import choose_picture_layout

    layout = choose_picture_layout([(Layout.CHW, (64, 80, 80)), (Layout.CHW, (128, 40, 40)),
                                    (Layout.CHW, (256, 20, 20))])
    assert (layout.width, layout.height) == (640, 1120)
    assert layout.tensors == ((1, 8, 0), (1, 16, 640), (1, 32, 960))
    alone = choose_picture_layout([(Layout.CHW, (1280, 7, 7))])              # one tensor: its own layout
    assert (alone.width, alone.height, alone.tensors) == (280, 224, ((1, 40, 0),))


# -- round trips through x265 / libde265-dec265 --------------------------------------------------

def result_has_hash(overrides):
    return overrides.get("DecodedFeatureHash", True)


def round_trip(tensors, **overrides):
    from decoder.decoder import decode_stream
    from encoder.encoder import encode_features
    result = encode_features(tensors, anchor_options(**overrides))
    decoded = decode_stream(result.stream)
    assert list(decoded.tensors) == list(tensors)
    assert len(decoded.hash_checks) == (len(tensors) if result_has_hash(overrides) else 0)
    assert all(check.ok for check in decoded.hash_checks)
    for name, array in tensors.items():
        assert decoded.tensors[name].shape == array.shape and decoded.tensors[name].dtype == array.dtype
        assert np.array_equal(decoded.tensors[name], result.reconstruction[name])
    assert all(spec.tool == Tool.VIDEO_ANCHOR for spec in decoded.specs)
    return result, decoded


@needs_hevc
@pytest.mark.parametrize("shape,dtype", [((64, 7, 7), np.float32), ((1, 20, 9, 11), np.float32),
                                         ((50, 96), np.float16), ((300, 16), np.float32), ((33, 5), np.float64)],
                         ids=["chw", "1chw", "tokens-f16", "tokens-tall", "tokens-f64"])
def test_round_trip(shape, dtype):
    rng = np.random.default_rng(len(shape) * 100 + shape[-1])
    array = relu_like(rng, shape, dtype=dtype, sparsity=0.5) if len(shape) > 2 else \
        (rng.standard_normal(shape) * 2).astype(dtype)
    result, decoded = round_trip({"x": array}, QP=12)       # i.i.d. values: the hardest case for HEVC
    assert nrmse(decoded.tensors["x"], array) < 0.05
    report = result.reports[0]
    assert report.inner_codec.startswith("x265 ") and 0 < report.inner_bits < report.bits
    assert report.ideal_bits is None
    anchor = decoded.specs[0].anchor
    assert anchor.min_value <= array.min() and anchor.max_value >= array.max()
    assert anchor.encoder_info == report.inner_codec


def fpn_pyramid(seed=7):
    rng = np.random.default_rng(seed)
    sizes = {"p2": (32, 48), "p3": (16, 24), "p4": (8, 12), "p5": (4, 6), "p6": (2, 3)}
    return {level: (rng.standard_normal((1, 16) + hw) * 1.5).astype(np.float32) for level, hw in sizes.items()}


@needs_hevc
def test_pyramid_is_one_picture_per_tensor():
    tensors = fpn_pyramid()
    result, decoded = round_trip(tensors, QP=12, AnchorPacking="tensor")
    tensor_units = [u for u in split_units(result.stream) if u.unit_type == 2]
    assert len(tensor_units) == 5 and len(result.reports) == 5
    for name, array in tensors.items():
        assert nrmse(decoded.tensors[name], array) < 0.05
    assert len({spec.anchor.picture_width for spec in decoded.specs}) > 1      # each level its own picture
    assert not any(spec.anchor.shared_picture for spec in decoded.specs)


@needs_hevc
def test_pyramid_in_one_frame():
    """AnchorPacking frame (the default): one inner picture, later tensors' data units empty."""
    tensors = fpn_pyramid()
    result, decoded = round_trip(tensors, QP=12)
    payloads = [u.payload for u in split_units(result.stream) if u.unit_type == 2]
    assert len(payloads) == 5 and len(payloads[0]) > 100 and all(len(p) == 1 for p in payloads[1:])  # tdu idx only
    anchors = [spec.anchor for spec in decoded.specs]
    assert [a.shared_picture for a in anchors] == [False, True, True, True, True]
    assert len({(a.picture_width, a.picture_height) for a in anchors}) == 1
    assert [a.origin_y for a in anchors] == sorted(a.origin_y for a in anchors) and anchors[0].origin_y == 0
    for name, array in tensors.items():
        assert nrmse(decoded.tensors[name], array) < 0.05


@needs_hevc
def test_shared_picture_tensor_with_a_payload_is_refused():
    from decoder.decoder import decode_stream
    from encoder.encoder import encode_features
    from tests.helpers import STREAM_HEADER_BYTES, join_units

    stream = encode_features(fpn_pyramid(), anchor_options(QP=30, DecodedFeatureHash=False)).stream
    units = [(u.unit_type, u.payload) for u in split_units(stream)]
    second = [k for k, (unit_type, _) in enumerate(units) if unit_type == 2][1]      # p3's empty data unit
    units[second] = (2, units[second][1] + b"\x00\x01")
    with pytest.raises(BitstreamError, match="carries a payload"):
        decode_stream(join_units(stream[:STREAM_HEADER_BYTES], units))


@needs_hevc
def test_rate_falls_with_qp_and_low_qp_is_near_lossless():
    array = relu_like(np.random.default_rng(8), (128, 7, 7), sparsity=0.7)
    bits, errors = [], []
    for qp in (0, 22, 32, 42, 51):
        result, decoded = round_trip({"": array}, QP=qp, DecodedFeatureHash=False)
        bits.append(len(result.stream))
        errors.append(nrmse(decoded.tensors[""], array))
    assert bits == sorted(bits, reverse=True) and errors == sorted(errors)
    assert errors[0] < 0.02


@needs_hevc
def test_truncation_and_constant_tensors():
    array = relu_like(np.random.default_rng(9), (16, 8, 8), scale=3.0)
    result, decoded = round_trip({"": array}, QP=12, TruncationMin=0.0, TruncationMax=1.0)
    assert decoded.specs[0].anchor.min_value == 0.0 and decoded.specs[0].anchor.max_value == 1.0
    assert decoded.tensors[""].min() >= 0.0 and decoded.tensors[""].max() <= 1.0
    assert nrmse(decoded.tensors[""], np.clip(array, 0, 1)) < 0.02
    constant = np.full((3, 4, 5), -2.25, dtype=np.float32)
    _, decoded = round_trip({"": constant}, QP=40)
    assert np.array_equal(decoded.tensors[""], constant)
    with pytest.raises(ConfigError, match="TruncationMin"):
        round_trip({"": array}, TruncationMin=2.0, TruncationMax=1.0)


@needs_hevc
def test_float64_beyond_float32_needs_truncation():
    array = np.array([[1e39, -5.0], [0.0, 1.0]])
    with pytest.raises(InputError, match="TruncationMin / TruncationMax"):
        round_trip({"": array})
    _, decoded = round_trip({"": array}, TruncationMax=2.0, QP=0)
    assert abs(decoded.tensors[""][0, 0] - 2.0) < 0.05


@needs_hevc
def test_inner_codec_info_is_optional():
    array = relu_like(np.random.default_rng(10), (8, 8, 8))
    with_info, decoded = round_trip({"": array}, QP=30)
    without, decoded_without = round_trip({"": array}, QP=30, InnerCodecInfo=False)
    assert decoded_without.specs[0].anchor.encoder_info == ""
    info_bytes = len(decoded.specs[0].anchor.encoder_info)
    assert info_bytes + 1 <= len(with_info.stream) - len(without.stream) <= info_bytes + 2
    assert np.array_equal(decoded.tensors[""], decoded_without.tensors[""])


def test_anchor_refuses_tokenwise_only_settings_and_bad_qp():
    from encoder.encoder import encode_features
    array = relu_like(np.random.default_rng(11), (4, 8, 8))
    with pytest.raises(ConfigError, match="token-wise tool only"):
        encode_features({"": array}, anchor_options(), step_offsets={"": np.zeros((8, 8), dtype=int)})
    with pytest.raises(ConfigError, match=r"\[0, 51\]"):
        encode_features({"": array}, anchor_options(QP=60))


# -- the apps ------------------------------------------------------------------------------------

def run_app(app, *args, path=None, cwd=None):
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    if path is not None:
        env["PATH"] = path
    return subprocess.run(cli(app) + [str(a) for a in args], cwd=cwd or REPO, env=env, capture_output=True,
                          text=True, timeout=120)


@needs_hevc
def test_cli_round_trip_with_traces(tmp_path):
    array = relu_like(np.random.default_rng(12), (1, 32, 7, 7))
    np.save(tmp_path / "f.npy", array)
    enc = run_app("encode", "-c", ANCHOR_CFG, "-i", tmp_path / "f.npy", "-o", tmp_path / "out.bin",
                  "--QP=27", "--trace", tmp_path / "enc.trace")
    assert enc.returncode == 0, enc.stderr
    assert "x265 3." in enc.stdout and "video anchor, InnerCodec hevc, AnchorPacking frame, QP 27" in enc.stdout
    dec = run_app("decode", "-i", tmp_path / "out.bin", "-o", tmp_path / "rec.npy", "--trace", tmp_path / "dec.trace")
    assert dec.returncode == 0, dec.stderr
    assert "OK]" in dec.stdout
    assert (tmp_path / "enc.trace").read_text() == (tmp_path / "dec.trace").read_text()
    assert "va_encoder_info" in (tmp_path / "dec.trace").read_text()
    rec = np.load(tmp_path / "rec.npy")
    assert rec.shape == array.shape and nrmse(rec, array) < 0.25


def fake_program(folder, name, body):
    path = folder / name
    path.write_text(f"#!{sys.executable}\n" + textwrap.dedent(body))
    path.chmod(0o755)
    return path


@needs_hevc
def test_missing_programs_are_one_line_errors(tmp_path):
    array = relu_like(np.random.default_rng(13), (8, 7, 7))
    np.save(tmp_path / "f.npy", array)
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "out.bin"
    enc = run_app("encode", "-c", ANCHOR_CFG, "-i", tmp_path / "f.npy", "-o", out, path=str(empty))
    assert_clean_error(enc.returncode, enc.stdout, enc.stderr, "encode", output=out)
    assert "x265 not found on PATH" in enc.stderr and "apt-get install x265" in enc.stderr
    # x265 present, the in-loop decoder missing
    only_x265 = tmp_path / "only_x265"
    only_x265.mkdir()
    (only_x265 / "x265").symlink_to(shutil.which("x265"))
    enc = run_app("encode", "-c", ANCHOR_CFG, "-i", tmp_path / "f.npy", "-o", out, path=str(only_x265))
    assert_clean_error(enc.returncode, enc.stdout, enc.stderr, "encode", output=out)
    assert "libde265-dec265 not found" in enc.stderr
    assert run_app("encode", "-c", ANCHOR_CFG, "-i", tmp_path / "f.npy", "-o", out).returncode == 0
    rec = tmp_path / "rec.npy"
    dec = run_app("decode", "-i", out, "-o", rec, path=str(empty))
    assert_clean_error(dec.returncode, dec.stdout, dec.stderr, "decode", output=rec)
    assert "libde265-dec265 not found on PATH" in dec.stderr


def test_failing_encoder_is_quoted(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_program(bin_dir, "x265", """
        import sys
        print("x265 [info]: HEVC encoder version 0.0", file=sys.stderr)
        print("x265 [error]: the fake encoder refuses", file=sys.stderr)
        print("x265 [error]: Failure generating stream headers in x265", file=sys.stderr)
        sys.exit(3)
    """)
    np.save(tmp_path / "f.npy", relu_like(np.random.default_rng(14), (8, 7, 7)))
    out = tmp_path / "out.bin"
    enc = run_app("encode", "-c", ANCHOR_CFG, "-i", tmp_path / "f.npy", "-o", out,
                  path=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    assert_clean_error(enc.returncode, enc.stdout, enc.stderr, "encode", output=out)
    assert "x265 failed (exit code 3): x265 [error]: the fake encoder refuses" in enc.stderr


def test_crashing_decoder_is_reported(tmp_path, monkeypatch):
    from common.tools.video_anchor.inner_decoder import decode_picture
    fake_program(tmp_path, "libde265-dec265", "import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ExternalToolError, match="libde265-dec265 failed \\(killed by signal 11\\)"):
        decode_picture(InnerCodec.HEVC, b"\0\0\1", 64, 64, 10)


@needs_hevc
def test_temporary_files_are_removed(tmp_path, monkeypatch):
    from decoder.decoder import decode_stream
    from encoder.encoder import encode_features
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    array = relu_like(np.random.default_rng(15), (8, 7, 7))
    result = encode_features({"": array}, anchor_options())
    decode_stream(result.stream)
    assert list(scratch.iterdir()) == []
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    with pytest.raises(ExternalToolError):
        decode_stream(result.stream)
    assert list(scratch.iterdir()) == []


# -- damaged inner streams ------------------------------------------------------------------------

def replace_inner(stream, change):
    """The stream with its (single) tensor data unit's inner bitstream changed by change(bytes)."""
    from tests.helpers import join_units
    units = split_units(stream)
    pairs = []
    for unit in units[:-1]:
        payload = unit.payload
        if unit.unit_type == 2:
            payload = payload[:1] + change(payload[1:])       # tdu_tensor_idx 0 is one byte: ue(0), aligned
        pairs.append((unit.unit_type, payload))
    return join_units(stream[:6], pairs + [(4, b"")])


@needs_hevc
@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "bit-flips"])
def test_damaged_inner_stream_fails_cleanly(tmp_path, damage):
    from encoder.encoder import encode_features
    array = relu_like(np.random.default_rng(16), (16, 7, 7))
    stream = encode_features({"": array}, anchor_options(QP=22)).stream
    rng = np.random.default_rng(17)

    def change(inner):
        if damage == "truncated":
            return inner[:len(inner) // 2]
        if damage == "garbage":
            return rng.integers(0, 256, size=len(inner), dtype=np.uint8).tobytes()
        if damage == "empty":
            return b""
        flipped = bytearray(inner)
        for i in rng.integers(60, len(inner), size=8):
            flipped[i] ^= 0x5A
        return bytes(flipped)

    path = tmp_path / "bad.bin"
    path.write_bytes(replace_inner(stream, change))
    dec = run_app("decode", "-i", path, "-o", tmp_path / "rec.npy")
    assert dec.returncode != 0 and "Traceback" not in dec.stderr + dec.stdout
    assert len(dec.stderr.strip().splitlines()) == 1 and dec.stderr.startswith("decode: error: ")
    assert not (tmp_path / "rec.npy").exists()


@needs_hevc
def test_picture_size_must_match_the_parameter_set():
    from common.features import from_tensor_info, to_tensor_info
    from decoder.decoder import decode_stream
    from encoder.encoder import encode_features
    from tests.helpers import join_units
    array = relu_like(np.random.default_rng(18), (16, 7, 7))
    stream = encode_features({"": array}, anchor_options(DecodedFeatureHash=False)).stream
    units = split_units(stream)
    fps = SyntaxStructure()
    feature_parameter_set(SyntaxReader(units[0].payload), fps)
    spec = from_tensor_info(fps.fps_tensors[0])
    bigger = dataclasses.replace(spec, anchor=dataclasses.replace(spec.anchor, picture_width=72))
    fps.fps_tensors = [to_tensor_info(bigger)]
    rw = SyntaxWriter()
    feature_parameter_set(rw, fps)
    with pytest.raises(BitstreamError, match="inner HEVC stream decodes to 8192 bytes"):
        decode_stream(join_units(stream[:6], [(1, rw.getvalue())] + [(u.unit_type, u.payload) for u in units[1:]]))


# -- VVC through VTM ------------------------------------------------------------------------------

FAKE_VTM_ENCODER = """
    import sys
    args = sys.argv[1:]
    value = lambda flag: args[args.index(flag) + 1]
    width, height = int(value("-wdt")), int(value("-hgt"))
    assert "--InputChromaFormat=400" in args and "--InternalBitDepth=10" in args and value("-f") == "1"
    assert value("-c").endswith("encoder_intra_vtm.cfg")
    data = open(value("-i"), "rb").read()
    assert len(data) == 2 * width * height
    open(value("-b"), "wb").write(data)              # an identity "codec": the samples themselves
    open(value("-o"), "wb").write(data if "--FlipRecon" not in args else data[::-1])   # its reconstruction
    print("VVCSoftware: VTM Encoder Version 99.1 [Linux][GCC][64 bit] [SIMD=NONE]")
"""
FAKE_VTM_DECODER = """
    import sys
    args = sys.argv[1:]
    value = lambda flag: args[args.index(flag) + 1]
    assert value("-d") == "10"
    data = open(value("-b"), "rb").read()
    chroma = bytes(2 * ((len(data) // 2) // 2))      # VTM adds 4:2:0 chroma planes to a 4:0:0 picture
    open(value("-o"), "wb").write(data + chroma)
"""


def stand_in_vtm(folder, monkeypatch, with_cfg=True):
    """Stand-in VTM apps (an identity codec) first on PATH, with or without the cfg beside them."""
    fake_program(folder, "EncoderAppStatic", FAKE_VTM_ENCODER)
    fake_program(folder, "DecoderAppStatic", FAKE_VTM_DECODER)
    if with_cfg:
        (folder / "encoder_intra_vtm.cfg").write_text("IntraPeriod : 1\n")
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FCRS_VVC_DECODER", "vtm")


def test_vtm_plumbing_with_stand_in_programs(tmp_path, monkeypatch):
    from decoder.decoder import decode_stream
    from encoder.encoder import encode_features
    stand_in_vtm(tmp_path, monkeypatch)
    array = relu_like(np.random.default_rng(19), (12, 6, 10))
    result = encode_features({"": array}, anchor_options(InnerCodec="vtm"))
    decoded = decode_stream(result.stream)
    spec = decoded.specs[0]
    assert spec.anchor.inner_codec == InnerCodec.VVC and spec.anchor.encoder_info == "VTM 99.1"
    low, high = spec.anchor.min_value, spec.anchor.max_value
    assert np.abs(decoded.tensors[""] - array).max() <= (high - low) / 1023 / 2 * 1.0001   # lossless "codec"
    assert all(check.ok for check in decoded.hash_checks)


def test_vtm_needs_its_intra_cfg_and_a_matching_reconstruction(tmp_path, monkeypatch):
    from encoder.encoder import encode_features
    array = relu_like(np.random.default_rng(21), (12, 6, 10))
    stand_in_vtm(tmp_path, monkeypatch, with_cfg=False)
    with pytest.raises(ConfigError, match="set VtmEncoderCfg to VTM's cfg/encoder_intra_vtm.cfg"):
        encode_features({"": array}, anchor_options(InnerCodec="vtm"))
    with pytest.raises(ConfigError, match="VtmEncoderCfg: file not found"):
        encode_features({"": array}, anchor_options(InnerCodec="vtm", VtmEncoderCfg=str(tmp_path / "none.cfg")))
    cfg = tmp_path / "encoder_intra_vtm.cfg"
    cfg.write_text("FlipRecon : 1\n")
    flipping = tmp_path / "flip"
    flipping.mkdir()
    fake_program(flipping, "EncoderAppStatic", FAKE_VTM_ENCODER.replace('"--FlipRecon" not in args', "False"))
    monkeypatch.setenv("PATH", f"{flipping}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(ExternalToolError, match="reconstruction differs from the decoded picture"):
        encode_features({"": array}, anchor_options(InnerCodec="vtm", VtmEncoderCfg=str(cfg)))


def test_vvc_programs_named_by_path_instead_of_path_lookup(tmp_path, monkeypatch):
    from decoder.decoder import decode_stream
    from encoder.encoder import encode_features
    folder = tmp_path / "vtm-bin"                       # not on PATH
    folder.mkdir()
    encoder = fake_program(folder, "EncoderAppStatic", FAKE_VTM_ENCODER)
    decoder = fake_program(folder, "DecoderAppStatic", FAKE_VTM_DECODER)
    (folder / "encoder_intra_vtm.cfg").write_text("IntraPeriod : 1\n")
    monkeypatch.setenv("FCRS_VVC_DECODER", str(decoder))
    array = relu_like(np.random.default_rng(22), (12, 6, 10))
    result = encode_features({"": array}, anchor_options(InnerCodec="vtm", InnerEncoder=str(encoder)))
    assert all(check.ok for check in decode_stream(result.stream).hash_checks)
    with pytest.raises(ConfigError, match="InnerEncoder: .* is not an executable file"):
        encode_features({"": array}, anchor_options(InnerCodec="vtm", InnerEncoder=str(folder / "missing")))


def test_unknown_vvc_decoder_choice_is_one_line(monkeypatch):
    from common.tools.video_anchor.inner_decoder import decoder_program
    monkeypatch.setenv("FCRS_VVC_DECODER", "ffmpeg")
    with pytest.raises(ExternalToolError, match="FCRS_VVC_DECODER=ffmpeg: choose one of vtm, vvdec, or the path"):
        decoder_program(InnerCodec.VVC)


HAVE_VVENC = shutil.which("vvencFFapp") is not None and shutil.which("vvdecapp") is not None
needs_vtm = pytest.mark.skipif(not HAVE_VTM, reason="needs VTM's EncoderAppStatic and DecoderAppStatic on PATH "
                               "(make test puts ../shared/tools/vvc/bin there)")
needs_vvenc = pytest.mark.skipif(not HAVE_VVENC, reason="needs VVenC's vvencFFapp and VVdeC's vvdecapp on PATH "
                                 "(make test puts ../shared/tools/vvc/bin there)")


@needs_vtm
def test_vtm_round_trip(monkeypatch):
    """The real VTM under MPEG's all-intra cfg; the decoded picture is checked against VTM's own
    reconstruction inside the encoder, and the stream decodes the same with VVdeC."""
    from decoder.decoder import decode_stream
    from encoder.encoder import encode_features
    array = relu_like(np.random.default_rng(20), (16, 7, 7))
    result = encode_features({"": array}, anchor_options(InnerCodec="vtm", QP=17))
    decoded = decode_stream(result.stream)
    assert decoded.specs[0].anchor.encoder_info.startswith("VTM ")
    assert np.array_equal(decoded.tensors[""], result.reconstruction[""])
    assert nrmse(decoded.tensors[""], array) < 0.1
    if HAVE_VVENC:
        monkeypatch.setenv("FCRS_VVC_DECODER", "vvdec")
        assert np.array_equal(decode_stream(result.stream).tensors[""], result.reconstruction[""])


@needs_vvenc
@pytest.mark.parametrize("decoder", ["vvdec", "vtm"])
def test_vvenc_round_trip_with_either_decoder(decoder, monkeypatch):
    """VVenC streams are VVC: VVdeC and VTM's decoder both reproduce the encoder's reconstruction."""
    from decoder.decoder import decode_stream
    from encoder.encoder import encode_features
    if decoder == "vtm" and not HAVE_VTM:
        pytest.skip("needs VTM's DecoderAppStatic on PATH")
    tensors = fpn_pyramid(21)
    result = encode_features(tensors, anchor_options(InnerCodec="vvenc", VvencPreset="faster", QP=12))
    monkeypatch.setenv("FCRS_VVC_DECODER", decoder)
    decoded = decode_stream(result.stream)
    anchor = decoded.specs[0].anchor
    assert anchor.inner_codec == InnerCodec.VVC and anchor.encoder_info.startswith("VVenC 1.") \
        and anchor.encoder_info.endswith(" faster")
    for name, array in tensors.items():
        assert np.array_equal(decoded.tensors[name], result.reconstruction[name])
        assert nrmse(decoded.tensors[name], array) < 0.1
