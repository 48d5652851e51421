"""MSB-first bit writer and reader with the spec's descriptors u(n), ue(v), se(v).

Only the syntax layer (`common/syntax.py`) calls these; nothing else packs bits.
"""

from common.errors import BitstreamError

# ue(v) codes with more leading zeros than this are rejected: the largest value
# any syntax element may take is below 2**32, so 32 leading zeros suffice.
MAX_UE_LEADING_ZEROS = 32


class BitWriter:
    def __init__(self):
        self._bytes = bytearray()
        self._acc = 0        # pending bits, MSB first
        self._acc_bits = 0   # number of pending bits (< 8 between calls)

    @property
    def num_bits(self):
        return 8 * len(self._bytes) + self._acc_bits

    @property
    def byte_aligned(self):
        return self._acc_bits == 0

    def write_bits(self, value, n):
        if n == 0:
            return
        if value < 0 or value >> n:
            raise ValueError(f"value {value} does not fit in {n} bits")
        self._acc = (self._acc << n) | value
        self._acc_bits += n
        while self._acc_bits >= 8:
            self._acc_bits -= 8
            self._bytes.append((self._acc >> self._acc_bits) & 0xFF)
        self._acc &= (1 << self._acc_bits) - 1

    def write_ue(self, value):
        code = value + 1
        length = code.bit_length()
        self.write_bits(0, length - 1)
        self.write_bits(code, length)

    def write_se(self, value):
        self.write_ue(2 * value - 1 if value > 0 else -2 * value)

    def write_bytes(self, data):
        if self.byte_aligned:
            self._bytes += data
        else:
            for byte in data:
                self.write_bits(byte, 8)

    def getvalue(self):
        if not self.byte_aligned:
            raise ValueError("stream is not byte aligned")
        return bytes(self._bytes)


class BitReader:
    def __init__(self, data, what="stream"):
        self._data = data
        self._pos = 0             # bit position
        self._end = 8 * len(data)
        self._what = what

    @property
    def bits_left(self):
        return self._end - self._pos

    @property
    def byte_aligned(self):
        return self._pos % 8 == 0

    def _need(self, n):
        if n > self.bits_left:
            raise BitstreamError(f"truncated {self._what}: needs {n} more bits, {self.bits_left} left")

    def read_bits(self, n):
        self._need(n)
        value = 0
        pos = self._pos
        for _ in range(n):
            value = (value << 1) | ((self._data[pos >> 3] >> (7 - (pos & 7))) & 1)
            pos += 1
        self._pos = pos
        return value

    def read_ue(self, name):
        leading_zeros = 0
        while self.read_bits(1) == 0:
            leading_zeros += 1
            if leading_zeros > MAX_UE_LEADING_ZEROS:
                raise BitstreamError(f"{name}: ue(v) code longer than {MAX_UE_LEADING_ZEROS} leading zeros")
        return (1 << leading_zeros) - 1 + self.read_bits(leading_zeros)

    def read_se(self, name):
        k = self.read_ue(name)
        return (k + 1) // 2 if k & 1 else -(k // 2)

    def read_bytes(self, n):
        self._need(8 * n)
        if not self.byte_aligned:
            return bytes(self.read_bits(8) for _ in range(n))
        start = self._pos >> 3
        self._pos += 8 * n
        return bytes(self._data[start:start + n])
