"""Unit framing: stream_header(), then length-prefixed units until END_OF_STREAM."""

from common.codepoints import STREAM_MAGIC, STREAM_VERSION_MAJOR, STREAM_VERSION_MINOR, UnitType
from common.errors import BitstreamError
from common.syntax import SyntaxReader, SyntaxStructure, SyntaxWriter
from common.syntax_structures import stream_header, unit_header

UNIT_HEADER_BYTES = 5
STREAM_HEADER_BYTES = 6


def write_stream(units, trace=None):
    """units: iterable of (UnitType, payload bytes, payload Trace or None).

    Returns the stream bytes; `trace` gets each unit header followed by the
    lines of that unit's payload, the order in which the decoder reads them.
    """
    rw = SyntaxWriter(trace)
    stream_header(rw, SyntaxStructure(sh_magic=STREAM_MAGIC, sh_version_major=STREAM_VERSION_MAJOR,
                                      sh_version_minor=STREAM_VERSION_MINOR))
    for unit_type, payload, payload_trace in units:
        unit_header(rw, SyntaxStructure(unit_type=unit_type, unit_payload_size=len(payload)))
        rw.bits.write_bytes(payload)
        if trace is not None and payload_trace is not None:
            trace.lines += payload_trace.lines
    unit_header(rw, SyntaxStructure(unit_type=UnitType.END_OF_STREAM, unit_payload_size=0))
    return rw.getvalue()


def iter_units(data, trace=None):
    """Yield the (unit_type, payload) pairs of a stream, END_OF_STREAM excluded.

    Checks magic, version and framing; skips units of unknown type; a stream
    without its END_OF_STREAM unit, or with bytes after it, is an error.
    """
    if len(data) < STREAM_HEADER_BYTES or int.from_bytes(data[:4], "big") != STREAM_MAGIC:
        raise BitstreamError("not an FCRS bitstream (bad magic number)")
    header = SyntaxStructure()
    if int(data[4]) != STREAM_VERSION_MAJOR:
        raise BitstreamError(f"unsupported stream version {data[4]}.{data[5]} "
                             f"(this decoder reads version {STREAM_VERSION_MAJOR}.x)")
    stream_header(SyntaxReader(data[:STREAM_HEADER_BYTES], trace), header)
    pos = STREAM_HEADER_BYTES
    while True:
        if pos + UNIT_HEADER_BYTES > len(data):
            raise BitstreamError(f"truncated stream: no end_of_stream unit (stream ends at byte {len(data)})")
        uh = SyntaxStructure()
        unit_header(SyntaxReader(data[pos:pos + UNIT_HEADER_BYTES], trace, "unit header"), uh)
        pos += UNIT_HEADER_BYTES
        end = pos + uh.unit_payload_size
        if end > len(data):
            raise BitstreamError(f"truncated stream: unit of type {uh.unit_type} needs "
                                 f"{uh.unit_payload_size} bytes, {len(data) - pos} left")
        payload = data[pos:end]
        pos = end
        if uh.unit_type == UnitType.END_OF_STREAM:
            if pos != len(data):
                raise BitstreamError(f"{len(data) - pos} bytes after the end_of_stream unit")
            return
        if uh.unit_type in UnitType._value2member_map_:
            yield UnitType(uh.unit_type), payload
        elif trace is not None:
            trace.note(f"skipped unit of unknown type {uh.unit_type}")


def unit_start(data, unit_type):
    """Byte offset of the header of the last unit of `unit_type` in a well-framed stream, or None."""
    found, pos = None, STREAM_HEADER_BYTES
    while pos + UNIT_HEADER_BYTES <= len(data):
        if data[pos] == unit_type:
            found = pos
        pos += UNIT_HEADER_BYTES + int.from_bytes(data[pos + 1:pos + UNIT_HEADER_BYTES], "big")
    return found
