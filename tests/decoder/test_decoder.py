"""decoder/decoder.py: decode_stream / decode_tensor / reconstruct on valid streams, threads,
skipped units, and the structural checks of the unit sequence."""

import numpy as np
import pytest

from common.codepoints import DType, Layout, Tool, UnitType
from common.errors import BitstreamError
from common.features import TensorSpec
from common.syntax import Trace
from common.tools.tokenwise.decode import reconstruct
from common.tools.tokenwise.sq import step_sizes
from decoder.decoder import decode_stream, decode_tensor
from tests.helpers import join_units, split_units


def test_reference_streams_decode(streams):
    for ref in streams:
        decoded = decode_stream(ref.stream)
        assert list(decoded.tensors) == list(ref.reconstruction)
        for name, array in decoded.tensors.items():
            expected = ref.reconstruction[name]
            assert array.dtype == expected.dtype and array.shape == expected.shape
            assert array.tobytes() == expected.tobytes()
        assert [c.ok for c in decoded.hash_checks] == [True] * len(ref.tensors)
        assert [s.name for s in decoded.specs] == list(ref.tensors)


@pytest.mark.parametrize("threads", [1, 2, 3, 8])
def test_threads_give_identical_results(streams, threads):
    ref = streams[2]
    decoded = decode_stream(ref.stream, threads=threads)
    for name, array in decoded.tensors.items():
        assert array.tobytes() == ref.reconstruction[name].tobytes()


def test_decode_tensor_matches_decode_stream(streams):
    ref = streams[2]
    decoded = decode_stream(ref.stream)
    tdus = [u.payload for u in split_units(ref.stream) if u.unit_type == UnitType.TENSOR_DATA]
    for spec, payload in zip(decoded.specs, tdus):
        array = decode_tensor(spec, payload[1:])           # payload after tdu_tensor_idx + alignment
        assert array.tobytes() == decoded.tensors[spec.name].tobytes()


def test_unknown_units_are_skipped_and_traced(streams):
    ref = streams[0]
    units = split_units(ref.stream)
    pairs = [(u.unit_type, u.payload) for u in units]
    after_hash = join_units(ref.stream[:6], pairs[:3] + [(77, b"\x01\x02")] + pairs[3:])
    trace = Trace()
    decoded = decode_stream(after_hash, trace=trace)
    assert all(c.ok for c in decoded.hash_checks)
    assert "# skipped unit of unknown type 77" in trace.lines
    # one inserted before the hash unit is skipped too, but the hash covers its bytes
    before_hash = join_units(ref.stream[:6], pairs[:2] + [(77, b"\x01\x02")] + pairs[2:])
    assert not any(c.ok for c in decode_stream(before_hash).hash_checks)


def test_hash_mismatch_is_reported_not_raised(streams):
    ref = streams[2]
    pairs = [(u.unit_type, u.payload) for u in split_units(ref.stream)]
    k = [t for t, _ in pairs].index(UnitType.DECODED_FEATURE_HASH)
    payload = bytearray(pairs[k][1])
    payload[-1] ^= 0x80                                    # a bit of the last tensor's MD5
    pairs[k] = (pairs[k][0], bytes(payload))
    decoded = decode_stream(join_units(ref.stream[:6], pairs))
    assert [c.ok for c in decoded.hash_checks] == [True, True, False]
    original = decode_stream(ref.stream).hash_checks[-1]
    assert original.ok and decoded.hash_checks[-1].actual == original.expected   # the encoder's hash, recomputed


def spec(layout=Layout.CHW, shape=(2, 3, 4), dtype=DType.FLOAT32, qp=48, batch=False):
    return TensorSpec(name="t", layout=layout, dtype=dtype, shape=shape, batch_axis=batch,
                      tool=Tool.TOKENWISE_SQ, qp=qp, step_map=False)


def test_reconstruct_layouts_and_dtypes():
    levels = np.arange(24, dtype=np.int64).reshape(2, 3, 4) - 12
    offsets = np.arange(12, dtype=np.int64).reshape(3, 4) - 6
    steps = step_sizes(40 + offsets)
    chw = reconstruct(spec(qp=40, dtype=DType.FLOAT64, batch=True), levels, offsets)
    assert chw.shape == (1, 2, 3, 4) and chw.dtype == np.float64
    np.testing.assert_array_equal(chw[0], levels * steps[None])
    tokens_levels = levels[:, :1, :]                       # grid (C=2, 1, N=4)
    tokens = reconstruct(spec(Layout.TOKENS, (4, 2), DType.FLOAT16, qp=40), tokens_levels, offsets[:1])
    assert tokens.shape == (4, 2) and tokens.dtype == np.float16
    np.testing.assert_array_equal(tokens, (tokens_levels[:, 0, :] * steps[:1]).T.astype(np.float16))


def test_reconstruct_rejects_exponents_out_of_range():
    levels = np.zeros((2, 3, 4), dtype=np.int64)
    offsets = np.zeros((3, 4), dtype=np.int64)
    offsets[2, 3] = 1
    with pytest.raises(BitstreamError, match="step exponent"):
        reconstruct(spec(qp=511), levels, offsets)
    with pytest.raises(BitstreamError, match="step exponent"):
        reconstruct(spec(qp=-256), levels, -offsets)


def test_reconstruct_overflow_gives_inf_without_warning(recwarn):
    """Only corrupt streams get here (the encoder never codes such levels); no warning, no crash."""
    levels = np.full((1, 1, 1), 1 << 30, dtype=np.int64)
    out = reconstruct(spec(shape=(1, 1, 1), dtype=DType.FLOAT16, qp=200), levels, np.zeros((1, 1), np.int64))
    assert np.isinf(out).all()
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_every_single_bit_flip_of_the_parameter_set_is_caught(streams):
    """The hash covers the parameter set's bytes: a flipped name, batch axis, layout or dtype bit
    (same element count) never decodes with every hash OK."""
    from common.errors import FcrsError
    for ref in streams:
        pairs = [(u.unit_type, u.payload) for u in split_units(ref.stream)]
        fps = pairs[0][1]
        for bit in range(8 * len(fps)):
            flipped = bytearray(fps)
            flipped[bit // 8] ^= 0x80 >> (bit % 8)
            try:
                decoded = decode_stream(join_units(ref.stream[:6], [(pairs[0][0], bytes(flipped))] + pairs[1:]))
            except FcrsError:
                continue
            assert not all(check.ok for check in decoded.hash_checks), f"bit {bit} of the parameter set passed"
