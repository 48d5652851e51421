"""common/bitio.py: u(n), ue(v), se(v) and byte round trips, boundary values, malformed codes."""

import pytest
from hypothesis import given, strategies as st

from common.bitio import MAX_UE_LEADING_ZEROS, BitReader, BitWriter
from common.errors import BitstreamError

UE_BOUNDARY = [0, 1, 2, 3, 6, 7, 254, 255, 256, (1 << 16) - 2, (1 << 16) - 1, (1 << 31) - 1,
               (1 << 32) - 2, (1 << 32) - 1, (1 << 33) - 2]
SE_BOUNDARY = [0, 1, -1, 2, -2, 127, -128, (1 << 31) - 1, -(1 << 31), (1 << 32) - 1, -((1 << 32) - 1)]


def _pad(writer):
    while not writer.byte_aligned:
        writer.write_bits(0, 1)
    return writer.getvalue()


@st.composite
def element_lists(draw):
    """A random sequence of (kind, value[, n]) elements."""
    kinds = st.one_of(
        st.integers(1, 64).flatmap(lambda n: st.tuples(st.just("u"), st.integers(0, (1 << n) - 1), st.just(n))),
        st.tuples(st.just("ue"), st.integers(0, (1 << 33) - 2)),
        st.tuples(st.just("se"), st.integers(-(1 << 32) + 1, (1 << 32) - 1)),
        st.tuples(st.just("bytes"), st.binary(max_size=12)))
    return draw(st.lists(kinds, max_size=30))


def _write(writer, element):
    kind, value = element[0], element[1]
    if kind == "u":
        writer.write_bits(value, element[2])
    elif kind == "ue":
        writer.write_ue(value)
    elif kind == "se":
        writer.write_se(value)
    else:
        writer.write_bytes(value)


def _read(reader, element):
    kind = element[0]
    if kind == "u":
        return reader.read_bits(element[2])
    if kind == "ue":
        return reader.read_ue("x")
    if kind == "se":
        return reader.read_se("x")
    return reader.read_bytes(len(element[1]))


@given(element_lists())
def test_mixed_round_trip(elements):
    writer = BitWriter()
    for element in elements:
        _write(writer, element)
    num_bits = writer.num_bits
    data = _pad(writer)
    assert len(data) == (num_bits + 7) // 8
    reader = BitReader(data)
    assert [_read(reader, e) for e in elements] == [e[1] for e in elements]
    assert reader.bits_left == 8 * len(data) - num_bits
    assert reader.bits_left < 8


@pytest.mark.parametrize("value", UE_BOUNDARY)
@pytest.mark.parametrize("misalign", [0, 3])
def test_ue_boundaries(value, misalign):
    writer = BitWriter()
    writer.write_bits(0, misalign)
    writer.write_ue(value)
    # Exp-Golomb length: 2 * floor(log2(v + 1)) + 1 bits.
    assert writer.num_bits - misalign == 2 * (value + 1).bit_length() - 1
    reader = BitReader(_pad(writer))
    reader.read_bits(misalign)
    assert reader.read_ue("x") == value


@pytest.mark.parametrize("value", SE_BOUNDARY)
def test_se_boundaries(value):
    writer = BitWriter()
    writer.write_se(value)
    reader = BitReader(_pad(writer))
    assert reader.read_se("x") == value


def test_ue_and_se_code_words():
    """The code words of the spec's table (H.264 9.1): 0 -> 1, 1 -> 010, 2 -> 011, 3 -> 00100;
    se: 1 -> ue 1, -1 -> ue 2."""
    writer = BitWriter()
    for v in (0, 1, 2, 3):
        writer.write_ue(v)
    writer.write_se(1)
    writer.write_se(-1)
    writer.write_bits(0, 8 - writer.num_bits % 8)
    bits = "".join(f"{b:08b}" for b in writer.getvalue())
    assert bits.startswith("1" "010" "011" "00100" "010" "011")


@pytest.mark.parametrize("n", [1, 7, 8, 9, 31, 32, 33, 64])
def test_u_boundaries(n):
    writer = BitWriter()
    for value in (0, 1, (1 << n) - 1, (1 << (n - 1))):
        writer.write_bits(value, n)
    reader = BitReader(_pad(writer))
    assert [reader.read_bits(n) for _ in range(4)] == [0, 1, (1 << n) - 1, 1 << (n - 1)]


@pytest.mark.parametrize("value,n", [(2, 1), (256, 8), (-1, 8), (1 << 32, 32)])
def test_u_value_too_wide_is_refused(value, n):
    with pytest.raises(ValueError):
        BitWriter().write_bits(value, n)


def test_ue_with_32_leading_zeros_is_the_longest_accepted():
    # 32 zeros, a one, 32 info bits: value 2^32 - 1 + info.
    data = bytes([0, 0, 0, 0, 0x80, 0, 0, 0, 0x00])
    assert BitReader(data).read_ue("x") == (1 << 32) - 1
    assert MAX_UE_LEADING_ZEROS == 32


@pytest.mark.parametrize("zeros", [33, 40, 64, 200])
def test_ue_with_more_than_32_leading_zeros_is_rejected(zeros):
    bits = "0" * zeros + "1" + "0" * zeros
    bits += "0" * (-len(bits) % 8)
    data = int(bits, 2).to_bytes(len(bits) // 8, "big")
    reader = BitReader(data)
    with pytest.raises(BitstreamError, match="leading zeros"):
        reader.read_ue("some_element")
    # ...and it gives up right after the 33rd zero instead of reading on.
    assert reader.bits_left == 8 * len(data) - (MAX_UE_LEADING_ZEROS + 1)


def test_all_zero_stream_is_a_clean_error():
    with pytest.raises(BitstreamError):
        BitReader(bytes(1000)).read_ue("x")


@pytest.mark.parametrize("what", ["u", "ue", "se", "bytes"])
def test_reading_past_the_end_is_a_bitstream_error(what):
    reader = BitReader(b"\x00", what="unit header")
    reader.read_bits(3)
    with pytest.raises(BitstreamError, match="truncated unit header"):
        if what == "u":
            reader.read_bits(6)
        elif what == "ue":
            reader.read_ue("x")          # 5 zeros left, then the stream ends
        elif what == "se":
            reader.read_se("x")
        else:
            reader.read_bytes(1)


def test_unaligned_bytes_and_alignment():
    writer = BitWriter()
    writer.write_bits(1, 3)
    assert not writer.byte_aligned
    writer.write_bytes(b"\xab\xcd")
    with pytest.raises(ValueError):
        writer.getvalue()
    writer.write_bits(0, 5)
    reader = BitReader(writer.getvalue())
    assert reader.read_bits(3) == 1
    assert reader.read_bytes(2) == b"\xab\xcd"
    assert reader.bits_left == 5
