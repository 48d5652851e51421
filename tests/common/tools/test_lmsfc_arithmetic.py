"""L-MSFC's normative pieces: tables, the integer arithmetic at its bounds, the latent sub-streams."""

import numpy as np
import pytest

from common.errors import BitstreamError
from common.tools.lmsfc.arithmetic import (ACTIVATION_LIMIT, MAX_CONV_INPUTS, WEIGHT_LIMIT, IntegerOps, im2col,
                                           pixel_shuffle)
from common.tools.lmsfc.entropy import (NUM_SCALES, Z_LIMIT, LatentCoder, build_tables, scale_indices, tables)
from common.tools.lmsfc.graph import Family, ShapeOps, drnet, fenet, halved, latent_size, layer_shapes, stage_sizes


def test_committed_tables_are_the_generated_ones():
    generated = build_tables()
    assert sorted(generated) == sorted(tables())
    for name, table in generated.items():
        np.testing.assert_array_equal(tables()[name], table, err_msg=name)
    frequencies = tables()["ladder_frequencies"]
    for k in range(NUM_SCALES):
        row = frequencies[k, :2 * tables()["ladder_half_widths"][k] + 1]
        assert row.sum() == 1 << 16 and row.min() >= 1


def exact_conv(x, weights, bias, shift, stride):
    """The spec's conv with Python integers (object arrays): the reference for the float64 product."""
    patches, (out_h, out_w) = im2col(x.astype(object), weights.shape[-1], stride)
    acc = weights.reshape(weights.shape[0], -1).astype(object).dot(patches) + bias.astype(object)[:, None]
    if shift:
        acc = (acc + (1 << (shift - 1))) // (1 << shift)
    out = np.clip(acc, -ACTIVATION_LIMIT, ACTIVATION_LIMIT).astype(np.int64)
    return out.reshape(weights.shape[0], out_h, out_w)


@pytest.mark.parametrize("stride", [1, 2])
def test_conv_is_exact_at_the_bounds(stride):
    """Worst-case magnitudes (every product at ±2^35, C_in · k² = 2^13) still sum exactly."""
    rng = np.random.default_rng(stride)
    channels_in = MAX_CONV_INPUTS // 9
    x = rng.choice([-ACTIVATION_LIMIT, ACTIVATION_LIMIT], size=(channels_in, 5, 4)).astype(np.int64)
    weights = rng.choice([-WEIGHT_LIMIT, WEIGHT_LIMIT, 1, -1], size=(3, channels_in, 3, 3)).astype(np.int64)
    weights[0] = WEIGHT_LIMIT * np.sign(x[:, 2:5, 1:4])      # output (0, 1, 0) at the maximum magnitude
    bias = rng.integers(-(1 << 40), 1 << 40, size=3)
    ops = IntegerOps({"layer": (weights, bias, 13)}, tables()["sigmoid"])
    np.testing.assert_array_equal(ops.conv("layer", x, 3, 3, stride=stride), exact_conv(x, weights, bias, 13, stride))


def test_sigmoid_gate_follows_the_table():
    ops = IntegerOps({}, tables()["sigmoid"])
    x = np.array([[[1 << 12, -(1 << 12), 1000]]])
    gate = np.array([[[0, -(1 << 20), 1 << 20]]])
    # gate 0 -> index 128 -> sigmoid(0.5 / 16); very negative -> index 0; very positive -> 255
    expected = [(4096 * tables()["sigmoid"][128] + 2048) >> 12, (-4096 * tables()["sigmoid"][0] + 2048) >> 12,
                (1000 * tables()["sigmoid"][255] + 2048) >> 12]
    assert ops.sigmoid_gate(x, gate).ravel().tolist() == expected


def test_pixel_shuffle_moves_channel_4c_plus_2i_plus_j():
    x = np.arange(8 * 2 * 3).reshape(8, 2, 3)
    out = pixel_shuffle(x)
    assert out.shape == (2, 4, 6)
    for c in range(2):
        for i in range(2):
            for j in range(2):
                np.testing.assert_array_equal(out[c, i::2, j::2], x[4 * c + 2 * i + j])


def test_geometry_of_odd_sizes():
    family = Family(channels=(4, 8, 16), trunk=8, latent=6, hyper=4, extra_stages=3)
    sizes = [(15, 21), halved((15, 21)), halved(halved((15, 21)))]
    assert sizes == [(15, 21), (8, 11), (4, 6)]
    assert latent_size(family, sizes) == (1, 1)
    assert stage_sizes(family, sizes) == [(1, 2), (2, 3)]
    shape_ops = ShapeOps()
    outputs = drnet(shape_ops, family, (6, 1, 1), sizes)
    assert outputs == [(4, 15, 21), (8, 8, 11), (16, 4, 6)]
    assert set(shape_ops.layers) <= set(layer_shapes(family))


