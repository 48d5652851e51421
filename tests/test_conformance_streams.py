"""Every conformance stream decodes to its golden MD5s, and the encoder still
produces the golden bytes (a change to either is a bitstream change)."""

import os

import pytest

from common.hashing import tensor_md5
from decoder.decoder import decode_stream
from encoder.conformance import STREAMS, encode_conformance_stream

FOLDER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bitstreams")


def golden_md5s(name):
    with open(os.path.join(FOLDER, name + ".md5")) as f:
        return [tuple(line.split("  ", 1)) for line in f.read().splitlines()]


def test_at_least_five_streams_with_descriptions():
    assert len(STREAMS) >= 5
    for stream in STREAMS:
        for extension in (".bin", ".md5", ".txt"):
            assert os.path.isfile(os.path.join(FOLDER, stream.name + extension))


@pytest.mark.parametrize("stream", STREAMS, ids=lambda s: s.name)
def test_decodes_to_golden_md5(stream):
    with open(os.path.join(FOLDER, stream.name + ".bin"), "rb") as f:
        decoded = decode_stream(f.read())
    actual = [(tensor_md5(array).hex(), name) for name, array in decoded.tensors.items()]
    assert actual == golden_md5s(stream.name)
    assert decoded.hash_checks and all(check.ok for check in decoded.hash_checks)


@pytest.mark.parametrize("stream", STREAMS, ids=lambda s: s.name)
def test_encoder_reproduces_golden_bytes(stream):
    data, _ = encode_conformance_stream(stream)
    with open(os.path.join(FOLDER, stream.name + ".bin"), "rb") as f:
        assert data == f.read(), "encoder output changed: review, then `make conformance`"
