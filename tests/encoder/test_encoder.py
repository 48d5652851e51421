"""encoder/encoder.py and encoder/tools/tokenwise/ (coder, quantiser): input validation, step-offset maps,
quantiser limits, reports, and a pinned golden stream."""

import hashlib

import numpy as np
import pytest

from common.codepoints import DType, Layout
from common.errors import InputError
from common.limits import MAX_DECODED_ELEMENTS, MAX_DIM, MAX_NAME_BYTES, MAX_TENSORS
from common.tools.tokenwise.sq import MAX_ABS_LEVEL, step_sizes
from common.tools.tokenwise.syntax import QP_MAX, QP_MIN
from decoder.decoder import decode_stream
from encoder.encoder import encode_features
from encoder.tools.interface import tensor_spec
from encoder.tools.tokenwise.quantiser import quantise
from tests.helpers import decode_levels, options, split_units


def encode(tensors, **opts):
    return encode_features(tensors, options(**opts))


# -- golden ----------------------------------------------------------------------------------------

def golden_input():
    rng = np.random.default_rng(7)
    tensors = {"p2": (rng.integers(-40, 200, size=(6, 7, 9)).clip(0) / 16).astype(np.float32),
               "tok": (rng.integers(-1000, 1000, size=(10, 12)) / 64.0).astype(np.float16)}
    return tensors, {"p2": rng.integers(-4, 5, size=(7, 9))}


def test_golden_stream():
    """Pinned once: the whole stream (syntax, quantiser, entropy payload) of a fixed input (re-pinned
    at stream version 2: the version byte and the hash unit that covers it changed; at version 3:
    those and the tsq_channel_offsets_flag bits)."""
    tensors, offsets = golden_input()
    stream = encode_features(tensors, options(QP=36), step_offsets=offsets).stream
    assert len(stream) == 570
    assert hashlib.md5(stream).hexdigest() == "a9d587e489b85feaa33aa8fede4cea6a"


# -- validation ------------------------------------------------------------------------------------

BAD_INPUTS = {
    "nan": (np.array([[1.0, np.nan], [0.0, 1.0]], dtype=np.float32), "NaN or infinite"),
    "inf": (np.full((2, 2, 2), np.inf, dtype=np.float16), "NaN or infinite"),
    "-inf": (np.array([[-np.inf, 0.0]]), "NaN or infinite"),
    "empty": (np.zeros((0, 4), dtype=np.float32), "empty"),
    "empty-chw": (np.zeros((3, 0, 2), dtype=np.float32), "empty"),
    "1-d": (np.zeros(8, dtype=np.float32), "shape"),
    "0-d": (np.zeros((), dtype=np.float32), "shape"),
    "5-d": (np.zeros((1, 2, 2, 2, 2), dtype=np.float32), "shape"),
    "4-d batch 2": (np.zeros((2, 3, 4, 4), dtype=np.float32), "shape"),
    "int32": (np.zeros((2, 3), dtype=np.int32), "dtype"),
    "uint8": (np.zeros((2, 3, 3), dtype=np.uint8), "dtype"),
    "bool": (np.zeros((2, 3), dtype=bool), "dtype"),
    "complex": (np.zeros((2, 3), dtype=np.complex64), "dtype"),
}


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_bad_arrays_are_refused(case):
    array, message = BAD_INPUTS[case]
    with pytest.raises(InputError, match=message):
        encode({"x": array})


def test_nan_position_is_reported():
    x = np.zeros((2, 3, 4), dtype=np.float32)
    x[1, 2, 3] = np.nan
    with pytest.raises(InputError, match=r"\(1, 2, 3\)"):
        encode({"": x})


