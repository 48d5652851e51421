"""common/syntax.py + common/syntax_structures.py: every syntax structure round-trips
through SyntaxWriter / SyntaxReader, ranges are enforced on both sides, and the
writer's and reader's traces are identical."""

import copy

import pytest
from hypothesis import given, strategies as st

from common.codepoints import STREAM_MAGIC, STREAM_VERSION_MAJOR, DType, HashType, Layout, Tool
from common.errors import BitstreamError
from common.syntax import MAX_UE_VALUE, SyntaxReader, SyntaxStructure, SyntaxWriter, Trace
from common.limits import MAX_DECODED_ELEMENTS, MAX_DIM, MAX_NAME_BYTES, MAX_TENSORS, MAX_UNIT_PAYLOAD_SIZE
from common.syntax_structures import (decoded_feature_hash, feature_parameter_set, stream_header, tensor_data_unit,
                                      tensor_info, tensor_num_elements, unit_header)
from common.tools.tokenwise.syntax import QP_MAX, QP_MIN, tokenwise_sq_params

S = SyntaxStructure


class UncheckedWriter(SyntaxWriter):
    """Writes whatever it is given (no range checks, no constraints): crafts streams a
    conforming encoder cannot produce, to check that the reader refuses them."""

    def _value(self, s, name, idx, descriptor, lo, hi, write):
        value = int(getattr(s, name) if idx is None else getattr(s, name)[idx])
        write(value)
        return value

    def require(self, condition, message):
        pass


def write(function, structure, writer=None):
    """(bytes, number of bits the structure itself took, trace lines)."""
    trace = Trace()
    rw = writer(trace) if writer else SyntaxWriter(trace)
    function(rw, structure)
    num_bits = rw.bits.num_bits
    rw.byte_alignment()
    return rw.getvalue(), num_bits, trace.lines


def read(function, data):
    trace = Trace()
    rw = SyntaxReader(data, trace)
    out = S()
    function(rw, out)
    return out, rw.bits_left, trace.lines


def assert_refused_both_ways(function, structure, match, reader_sees=True):
    """The writer refuses the structure; written anyway (UncheckedWriter), the reader refuses it too."""
    with pytest.raises(BitstreamError, match=match):
        write(function, structure)
    if reader_sees:
        encoded, _, _ = write(function, structure, UncheckedWriter)
        with pytest.raises(BitstreamError, match=match):
            read(function, encoded)


def assert_round_trip(function, structure, byte_aligned):
    original = copy.deepcopy(structure)
    data, num_bits, write_trace = write(function, structure)
    assert structure == original, "the writer must not change the structure"
    decoded, bits_left, read_trace = read(function, data)
    assert decoded == structure
    assert bits_left == 8 * len(data) - num_bits, "the reader must consume exactly what was written"
    if byte_aligned:
        assert bits_left == 0
    assert read_trace == write_trace
    assert len(write_trace) >= 1
    return data


# -- strategies ----------------------------------------------------------------------------------

def ue_values(hi):
    return st.one_of(st.integers(0, min(hi, 300)), st.sampled_from(sorted({0, 1, hi - 1, hi})))


