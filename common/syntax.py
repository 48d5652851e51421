"""The read/write object every syntax structure is declared against.

A syntax structure is one Python function over `rw` and a structure `s` (the
FFmpeg CBS pattern)::

    def tensor_info(rw, s):
        rw.u(4, s, "ti_layout_idc", hi=Layout.max_code())
        if s.ti_layout_idc == Layout.CHW:
            rw.ue(s, "ti_height_minus1", hi=MAX_DIM - 1)

With a `SyntaxWriter` the call writes `s.ti_layout_idc`; with a `SyntaxReader`
it reads the value and stores it in `s`. Both check the range, so a value the
reader would refuse can never be written. `docs/bitstream.md` is generated
from the same functions (`common/specdoc.py`), so the spec cannot drift.

Both sides emit the same trace line per element: `name  descriptor : value`.
"""

import struct

from common.bitio import BitReader, BitWriter
from common.errors import BitstreamError

MAX_UE_VALUE = (1 << 32) - 2


class SyntaxStructure:
    """Attribute bag holding one syntax structure's elements by their spec names."""

    def __init__(self, **elements):
        self.__dict__.update(elements)

    def __repr__(self):
        items = ", ".join(f"{k}={v!r}" for k, v in self.__dict__.items())
        return f"{type(self).__name__}({items})"

    def __eq__(self, other):
        return type(self) is type(other) and self.__dict__ == other.__dict__


class Trace:
    """Collects `name  descriptor : value` lines; written by `--trace FILE`."""

    def __init__(self):
        self.lines = []

    def element(self, name, descriptor, value):
        self.lines.append(f"{name:<44} {descriptor:<9}: {value}")

    def note(self, text):
        self.lines.append(f"# {text}")

    def write(self, path):
        from common.featio import write_text
        write_text(path, "\n".join(self.lines) + "\n")


def _element_name(name, idx):
    return name if idx is None else f"{name}[{idx}]"


def _check_range(name, value, lo, hi):
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise BitstreamError(f"{name} = {value} is outside its range [{lo}, {hi}]")


class _SyntaxAccess:
    """Shared plumbing of the writer and the reader."""

    is_reader = False

    def __init__(self, trace):
        self.trace = trace

    def _trace(self, name, descriptor, value):
        if self.trace is not None:
            self.trace.element(name, descriptor, value)

    # Descriptors, spelled as in the spec.
    def u(self, n, s, name, lo=None, hi=None, idx=None):
        lo = 0 if lo is None else lo                 # u(n) always holds 0 .. 2^n - 1
        hi = (1 << n) - 1 if hi is None else hi
        return self._value(s, name, idx, f"u({n})", lo, hi, self._u_io(n))

    def flag(self, s, name, idx=None):
        return self._value(s, name, idx, "u(1)", 0, 1, self._u_io(1))

    def ue(self, s, name, lo=0, hi=MAX_UE_VALUE, idx=None):
        return self._value(s, name, idx, "ue(v)", lo, hi, self._ue_io(name))

    def se(self, s, name, lo, hi, idx=None):
        return self._value(s, name, idx, "se(v)", lo, hi, self._se_io(name))