def test_scale_index_rounds_then_subtracts_the_rate_index():
    t = np.array([-1000, 127, 128, 256 * 70])
    np.testing.assert_array_equal(scale_indices(t, 0), [0, 0, 1, NUM_SCALES - 1])
    np.testing.assert_array_equal(scale_indices(t, -2), [0, 2, 3, NUM_SCALES - 1])


def coded_latents(seed=0):
    rng = np.random.default_rng(seed)
    indices = rng.integers(0, NUM_SCALES, size=500)
    sigma = 0.11 * 2.0 ** (indices / 8)
    levels = np.round(rng.normal(size=500) * sigma).astype(np.int64)
    levels[:4] = [300, -300, 70000, -5]          # escapes beyond the widest table
    z = rng.integers(-Z_LIMIT, Z_LIMIT + 1, size=(3, 2, 5))
    z_frequencies = np.stack([np.full(2 * Z_LIMIT + 1, (1 << 16) // (2 * Z_LIMIT + 1))] * 3)
    z_frequencies[:, Z_LIMIT] += (1 << 16) - z_frequencies[0].sum()
    return indices, levels, z, z_frequencies


def test_latent_sub_streams_round_trip():
    indices, levels, z, z_frequencies = coded_latents()
    y_coder, z_coder = LatentCoder(), LatentCoder()
    y_coder.encode_y(levels, indices)
    z_coder.encode_z(z, z_frequencies)
    y_decoder, z_decoder = LatentCoder(y_coder.payload()), LatentCoder(z_coder.payload())
    np.testing.assert_array_equal(y_decoder.decode_y(indices), levels)
    np.testing.assert_array_equal(z_decoder.decode_z(z.shape, z_frequencies), z)
    y_decoder.finish()
    z_decoder.finish()


def test_truncated_or_padded_sub_stream_is_an_error():
    indices, levels, _, _ = coded_latents(1)
    coder = LatentCoder()
    coder.encode_y(levels, indices)
    payload = coder.payload()
    with pytest.raises(BitstreamError):
        LatentCoder(payload[:-3])
    with pytest.raises(BitstreamError):
        padded = LatentCoder(payload + b"\x01\x00\x00\x00")
        padded.decode_y(indices)
        padded.finish()


def test_tables_file_has_the_hash_the_spec_prints():
    from common.tools.lmsfc.entropy import TABLES_SHA256, tables_sha256
    assert tables_sha256() == TABLES_SHA256


def test_row_bands_bound_memory_without_changing_the_result(monkeypatch):
    from common.tools.lmsfc import arithmetic
    rng = np.random.default_rng(0)
    x = rng.integers(-5000, 5000, size=(16, 37, 29))
    layer = (rng.integers(-3000, 3000, size=(8, 16, 3, 3)), rng.integers(-10 ** 6, 10 ** 6, size=8), 9)
    ops = IntegerOps({"layer": layer}, tables()["sigmoid"])
    whole = ops.conv("layer", x, 8, 3, stride=2)
    monkeypatch.setattr(arithmetic, "PATCH_ELEMENTS", 16 * 9 * 15 * 3)      # three output rows per band
    assert len(arithmetic.row_bands(16, 3, 19, 15)) == 7
    np.testing.assert_array_equal(ops.conv("layer", x, 8, 3, stride=2), whole)


def test_a_latent_one_level_above_the_last_joins_the_last_level_from_below():
    """E = −1 (the stride-16 ablation): y at the second-to-last level's size, the last level
    brought up in FENet and reached by a stride-2 branch in DRNet."""
    family = Family(channels=(4, 8, 16), trunk=8, latent=6, hyper=4, extra_stages=-1)
    sizes = [(15, 21), (8, 11), (4, 6)]
    assert latent_size(family, sizes) == (8, 11)
    assert stage_sizes(family, sizes) == []
    shape_ops = ShapeOps()
    levels = [(c,) + size for c, size in zip(family.channels, sizes)]
    assert fenet(shape_ops, family, levels, sizes) == (6, 8, 11)
    assert drnet(shape_ops, family, (6, 8, 11), sizes) == levels
    assert set(shape_ops.layers) == set(layer_shapes(family)) - {"ha.a", "ha.b", "hs.a", "hs.up", "hs.b", "hs.out"}