def test_limits_are_enforced():
    with pytest.raises(InputError, match="no tensors"):
        encode({})
    with pytest.raises(InputError, match="name longer"):
        encode({"é" * (MAX_NAME_BYTES // 2 + 1): np.zeros((1, 1), np.float32)})
    with pytest.raises(InputError, match="at most"):
        encode({str(i): np.zeros((1, 1), np.float32) for i in range(MAX_TENSORS + 1)})
    with pytest.raises(InputError, match="dimension exceeds"):
        encode({"x": np.broadcast_to(np.float16(0), (MAX_DIM + 1, 1))})
    part = np.broadcast_to(np.float16(0), (1 << 20, 1))          # a view: no memory behind it
    count = MAX_DECODED_ELEMENTS // part.size + 1
    with pytest.raises(InputError, match="feature points"):
        encode({str(i): part for i in range(count)})


def test_step_offset_map_checks():
    x = np.ones((2, 3, 4), dtype=np.float32)
    with pytest.raises(InputError, match="step-offset map of shape"):
        encode_features({"x": x}, options(), step_offsets={"x": np.zeros((4, 3))})
    with pytest.raises(InputError, match="step exponents"):
        encode_features({"x": x}, options(QP=QP_MAX), step_offsets={"x": np.ones((3, 4))})
    with pytest.raises(InputError, match="step exponents"):
        encode_features({"x": x}, options(QP=QP_MIN), step_offsets={"x": -np.ones((3, 4))})
    tokens = np.ones((5, 2), dtype=np.float32)
    with pytest.raises(InputError, match="step-offset map"):
        encode_features({"t": tokens}, options(), step_offsets={"t": np.zeros((5, 1))})
    encode_features({"t": tokens}, options(), step_offsets={"t": np.zeros((1, 5))})


def test_level_limit_is_an_input_error():
    one = step_sizes(np.array([48]))[0]
    assert one == 1.0
    # the largest level the syntax carries is fine...
    result = encode({"x": np.array([[float(MAX_ABS_LEVEL), -float(MAX_ABS_LEVEL)]])}, QP=48)
    _, levels, _ = decode_levels(result.stream)["x"]
    assert sorted(levels.ravel().tolist()) == [-MAX_ABS_LEVEL, MAX_ABS_LEVEL]
    np.testing.assert_array_equal(decode_stream(result.stream).tensors["x"], [[MAX_ABS_LEVEL, -MAX_ABS_LEVEL]])
    # ...one more is not
    with pytest.raises(InputError, match="raise QP"):
        encode({"x": np.array([[float(MAX_ABS_LEVEL) + 1]])}, QP=48)
    with pytest.raises(InputError, match="raise QP"):
        encode({"x": np.array([[1000.0]], dtype=np.float32)}, QP=QP_MIN)


def test_float16_overflow_is_pulled_back():
    """Levels whose reconstruction would exceed float16's range move one step towards zero."""
    x = np.array([[65504.0, -65504.0, 60000.0, 1.0]], dtype=np.float16)
    result = encode({"x": x}, QP=144)                       # Δ = 4096: round(65504/Δ)·Δ = 65536
    out = decode_stream(result.stream).tensors["x"]
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(out, np.array([[61440, -61440, 61440, 0]], dtype=np.float16))


def test_quantiser_dead_zone():
    grid = np.array([0.0, 0.49, 0.5, 0.74, 0.76, 1.2, -0.76, -2.6]).reshape(8, 1, 1)
    exponents = np.full((1, 1), 48)
    assert quantise(grid, exponents, 0.5, np.dtype(np.float64)).ravel().tolist() == [0, 0, 1, 1, 1, 1, -1, -3]
    assert quantise(grid, exponents, 0.25, np.dtype(np.float64)).ravel().tolist() == [0, 0, 0, 0, 1, 1, -1, -2]
    assert quantise(grid, exponents, 0.0, np.dtype(np.float64)).ravel().tolist() == [0, 0, 0, 0, 0, 1, 0, -2]


# -- specs and reports -----------------------------------------------------------------------------

@pytest.mark.parametrize("shape,layout,batch,grid", [
    ((3, 4, 5), Layout.CHW, False, (3, 4, 5)),
    ((1, 3, 4, 5), Layout.CHW, True, (3, 4, 5)),
    ((7, 3), Layout.TOKENS, False, (3, 2, 4)),
    ((1, 7, 3), Layout.CHW, False, (1, 7, 3)),
])
def test_tensor_spec(shape, layout, batch, grid):
    spec = tensor_spec("n", np.zeros(shape, dtype=np.float16), 12, step_map=False)
    assert (spec.layout, spec.batch_axis, spec.grid, spec.array_shape) == (layout, batch, grid, shape)
    assert spec.dtype == DType.FLOAT16 and spec.qp == 12


def test_reports_and_input_untouched():
    rng = np.random.default_rng(5)
    tensors = {"a": rng.standard_normal((4, 5, 6)).astype(np.float32), "b": rng.standard_normal((9, 3))}
    copies = {k: v.copy() for k, v in tensors.items()}
    result = encode_features(tensors, options(QP=30))
    for name in tensors:
        np.testing.assert_array_equal(tensors[name], copies[name])
    tdu_bits = [8 * len(u.payload) for u in split_units(result.stream) if u.unit_type == 2]
    assert [r.bits for r in result.reports] == tdu_bits
    for report in result.reports:
        array = tensors[report.name]
        assert report.shape == array.shape and report.num_elements == array.size
        assert report.ideal_bits <= report.bits
        mse = np.mean((result.reconstruction[report.name].astype(np.float64) - array.astype(np.float64)) ** 2)
        assert report.mse == pytest.approx(mse, rel=1e-12)
        assert report.mse <= step_sizes(np.array([30]))[0] ** 2 / 4
        assert report.bits_per_feature_point == report.bits / array.size
        assert report.seconds >= 0


def test_hash_unit_is_optional():
    x = {"x": np.ones((2, 2, 2), dtype=np.float32)}
    with_hash = encode(x, DecodedFeatureHash=True).stream
    without = encode(x, DecodedFeatureHash=False).stream
    assert [u.unit_type for u in split_units(with_hash)] == [1, 2, 3, 4]
    assert [u.unit_type for u in split_units(without)] == [1, 2, 4]
    assert decode_stream(without).hash_checks == []