class SyntaxWriter(_SyntaxAccess):
    def __init__(self, trace=None):
        super().__init__(trace)
        self.bits = BitWriter()

    def _u_io(self, n):
        return lambda v: self.bits.write_bits(v, n)

    def _ue_io(self, name):
        return self.bits.write_ue

    def _se_io(self, name):
        return self.bits.write_se

    def _value(self, s, name, idx, descriptor, lo, hi, write):
        value = getattr(s, name) if idx is None else getattr(s, name)[idx]
        value = int(value)
        _check_range(_element_name(name, idx), value, lo, hi)
        write(value)
        self._trace(_element_name(name, idx), descriptor, value)
        return value

    def f32(self, s, name):
        value = float(getattr(s, name))
        (word,) = struct.unpack(">I", struct.pack(">f", value))
        self.bits.write_bits(word, 32)
        self._trace(name, "f(32)", struct.unpack(">f", struct.pack(">I", word))[0])
        return value

    def bytes(self, s, name, length):
        data = bytes(getattr(s, name))
        if len(data) != length:
            raise BitstreamError(f"{name} has {len(data)} bytes, the syntax says {length}")
        self.bits.write_bytes(data)
        self._trace(name, f"b(8)[{length}]", data.hex() if length <= 32 else f"<{length} bytes>")
        return data

    def infer(self, s, name, value):
        if getattr(s, name, value) != value:
            raise BitstreamError(f"{name} must be {value} when not present, is {getattr(s, name)}")
        setattr(s, name, value)

    def items(self, s, name, count, factory):
        entries = getattr(s, name)
        if len(entries) != count:
            raise BitstreamError(f"{name} has {len(entries)} entries, the syntax says {count}")
        return entries

    def sub(self, s, name):
        return getattr(s, name)

    def rest(self, s, name):
        data = bytes(getattr(s, name))
        self.bits.write_bytes(data)
        self._trace(name, "b(8)[*]", f"<{len(data)} bytes>")
        return data

    def require(self, condition, message):
        if not condition:
            raise BitstreamError(f"cannot write: {message}")

    def byte_alignment(self):
        while not self.bits.byte_aligned:
            self.bits.write_bits(0, 1)

    def getvalue(self):
        return self.bits.getvalue()


class SyntaxReader(_SyntaxAccess):
    is_reader = True

    def __init__(self, data, trace=None, what="stream"):
        super().__init__(trace)
        self.bits = BitReader(data, what)

    def _u_io(self, n):
        return lambda _: self.bits.read_bits(n)

    def _ue_io(self, name):
        return lambda _: self.bits.read_ue(name)

    def _se_io(self, name):
        return lambda _: self.bits.read_se(name)

    def _value(self, s, name, idx, descriptor, lo, hi, read):
        value = read(None)
        _check_range(_element_name(name, idx), value, lo, hi)
        if idx is None:
            setattr(s, name, value)
        else:
            values = getattr(s, name, None)
            if values is None:
                values = []
                setattr(s, name, values)
            values.append(value)
        self._trace(_element_name(name, idx), descriptor, value)
        return value

    def f32(self, s, name):
        word = self.bits.read_bits(32)
        value = struct.unpack(">f", struct.pack(">I", word))[0]
        setattr(s, name, value)
        self._trace(name, "f(32)", value)
        return value

    def bytes(self, s, name, length):
        data = self.bits.read_bytes(length)
        setattr(s, name, data)
        self._trace(name, f"b(8)[{length}]", data.hex() if length <= 32 else f"<{length} bytes>")
        return data

    def infer(self, s, name, value):
        setattr(s, name, value)

    def items(self, s, name, count, factory):
        entries = [factory() for _ in range(count)]
        setattr(s, name, entries)
        return entries

    def sub(self, s, name):
        structure = SyntaxStructure()
        setattr(s, name, structure)
        return structure

    def rest(self, s, name):
        if not self.bits.byte_aligned:
            raise BitstreamError(f"{name}: not byte aligned")
        data = self.bits.read_bytes(self.bits.bits_left // 8)
        setattr(s, name, data)
        self._trace(name, "b(8)[*]", f"<{len(data)} bytes>")
        return data

    def require(self, condition, message):
        if not condition:
            raise BitstreamError(message)

    def byte_alignment(self):
        while not self.bits.byte_aligned:
            if self.bits.read_bits(1) != 0:
                raise BitstreamError("byte_alignment bit is not zero")

    @property
    def bits_left(self):
        return self.bits.bits_left

    def read_remaining_bytes(self):
        return self.bits.read_bytes(self.bits.bits_left // 8)
