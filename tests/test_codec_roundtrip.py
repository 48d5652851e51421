"""encoder + decoder: decode_stream(encode_features(x).stream) reproduces the encoder's
reconstruction bit-exactly, for random shapes, layouts, dtypes, QPs, rounding offsets and
step-offset maps, and the quantisation error stays within the step's bound."""

import numpy as np
from hypothesis import given, settings, strategies as st

from common.features import from_grid, to_grid
from common.syntax import Trace
from common.tools.tokenwise.sq import step_sizes
from decoder.decoder import decode_stream
from encoder.encoder import encode_features
from encoder.tools.tokenwise.coder import offsets_to_grid
from tests.helpers import decode_levels, options

DTYPES = (np.float16, np.float32, np.float64)

shapes = st.one_of(
    st.tuples(st.integers(1, 6), st.integers(1, 6), st.integers(1, 7)),                       # C×H×W
    st.just((1, 1, 1)),
    st.tuples(st.integers(1, 9), st.integers(1, 6)),                                           # N×C tokens
    st.tuples(st.just(1), st.integers(1, 5), st.integers(1, 5), st.integers(1, 5)),             # 1×C×H×W
)


@st.composite
def feature_arrays(draw):
    shape = draw(shapes)
    dtype = draw(st.sampled_from(DTYPES))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    scale = 2.0 ** draw(st.integers(-6, 9))
    values = rng.standard_normal(shape) * scale
    values[rng.random(shape) < draw(st.floats(0, 1))] = 0.0                 # sparsity
    if draw(st.booleans()):
        values = np.abs(values)                                              # one-sided (ReLU)
    special = draw(st.lists(st.sampled_from([0.0, -0.0, 1e-30, -5e-8, 999.75, -1000.0, 0.5, 1.5]), max_size=3))
    flat = values.reshape(-1)
    for i, v in enumerate(special[:flat.size]):
        flat[rng.integers(flat.size)] = v
    return np.clip(values, -1000, 1000).astype(dtype)


def offset_shape(array):
    return array.shape[-2:] if array.ndim >= 3 else (array.shape[0],)


@st.composite
def cases(draw):
    names = draw(st.lists(st.text(max_size=12), min_size=1, max_size=3, unique=True))
    if len(names) == 1 and draw(st.booleans()):
        names = [""]                                                         # a lone .npy tensor
    tensors = {name: draw(feature_arrays()) for name in names}
    qp = draw(st.integers(0, 120))
    rounding = draw(st.sampled_from([0.5, 0.5, 0.4, 0.25, 0.0]))
    offsets = {}
    for name, array in tensors.items():
        if draw(st.booleans()):
            rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
            spread = draw(st.sampled_from([0, 3, 20, 60]))
            offsets[name] = rng.integers(-spread, spread + 1, size=offset_shape(array))
    hashed = draw(st.sampled_from([True, True, False]))
    return tensors, options(QP=qp, RoundingOffset=rounding, DecodedFeatureHash=hashed), offsets or None


def check_error_bound(original, levels, steps, rounding):
    """|f − qΔ| ≤ Δ/2 for plain rounding; dead zone: q has f's sign and |qΔ| ∈ (|f| − (1−r)Δ, |f| + rΔ]."""
    f = original.astype(np.float64)
    rec = levels * steps
    slack = 1e-12 * np.maximum(np.abs(f), steps)
    assert (np.sign(levels) * np.sign(f) >= 0).all(), "a level with the wrong sign"
    if rounding == 0.5:
        assert (np.abs(f - rec) <= steps / 2 + slack).all()
    assert (np.abs(rec) <= np.abs(f) + rounding * steps + slack).all()
    assert (np.abs(rec) > np.abs(f) - (1 - rounding) * steps - slack).all()


@settings(max_examples=max(50, settings.default.max_examples))
@given(cases())
def test_round_trip(case):
    tensors, opts, offsets = case
    encoder_trace, decoder_trace = Trace(), Trace()
    result = encode_features(tensors, opts, step_offsets=offsets, trace=encoder_trace)
    decoded = decode_stream(result.stream, trace=decoder_trace)

    assert list(decoded.tensors) == list(tensors)
    assert list(result.reconstruction) == list(tensors)
    for name, array in tensors.items():
        out = decoded.tensors[name]
        assert out.dtype == array.dtype and out.shape == array.shape
        assert out.tobytes() == result.reconstruction[name].tobytes(), "decoder differs from the encoder"
        assert np.isfinite(out).all()
    if opts["DecodedFeatureHash"]:
        assert [c.name for c in decoded.hash_checks] == list(tensors)
        assert all(c.ok for c in decoded.hash_checks)
    else:
        assert decoded.hash_checks == []
    assert encoder_trace.lines == decoder_trace.lines

    for name, (spec, levels, grid_offsets) in decode_levels(result.stream).items():
        array = tensors[name]
        # the signalled base QP may move to the median offset; the exponents may not change,
        # and a map is sent only when the offsets differ between tokens
        given_offsets = offsets.get(name) if offsets else None
        wanted = opts["QP"] + (offsets_to_grid(spec, given_offsets) if given_offsets is not None else 0)
        np.testing.assert_array_equal(spec.qp + grid_offsets, np.broadcast_to(wanted, grid_offsets.shape))
        assert spec.step_map == (given_offsets is not None and np.unique(given_offsets).size > 1)
        steps = step_sizes(spec.qp + grid_offsets)[None]                    # (1, H, W)
        grid = to_grid(spec, array.astype(np.float64))
        check_error_bound(grid, levels, steps, opts["RoundingOffset"])
        # the decoded value is q·Δ in float64, rounded once to the tensor's dtype
        expected = from_grid(spec, (levels * steps).astype(array.dtype))
        assert decoded.tensors[name].tobytes() == expected.tobytes()


@given(st.sampled_from(DTYPES), st.integers(0, 100))
def test_float64_reconstruction_is_levels_times_step(dtype, qp):
    """With float64 features the decoded values are exactly q·Δ and within Δ/2 of the input."""
    rng = np.random.default_rng(qp)
    x = (rng.standard_normal((3, 4, 5)) * 10).astype(dtype)
    result = encode_features({"x": x}, options(QP=qp))
    spec, levels, _ = decode_levels(result.stream)["x"]
    step = step_sizes(np.array([qp]))[0]
    rec = decode_stream(result.stream).tensors["x"]
    if dtype == np.float64:
        np.testing.assert_array_equal(rec, levels * step)
    err = np.abs(x.astype(np.float64) - levels * step)
    assert err.max() <= step / 2 * (1 + 1e-12)


def test_all_zero_levels_need_no_payload_and_decode():
    """ANS codes the most probable symbol for free from its initial state: a tensor quantised to
    all zeros (YOLOv5n P3 at a coarse step) has an empty payload, which the decoder must accept."""
    rng = np.random.default_rng(5)
    tensors = {"p3": (rng.standard_normal((1, 64, 80, 80)) * 0.05).astype(np.float32)}
    result = encode_features(tensors, options(QP=120))
    decoded = decode_stream(result.stream)
    assert all(check.ok for check in decoded.hash_checks)
    assert not decoded.tensors["p3"].any() and decoded.tensors["p3"].shape == (1, 64, 80, 80)
