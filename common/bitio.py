"""MSB-first bit writer and reader with the spec's descriptors u(n), ue(v), se(v), on the
bitstring package (its Exp-Golomb codes are the spec's ue(v) and se(v)).

Only the syntax layer (`common/syntax.py`) calls these; nothing else packs bits. What bitstring
does not check is checked here: a value that does not fit its width, a read past the end (a
BitstreamError naming what was being read), an ue(v) code with too many leading zeros.
"""

import bitstring

from common.errors import BitstreamError

# ue(v) codes with more leading zeros than this are rejected: the largest value
# any syntax element may take is below 2**32, so 32 leading zeros suffice.
MAX_UE_LEADING_ZEROS = 32
_ONE = bitstring.Bits.from_string("0b1")


class BitWriter:
    def __init__(self):
        self._bits = bitstring.BitArray()

    @property
    def num_bits(self):
        return len(self._bits)

    @property
    def byte_aligned(self):
        return len(self._bits) % 8 == 0

    def write_bits(self, value, n):
        if n == 0:
            return
        if value < 0 or value >> n:
            raise ValueError(f"value {value} does not fit in {n} bits")
        self._bits.append(bitstring.Bits.from_dtype(f"u{n}", value))

    def write_ue(self, value):
        self._bits.append(bitstring.Bits.from_dtype("ue", value))

    def write_se(self, value):
        self._bits.append(bitstring.Bits.from_dtype("se", value))

    def write_bytes(self, data):
        self._bits.append(bitstring.Bits.from_bytes(bytes(data)))

    def getvalue(self):
        if not self.byte_aligned:
            raise ValueError("stream is not byte aligned")
        return self._bits.to_bytes()


class BitReader:
    def __init__(self, data, what="stream"):
        self._bits = bitstring.Bits.from_bytes(bytes(data))
        self._reader = bitstring.Reader(self._bits)
        self._end = len(self._bits)
        self._what = what

    @property
    def bits_left(self):
        return self._end - self._reader.pos

    @property
    def byte_aligned(self):
        return self._reader.pos % 8 == 0

    def _need(self, n):
        if n > self.bits_left:
            raise BitstreamError(f"truncated {self._what}: needs {n} more bits, {self.bits_left} left")

    def read_bits(self, n):
        if n == 0:
            return 0
        self._need(n)
        return self._reader.read_value(f"u{n}")

    def read_ue(self, name):
        start = self._reader.pos
        first_one = self._bits.find(_ONE, start=start)
        leading_zeros = (self._end if first_one is None else first_one) - start
        if leading_zeros > MAX_UE_LEADING_ZEROS:
            self._reader.pos = start + MAX_UE_LEADING_ZEROS + 1      # where a bit-serial reader gives up
            raise BitstreamError(f"{name}: ue(v) code longer than {MAX_UE_LEADING_ZEROS} leading zeros")
        self._need(2 * leading_zeros + 1)
        return self._reader.read_value("ue")

    def read_se(self, name):
        k = self.read_ue(name)
        return (k + 1) // 2 if k & 1 else -(k // 2)

    def read_bytes(self, n):
        self._need(8 * n)
        if n == 0:
            return b""
        return self._reader.read_value(f"bytes{n}")
