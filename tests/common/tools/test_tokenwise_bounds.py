"""The token-wise decoder's cost bounds (sq.py, section "Decoding cost"): the early exits give
what decoding to the end gives, and the memory estimate covers the measured peak."""

import random
import tracemalloc

import numpy as np
import pytest

from common.errors import FcrsError
from common.tools.tokenwise.sq import TokenwiseEntropyCoder
from decoder.decoder import decode_stream
from tests.fuzz import inflated, parameter_set, streams


def outcome(data):
    """('error', message) or ('decoded', {name: bytes}) of a stream."""
    try:
        decoded = decode_stream(data)
    except FcrsError as error:
        return "error", str(error)
    return "decoded", {name: array.tobytes() for name, array in decoded.tensors.items()}


def declared_elements(data):
    """Feature points the stream's parameter set declares (0 when it does not parse)."""
    from common.features import from_tensor_info

    try:
        return sum(from_tensor_info(t).num_elements for t in parameter_set(data).fps_tensors)
    except FcrsError:
        return 0


def test_the_early_exits_give_what_decoding_to_the_end_gives(monkeypatch):
    """Shape-inflated token-wise streams (the fuzzer's mutation), small enough to decode in full
    quickly: the outcome with the exits equals the outcome without them, and both exits fire."""
    sources = {name: data for name, (data, _) in streams().items() if name.startswith(("tokens", "chw", "extreme"))}
    rng = random.Random(7)
    cases = []
    while len(cases) < 40:
        name = rng.choice(sorted(sources))
        mutated = inflated(sources[name], rng)
        if mutated is not None and 0 < declared_elements(mutated) <= 20_000:
            cases.append(mutated)
    kernel_outcomes = [outcome(data) for data in cases]     # the compiled kernel, where built
    monkeypatch.setenv("FCRS_TOKENWISE_KERNEL", "0")           # the reference, whose exits are observed
    fired = []
    original = TokenwiseEntropyCoder._rest_is_zero

    def recording(self, stats):
        try:
            result = original(self, stats)
        except FcrsError:
            fired.append("stuck")
            raise
        if result:
            fired.append("exhausted")
        return result

    monkeypatch.setattr(TokenwiseEntropyCoder, "_rest_is_zero", recording)
    with_exits = [outcome(data) for data in cases]
    monkeypatch.setattr(TokenwiseEntropyCoder, "_rest_is_zero", lambda self, stats: False)
    assert with_exits == [outcome(data) for data in cases] == kernel_outcomes
    assert "stuck" in fired and "exhausted" in fired


@pytest.mark.parametrize("channel_offsets", [False, True])
@pytest.mark.parametrize("shape", [(1, 300, 300), (2, 1, 600), (2, 600, 1), (20000, 1, 1), (500, 3, 3),
                                   (64, 30, 30)])
def test_the_memory_estimate_covers_the_peak(shape, channel_offsets, monkeypatch):
    """The numpy reference's traced peak (the compiled kernel's C allocations are not traced; it
    allocates within the same terms, fewer bytes each: kernel.c's levels_state)."""
    monkeypatch.setenv("FCRS_TOKENWISE_KERNEL", "0")
    from common.features import from_tensor_info
    from encoder.encoder import encode_features
    from encoder.options import default_options
    from common.tools.tokenwise.decode import tokenwise_memory

    x = (np.random.default_rng(0).normal(size=shape) * 4).astype(np.float32)
    options = default_options()
    options.update(QP=40, DecodedFeatureHash=True)
    offsets = None
    if channel_offsets:             # a per-channel step for every element: the steps are per element too
        from encoder.tools.interface import StepOffsets

        offsets = {"": StepOffsets(channels=np.arange(shape[0]) % 5 - 2)}
    stream = encode_features({"": x}, options, step_offsets=offsets).stream
    decode_stream(stream)     # first-use imports are not the tensor's memory: keep them out of the peak
    tracemalloc.start()
    try:
        decoded = decode_stream(stream)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    estimate = tokenwise_memory(decoded.specs[0])
    assert peak <= estimate, (peak, estimate)
