"""common/stream.py, common/features.py, common/hashing.py, common/codepoints.py."""

import hashlib

import numpy as np
import pytest
from hypothesis import given, strategies as st

from common.codepoints import NUMPY_DTYPE, DType, Layout, Tool, UnitType, parse_code_point
from common.errors import BitstreamError
from common.features import TensorSpec, from_tensor_info, to_tensor_info
from common.hashing import tensor_md5
from common.stream import STREAM_HEADER_BYTES, UNIT_HEADER_BYTES, iter_units, write_stream
from common.syntax import Trace

units = st.lists(st.tuples(st.sampled_from([1, 2, 3, 0, 5, 99, 255]), st.binary(max_size=40)), max_size=6)


@given(units)
def test_write_then_iterate(unit_list):
    trace = Trace()
    data = write_stream([(t, p, None) for t, p in unit_list], trace)
    assert len(data) == STREAM_HEADER_BYTES + UNIT_HEADER_BYTES * (len(unit_list) + 1) + sum(len(p) for _, p in unit_list)
    assert data[:4] == b"FCRS"
    read_trace = Trace()
    got = list(iter_units(data, read_trace))
    known = [(t, p) for t, p in unit_list if t in (1, 2, 3)]
    assert [(int(t), p) for t, p in got] == known
    assert all(isinstance(t, UnitType) for t, _ in got)
    skipped = [line for line in read_trace.lines if line.startswith("# skipped")]
    assert len(skipped) == len(unit_list) - len(known)
    assert [line for line in read_trace.lines if not line.startswith("#")] == trace.lines


@given(units, st.data())
def test_every_truncation_is_detected(unit_list, data):
    stream = write_stream([(t, p, None) for t, p in unit_list])
    cut = data.draw(st.integers(0, len(stream) - 1))
    with pytest.raises(BitstreamError):
        list(iter_units(stream[:cut]))


def test_unit_iteration_is_lazy_and_checks_order():
    """A unit that would end beyond the stream is an error even after valid units."""
    stream = write_stream([(1, b"abc", None)])
    broken = stream[:-UNIT_HEADER_BYTES] + bytes([2]) + (10).to_bytes(4, "big") + b"xy"
    units = iter_units(broken)
    assert next(units) == (UnitType.FEATURE_PARAMETER_SET, b"abc")
    with pytest.raises(BitstreamError, match="needs 10 bytes, 2 left"):
        next(units)


def test_spec_round_trip_through_tensor_info():
    for spec in (TensorSpec("p2", Layout.CHW, DType.FLOAT16, (256, 50, 76), True, Tool.TOKENWISE_SQ, -3, True),
                 TensorSpec("", Layout.TOKENS, DType.FLOAT64, (197, 768), False, Tool.TOKENWISE_SQ, 511, False)):
        assert from_tensor_info(to_tensor_info(spec)) == spec
    spec = TensorSpec("t", Layout.TOKENS, DType.FLOAT32, (7, 3), True, Tool.TOKENWISE_SQ, 0, False)
    assert spec.grid == (3, 2, 4) and spec.num_elements == 21 and spec.array_shape == (1, 7, 3)
    assert spec.numpy_dtype == "<f4"


def test_bad_utf8_name_is_a_bitstream_error():
    info = to_tensor_info(TensorSpec("ab", Layout.CHW, DType.FLOAT32, (1, 1, 1), False, Tool.TOKENWISE_SQ, 0, False))
    info.ti_name = b"\xc3"
    with pytest.raises(BitstreamError, match="UTF-8"):
        from_tensor_info(info)


@pytest.mark.parametrize("dtype", ["<f2", ">f2", "<f4", ">f8"])
def test_md5_is_of_little_endian_c_order_bytes(dtype):
    x = np.arange(24, dtype=dtype).reshape(2, 3, 4)
    expected = hashlib.md5(np.ascontiguousarray(x, dtype=x.dtype.newbyteorder("<")).tobytes()).digest()
    assert tensor_md5(x) == expected
    assert tensor_md5(np.asfortranarray(x)) == expected
    assert tensor_md5(x.astype(x.dtype.newbyteorder(">"))) == expected
    assert tensor_md5(x.astype(np.float64)) != expected or dtype.endswith("8")


def test_code_points():
    assert parse_code_point(Layout, 1, "ti_layout_idc") is Layout.TOKENS
    with pytest.raises(BitstreamError, match="ti_layout_idc = 7 is a reserved value"):
        parse_code_point(Layout, 7, "ti_layout_idc")
    assert set(NUMPY_DTYPE) == set(DType)
    assert [u.value for u in UnitType] == [1, 2, 3, 4]
