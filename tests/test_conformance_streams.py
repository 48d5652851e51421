"""Every conformance stream decodes to its golden MD5s, and the encoder still
produces the golden bytes (a change to either is a bitstream change)."""

import os
import shutil

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


def skip_without(programs):
    missing = [p for p in programs if shutil.which(p) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} on PATH")


@pytest.mark.parametrize("stream", STREAMS, ids=lambda s: s.name)
def test_decodes_to_golden_md5(stream):
    skip_without(stream.decoder_programs)
    with open(os.path.join(FOLDER, stream.name + ".bin"), "rb") as f:
        decoded = decode_stream(f.read())
    actual = [(tensor_md5(array).hex(), name) for name, array in decoded.tensors.items()]
    assert actual == golden_md5s(stream.name)
    assert decoded.hash_checks and all(check.ok for check in decoded.hash_checks)


@pytest.mark.parametrize("stream", STREAMS, ids=lambda s: s.name)
def test_encoder_reproduces_golden_bytes(stream):
    skip_without(stream.encoder_programs)
    with open(os.path.join(FOLDER, stream.name + ".bin"), "rb") as f:
        golden = f.read()
    if "x265" in stream.encoder_programs:     # another x265 version may code the picture differently
        from encoder.conformance import recorded_encoder_info
        from encoder.tools.video_anchor.inner_encoder import encoder_version
        if recorded_encoder_info(golden) != [encoder_version("hevc")]:
            pytest.skip(f"stream made by {recorded_encoder_info(golden)}, not {encoder_version('hevc')}")
    data, _ = encode_conformance_stream(stream)
    assert data == golden, "encoder output changed: review, then `make conformance`"
