"""The compiled level coder (common/tools/tokenwise/kernel.c) against the numpy reference
(sq.py): the same payload bytes, the same decoded levels, the same error on every corrupt
payload. Skipped where the kernel is not built."""

import random

import numpy as np
import pytest

from common.errors import BitstreamError
from common.tools.tokenwise.sq import MAX_ABS_LEVEL, TokenwiseEntropyCoder, level_kernel

pytestmark = pytest.mark.skipif(level_kernel() is None, reason="the token-wise kernel is not built (pip install -e .)")


def encoded(levels, offsets, kernel):
    coder = TokenwiseEntropyCoder(kernel=kernel)
    coder.code_tensor(levels, offsets, levels.shape, offsets is not None)
    return coder.finish(), coder.ideal_bits


def decoded(payload, grid, step_map, kernel):
    """(levels, offsets) or the BitstreamError's message."""
    coder = TokenwiseEntropyCoder(payload, kernel=kernel)
    try:
        levels, offsets, _ = coder.code_tensor(None, None, grid, step_map)
        coder.finish()
    except BitstreamError as error:
        return str(error)
    return levels.tobytes() if levels.dtype == np.int64 else levels.astype(np.int64).tobytes(), offsets.tobytes()


def tensors():
    """Levels (and step offsets) that visit every path: sparse and dense maps, escapes and
    bypass pieces, the extreme levels, step maps, tall, wide and one-element grids."""
    rng = np.random.default_rng(11)
    cases = []
    for shape, scale in (((16, 12, 9), 0.4), ((8, 10, 10), 3.0), ((4, 9, 13), 300.0), ((3, 5, 7), 1e6)):
        values = rng.laplace(size=shape) * scale * rng.uniform(0.1, 2.0, (shape[0], 1, 1))
        cases.append((np.rint(values).astype(np.int64), None))
    extreme = rng.integers(-3, 4, (3, 6, 5))
    extreme[0, 0, 0], extreme[1, 2, 3], extreme[2, 5, 4] = MAX_ABS_LEVEL, -MAX_ABS_LEVEL, MAX_ABS_LEVEL - 1
    cases.append((extreme, None))
    cases.append((rng.integers(-2, 3, (5, 7, 6)), rng.integers(-40, 41, (7, 6))))
    for shape in ((1, 300, 1), (2, 1, 300), (1, 1, 1), (40, 1, 1), (2, 3, 1)):
        cases.append(((rng.random(shape) < 0.2) * rng.integers(-9, 10, shape), None))
    cases.append((np.zeros((6, 20, 20), dtype=np.int64), None))
    return cases


@pytest.mark.parametrize("index", range(len(tensors())))
def test_the_kernel_codes_what_the_reference_codes(index):
    levels, offsets = tensors()[index]
    payload, ideal = encoded(levels, offsets, kernel=False)
    kernel_payload, kernel_ideal = encoded(levels, offsets, kernel=True)
    assert kernel_payload == payload
    assert kernel_ideal == pytest.approx(ideal, rel=1e-9, abs=1e-9)
    expected = levels.astype(np.int64).tobytes(), (offsets if offsets is not None else np.zeros(levels.shape[1:], np.int64)).tobytes()
    assert decoded(payload, levels.shape, offsets is not None, kernel=False) == expected
    assert decoded(payload, levels.shape, offsets is not None, kernel=True) == expected


def test_the_kernel_fails_where_the_reference_fails():
    """Corrupt payloads (bit flips, words cut, dropped or appended, other grids): the same levels
    or the same error, on both coders."""
    rng = random.Random(3)
    cases = tensors()
    outcomes = 0
    for trial in range(600):
        levels, offsets = cases[trial % len(cases)]
        payload = bytearray(encoded(levels, offsets, kernel=False)[0])
        grid = levels.shape
        kind = trial % 4
        if kind == 0 and payload:
            position = rng.randrange(len(payload))
            payload[position] ^= 1 << rng.randrange(8)
        elif kind == 1:
            payload = payload[:4 * rng.randrange(len(payload) // 4 + 1)]
        elif kind == 2:
            payload += rng.randbytes(4 * rng.randint(1, 3))
        else:
            grid = (grid[0], grid[1] + rng.randint(0, 3), grid[2] + rng.randint(0, 3))
        step_map = offsets is not None
        reference = decoded(bytes(payload), grid, step_map, kernel=False)
        assert decoded(bytes(payload), grid, step_map, kernel=True) == reference, trial
        outcomes += isinstance(reference, str)
    assert outcomes > 100     # the corruptions do reach the errors


def test_the_kernel_refuses_levels_the_syntax_cannot_carry():
    with pytest.raises(BitstreamError, match="exceeds"):
        encoded(np.full((1, 2, 2), MAX_ABS_LEVEL + 1, dtype=np.int64), None, kernel=True)


def test_a_library_built_from_another_kernel_is_not_used():
    """A failed optional rebuild leaves the old library beside a changed kernel.c: it must not be
    used (kernel.py compares the digest the build recorded with the source's)."""
    from common.tools.tokenwise import kernel

    class Library:
        @staticmethod
        def tw_source_digest():
            return b"0123456789abcdef"

    assert kernel._stale(Library())
    assert kernel._stale(object())           # built before the digest existed
    assert not kernel._stale(kernel._load_library())