dims = st.one_of(st.integers(0, 40), st.sampled_from([255, 4095, MAX_DIM // 2, MAX_DIM - 1]))
qps = st.one_of(st.integers(QP_MIN, QP_MAX), st.sampled_from([QP_MIN, QP_MAX, 0, -1, 48]))


@st.composite
def tokenwise_params(draw):
    return S(tsq_qp=draw(qps), tsq_step_map_flag=draw(st.integers(0, 1)), tsq_channel_offsets_flag=draw(st.integers(0, 1)))


@st.composite
def tensor_infos(draw, layout=None):
    name = draw(st.one_of(st.text(max_size=20).map(lambda t: t.encode("utf-8")[:MAX_NAME_BYTES]),
                          st.binary(min_size=MAX_NAME_BYTES, max_size=MAX_NAME_BYTES)))
    s = S(ti_name_length=len(name), ti_name=name,
          ti_layout_idc=draw(st.sampled_from(list(Layout))) if layout is None else layout,
          ti_dtype_idc=draw(st.sampled_from(list(DType))), ti_batch_dim_flag=draw(st.integers(0, 1)),
          ti_num_channels_minus1=draw(dims))
    if s.ti_layout_idc == Layout.CHW:
        s.ti_height_minus1, s.ti_width_minus1 = draw(dims), draw(dims)
    else:
        s.ti_num_tokens_minus1 = draw(dims)
    s.ti_tool_idc = Tool.TOKENWISE_SQ
    s.ti_tokenwise_sq_params = draw(tokenwise_params())
    return s


@st.composite
def small_tensor_infos(draw):
    """tensor_info()s that always satisfy the MAX_DECODED_ELEMENTS constraint together."""
    s = draw(tensor_infos())
    for name in ("ti_num_channels_minus1", "ti_height_minus1", "ti_width_minus1", "ti_num_tokens_minus1"):
        if hasattr(s, name):
            setattr(s, name, getattr(s, name) % 64)
    return s


@st.composite
def parameter_sets(draw, infos=small_tensor_infos(), max_tensors=6):
    tensors = draw(st.lists(infos, min_size=1, max_size=max_tensors))
    s = S(fps_num_tensors_minus1=len(tensors) - 1, fps_tensors=tensors,
          fps_extension_flag=draw(st.integers(0, 1)))
    if s.fps_extension_flag:
        s.fps_extension_data = draw(st.binary(max_size=20))
    return s


@st.composite
def hash_units(draw):
    n = draw(st.integers(1, 8))
    return S(dfh_hash_type_idc=HashType.MD5, dfh_num_tensors_minus1=n - 1,
             dfh_tensors=[S(dfh_md5=draw(st.binary(min_size=16, max_size=16))) for _ in range(n)])


# -- round trips ---------------------------------------------------------------------------------

@given(st.integers(0, 255))
def test_stream_header_round_trip(minor):
    data = assert_round_trip(stream_header, S(sh_magic=STREAM_MAGIC, sh_version_major=STREAM_VERSION_MAJOR,
                                               sh_version_minor=minor), byte_aligned=True)
    assert data[:4] == b"FCRS" and data[4] == STREAM_VERSION_MAJOR and len(data) == 6


@given(st.integers(0, 255), st.one_of(st.integers(0, 1 << 20), st.just(MAX_UNIT_PAYLOAD_SIZE)))
def test_unit_header_round_trip(unit_type, size):
    data = assert_round_trip(unit_header, S(unit_type=unit_type, unit_payload_size=size), byte_aligned=True)
    assert data == bytes([unit_type]) + size.to_bytes(4, "big")


@given(tokenwise_params())
def test_tokenwise_sq_params_round_trip(params):
    assert_round_trip(tokenwise_sq_params, params, byte_aligned=False)


@given(tensor_infos())
def test_tensor_info_round_trip(info):
    assert_round_trip(tensor_info, info, byte_aligned=False)


@given(parameter_sets())
def test_feature_parameter_set_round_trip(fps):
    assert_round_trip(feature_parameter_set, fps, byte_aligned=True)


@pytest.mark.parametrize("layout", list(Layout))
@given(data=st.data())
def test_feature_parameter_set_round_trip_per_layout(layout, data):
    fps = data.draw(parameter_sets(infos=tensor_infos(layout=layout), max_tensors=1))
    total = sum(tensor_num_elements(t) for t in fps.fps_tensors)
    if total <= MAX_DECODED_ELEMENTS:
        assert_round_trip(feature_parameter_set, fps, byte_aligned=True)
    else:
        assert_refused_both_ways(feature_parameter_set, fps, "MAX_DECODED_ELEMENTS")


@given(st.integers(0, MAX_TENSORS - 1), st.binary(max_size=64))
def test_tensor_data_unit_round_trip(index, payload):
    assert_round_trip(tensor_data_unit, S(tdu_tensor_idx=index, tdu_entropy_payload=payload), byte_aligned=True)


@given(hash_units())
def test_decoded_feature_hash_round_trip(dfh):
    assert_round_trip(decoded_feature_hash, dfh, byte_aligned=True)


def test_max_tensors_fps_round_trip():
    info = S(ti_name_length=0, ti_name=b"", ti_layout_idc=Layout.TOKENS, ti_dtype_idc=DType.FLOAT32,
             ti_batch_dim_flag=0, ti_num_channels_minus1=0, ti_num_tokens_minus1=0, ti_tool_idc=Tool.TOKENWISE_SQ,
             ti_tokenwise_sq_params=S(tsq_qp=0, tsq_step_map_flag=0, tsq_channel_offsets_flag=0))
    fps = S(fps_num_tensors_minus1=MAX_TENSORS - 1, fps_tensors=[copy.deepcopy(info) for _ in range(MAX_TENSORS)],
            fps_extension_flag=0)
    assert_round_trip(feature_parameter_set, fps, byte_aligned=True)


def test_element_counts_at_the_limit():
    def chw(c, h, w):
        return S(ti_layout_idc=Layout.CHW, ti_num_channels_minus1=c - 1, ti_height_minus1=h - 1, ti_width_minus1=w - 1)
    assert tensor_num_elements(chw(2, 3, 5)) == 30
    assert tensor_num_elements(S(ti_layout_idc=Layout.TOKENS, ti_num_channels_minus1=6, ti_num_tokens_minus1=2)) == 21
    assert tensor_num_elements(chw(1 << 7, 1 << 10, 1 << 10)) == MAX_DECODED_ELEMENTS


@pytest.mark.parametrize("function,structure", [
    (stream_header, S(sh_magic=STREAM_MAGIC, sh_version_major=STREAM_VERSION_MAJOR, sh_version_minor=3)),
    (unit_header, S(unit_type=2, unit_payload_size=1000)),
    (feature_parameter_set, S(fps_num_tensors_minus1=0, fps_extension_flag=0, fps_tensors=[S(
        ti_name_length=2, ti_name=b"p2", ti_layout_idc=Layout.CHW, ti_dtype_idc=DType.FLOAT16, ti_batch_dim_flag=1,
        ti_num_channels_minus1=255, ti_height_minus1=199, ti_width_minus1=303, ti_tool_idc=Tool.TOKENWISE_SQ,
        ti_tokenwise_sq_params=S(tsq_qp=-7, tsq_step_map_flag=1, tsq_channel_offsets_flag=0))])),
    (decoded_feature_hash, S(dfh_hash_type_idc=0, dfh_num_tensors_minus1=1,
                             dfh_tensors=[S(dfh_md5=bytes(range(16))), S(dfh_md5=bytes(16))])),
])
def test_every_strict_prefix_is_refused(function, structure):
    """Structures of fixed extent: a reader given any truncation raises BitstreamError."""
    data, _, _ = write(function, structure)
    for cut in range(len(data)):
        with pytest.raises(BitstreamError):
            read(function, data[:cut])


def test_trace_line_format():
    _, _, lines = write(unit_header, S(unit_type=2, unit_payload_size=7))
    assert lines[0].split() == ["unit_type", "u(8)", ":", "2"]
    assert lines[1].split() == ["unit_payload_size", "u(32)", ":", "7"]


# -- range checks --------------------------------------------------------------------------------

def valid_info(layout=Layout.CHW):
    s = S(ti_name_length=1, ti_name=b"x", ti_layout_idc=layout, ti_dtype_idc=DType.FLOAT32, ti_batch_dim_flag=0,
          ti_num_channels_minus1=3)
    if layout == Layout.CHW:
        s.ti_height_minus1, s.ti_width_minus1 = 1, 2
    else:
        s.ti_num_tokens_minus1 = 4
    s.ti_tool_idc = Tool.TOKENWISE_SQ
    s.ti_tokenwise_sq_params = S(tsq_qp=40, tsq_step_map_flag=0, tsq_channel_offsets_flag=0)
    return s


def valid_fps(info=None):
    return S(fps_num_tensors_minus1=0, fps_tensors=[info or valid_info()], fps_extension_flag=0)


def tokens_info_with_chw_dims(layout):
    """An info with every dimension element set, so that any layout value can be written."""
    s = valid_info()
    s.ti_layout_idc = layout
    s.ti_num_tokens_minus1 = 4
    return s


def _set(path):
    """Setter for a dotted path below a structure: 'fps_tensors.0.ti_dtype_idc'."""
    def setter(structure, value):
        *parents, leaf = path.split(".")
        target = structure
        for p in parents:
            target = target[int(p)] if p.isdigit() else getattr(target, p)
        setattr(target, leaf, value)
    return setter


ABOVE_UE = st.integers(MAX_UE_VALUE + 1, 1 << 40)

def valid_header():
    return S(sh_magic=STREAM_MAGIC, sh_version_major=STREAM_VERSION_MAJOR, sh_version_minor=0)


# (structure function, valid structure factory, element path, out-of-range values, a reader can see it)
OUT_OF_RANGE = [
    (stream_header, valid_header, "sh_magic",
     st.integers(0, (1 << 32) - 1).filter(lambda v: v != STREAM_MAGIC), True),
    (stream_header, valid_header, "sh_version_major",
     st.integers(0, 255).filter(lambda v: v != STREAM_VERSION_MAJOR), True),
    (stream_header, valid_header, "sh_version_minor",
     st.one_of(st.integers(256, 1 << 40), st.integers(-(1 << 40), -1)), False),
    (unit_header, lambda: S(unit_type=1, unit_payload_size=0), "unit_type",
     st.one_of(st.integers(256, 1 << 20), st.integers(-100, -1)), False),
    (unit_header, lambda: S(unit_type=1, unit_payload_size=0), "unit_payload_size",
     st.one_of(st.integers(MAX_UNIT_PAYLOAD_SIZE + 1, 1 << 40), st.integers(-100, -1)), False),
    (tokenwise_sq_params, lambda: S(tsq_qp=0, tsq_step_map_flag=0, tsq_channel_offsets_flag=0), "tsq_qp",
     st.one_of(st.integers(QP_MAX + 1, 1 << 20), st.integers(-(1 << 20), QP_MIN - 1)), True),
    (tokenwise_sq_params, lambda: S(tsq_qp=0, tsq_step_map_flag=0, tsq_channel_offsets_flag=0), "tsq_step_map_flag",
     st.one_of(st.integers(2, 100), st.just(-1)), False),
    (tokenwise_sq_params, lambda: S(tsq_qp=0, tsq_step_map_flag=0, tsq_channel_offsets_flag=0),
     "tsq_channel_offsets_flag", st.one_of(st.integers(2, 100), st.just(-1)), False),
    (feature_parameter_set, lambda: valid_fps(tokens_info_with_chw_dims(Layout.CHW)), "fps_tensors.0.ti_layout_idc",
     st.integers(Layout.TOKENS + 1, 15), True),
    (feature_parameter_set, valid_fps, "fps_tensors.0.ti_dtype_idc", st.integers(DType.FLOAT64 + 1, 15), True),
    (feature_parameter_set, valid_fps, "fps_tensors.0.ti_tool_idc",
     st.integers(0, 255).filter(lambda v: v not in (Tool.TOKENWISE_SQ, Tool.VIDEO_ANCHOR, Tool.LMSFC)), True),
    (feature_parameter_set, valid_fps, "fps_tensors.0.ti_batch_dim_flag", st.integers(2, 9), False),
    (feature_parameter_set, valid_fps, "fps_tensors.0.ti_num_channels_minus1",
     st.one_of(st.integers(MAX_DIM, MAX_UE_VALUE), ABOVE_UE), True),
    (feature_parameter_set, valid_fps, "fps_tensors.0.ti_num_channels_minus1", st.integers(-(1 << 40), -1), False),
    (feature_parameter_set, valid_fps, "fps_tensors.0.ti_height_minus1", st.integers(MAX_DIM, MAX_UE_VALUE), True),
    (feature_parameter_set, valid_fps, "fps_tensors.0.ti_width_minus1", st.integers(MAX_DIM, MAX_UE_VALUE), True),
    (feature_parameter_set, lambda: valid_fps(valid_info(Layout.TOKENS)), "fps_tensors.0.ti_num_tokens_minus1",
     st.integers(MAX_DIM, MAX_UE_VALUE), True),
    (feature_parameter_set, valid_fps, "fps_tensors.0.ti_tokenwise_sq_params.tsq_qp",
     st.one_of(st.integers(QP_MAX + 1, 5000), st.integers(-5000, QP_MIN - 1)), True),
    (tensor_data_unit, lambda: S(tdu_tensor_idx=0, tdu_entropy_payload=b"\0" * 4), "tdu_tensor_idx",
     st.integers(MAX_TENSORS, MAX_UE_VALUE), True),
    (decoded_feature_hash, lambda: S(dfh_hash_type_idc=0, dfh_num_tensors_minus1=0, dfh_tensors=[S(dfh_md5=bytes(16))]),
     "dfh_hash_type_idc", st.integers(1, 255), True),
]


@pytest.mark.parametrize("function,factory,path,bad_values,reader_sees",
                         OUT_OF_RANGE, ids=[case[2].split(".")[-1] for case in OUT_OF_RANGE])
@given(data=st.data())
def test_out_of_range_values_are_refused(function, factory, path, bad_values, reader_sees, data):
    structure = factory()
    value = data.draw(bad_values)
    _set(path)(structure, value)
    name = path.split(".")[-1]
    assert_refused_both_ways(function, structure, name, reader_sees)


def test_too_many_tensors_are_refused():
    fps = S(fps_num_tensors_minus1=MAX_TENSORS, fps_tensors=[valid_info() for _ in range(MAX_TENSORS + 1)],
            fps_extension_flag=0)
    assert_refused_both_ways(feature_parameter_set, fps, "fps_num_tensors_minus1")
    dfh = S(dfh_hash_type_idc=0, dfh_num_tensors_minus1=MAX_TENSORS,
            dfh_tensors=[S(dfh_md5=bytes(16)) for _ in range(MAX_TENSORS + 1)])
    assert_refused_both_ways(decoded_feature_hash, dfh, "dfh_num_tensors_minus1")


def test_name_longer_than_255_bytes_is_refused():
    info = valid_info()
    info.ti_name = b"n" * (MAX_NAME_BYTES + 1)
    info.ti_name_length = MAX_NAME_BYTES + 1
    assert_refused_both_ways(tensor_info, info, "ti_name_length")


def test_inconsistent_counts_are_refused_by_the_writer():
    info = valid_info()
    info.ti_name_length = 3                       # ti_name is 1 byte
    with pytest.raises(BitstreamError, match="ti_name"):
        write(tensor_info, info)
    fps = valid_fps()
    fps.fps_num_tensors_minus1 = 1                # one tensor_info only
    with pytest.raises(BitstreamError, match="fps_tensors"):
        write(feature_parameter_set, fps)
    dfh = S(dfh_hash_type_idc=0, dfh_num_tensors_minus1=0, dfh_tensors=[S(dfh_md5=bytes(15))])
    with pytest.raises(BitstreamError, match="dfh_md5"):
        write(decoded_feature_hash, dfh)


@given(st.integers(1, 127))
def test_nonzero_alignment_bits_are_refused(garbage):
    """byte_alignment() bits must be zero: set some of them in an FPS and a hash unit."""
    padded = valid_info()
    padded.ti_num_channels_minus1 = 0            # ue(0) is one bit: the FPS then ends mid-byte
    for function, structure in ((feature_parameter_set, valid_fps(padded)),
                                (decoded_feature_hash, S(dfh_hash_type_idc=0, dfh_num_tensors_minus1=0,
                                                         dfh_tensors=[S(dfh_md5=bytes(16))]))):
        data, _, _ = write(function, structure)
        probe = UncheckedWriter()              # the same structure without its alignment bits
        probe.byte_alignment = lambda: None
        function(probe, structure)
        start = probe.bits.num_bits
        pad = 8 * len(data) - start
        assert 0 < pad < 8
        corrupted = bytearray(data)
        corrupted[start // 8] |= garbage % (1 << pad) or 1
        with pytest.raises(BitstreamError, match="byte_alignment"):
            read(function, bytes(corrupted))


def test_nonzero_alignment_bits_in_a_tensor_data_unit_are_refused():
    data, _, _ = write(tensor_data_unit, S(tdu_tensor_idx=2, tdu_entropy_payload=b"abcd"))
    assert data[0] >> 5 == 0b011                  # ue(2), then five alignment bits
    with pytest.raises(BitstreamError, match="byte_alignment"):
        read(tensor_data_unit, bytes([data[0] | 1]) + data[1:])
