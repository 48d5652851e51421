"""The compiled level coder (kernel.c) behind TokenwiseEntropyCoder: the same payload as sq.py's
numpy reference, which tests hold it to byte for byte, at tens of millions of points per second.

pip builds kernel.c into `_kernel*.so` beside this file (setup.py; optional: without a C
compiler the install goes on and the reference codes everything). Its functions use no Python
API and are called through ctypes; FCRS_TOKENWISE_KERNEL=0 turns it off. sq.py passes its
constants in (`load`), so they are declared once.
"""

import ctypes
import hashlib
import os
import sys
from pathlib import Path

import numpy as np

from common.errors import BitstreamError

_OK, _DATA_LEFT_OVER, _LEVEL_OVERFLOW, _NO_MEMORY = range(4)
_TABLES = ("sig_local_class", "level_local_class", "sig_thresholds", "level_thresholds")
_SCALARS = ("rescale_limit", "mag_cap", "max_abs_level", "bypass_chunk_bits", "eg_max_order", "num_eg_symbols",
            "num_sig_contexts", "num_level_contexts", "num_sign_contexts")
# Lengths of kernel.c's tw_constants arrays, in _TABLES order, and its initial SIG count rows.
_TABLE_LENGTHS = (13, 19, 7, 4)
_SIG_CLASSES = 9


class _Constants(ctypes.Structure):
    _fields_ = ([(name, ctypes.c_int64 * length) for name, length in zip(_TABLES, _TABLE_LENGTHS)]
                + [("sig_initial_counts", (ctypes.c_int64 * 2) * _SIG_CLASSES)]
                + [(name, ctypes.c_int64) for name in _SCALARS])


class _Result(ctypes.Structure):
    _fields_ = [("state", ctypes.c_uint64), ("bulk_words", ctypes.c_int64),
                ("words", ctypes.POINTER(ctypes.c_uint32)), ("num_words", ctypes.c_int64),
                ("ideal_bits", ctypes.c_double), ("chunk", ctypes.c_int64)]


def _library_path():
    import importlib.machinery

    folder = Path(__file__).resolve().parent
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        if (folder / f"_kernel{suffix}").exists():
            return folder / f"_kernel{suffix}"
    return None


_library = None


def _stale(lib):
    """True when the built library was compiled from another kernel.c than the one beside it (an
    optional rebuild that failed leaves the old library in place)."""
    source = Path(__file__).with_name("kernel.c")
    if not source.exists():         # an installed package without its sources
        return False
    if not hasattr(lib, "tw_source_digest"):
        return True
    lib.tw_source_digest.restype = ctypes.c_char_p
    return lib.tw_source_digest().decode() != hashlib.sha256(source.read_bytes()).hexdigest()[:16]


def _load_library():
    global _library
    if _library is None:
        path = _library_path()
        _library = False
        if path is not None:
            lib = ctypes.CDLL(str(path))
            if _stale(lib):
                print(f"warning: {path.name} was built from another kernel.c; the token-wise tool uses the numpy "
                      f"reference until `pip install -e .` rebuilds it", file=sys.stderr)
                return None
            lib.tw_code_levels.restype = ctypes.c_int
            lib.tw_code_levels.argtypes = [
                ctypes.POINTER(_Constants), ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,
                ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.POINTER(ctypes.c_int32),
                ctypes.POINTER(ctypes.c_uint32), ctypes.c_int64, ctypes.POINTER(_Result)]
            lib.tw_free.restype = None
            lib.tw_free.argtypes = [ctypes.POINTER(ctypes.c_uint32)]
            _library = lib
    return _library or None


def enabled():
    """False when FCRS_TOKENWISE_KERNEL=0 (read at every call: tests switch it)."""
    return os.environ.get("FCRS_TOKENWISE_KERNEL", "1") != "0"


def load(constants):
    """A LevelKernel for sq.py's `constants` (a dict of kernel.c's tw_constants fields), or None
    where the kernel is not built."""
    lib = _load_library()
    return None if lib is None else LevelKernel(lib, constants)


class LevelKernel:
    """kernel.c's tw_code_levels with one set of constants."""

    def __init__(self, lib, constants):
        self._lib = lib
        self._constants = _Constants()
        for name in _TABLES:
            getattr(self._constants, name)[:] = [int(v) for v in constants[name]]
        for row, counts in zip(self._constants.sig_initial_counts, constants["sig_initial_counts"]):
            row[:] = [int(v) for v in counts]
        for name in _SCALARS:
            setattr(self._constants, name, int(constants[name]))
        self._max_abs_level = int(constants["max_abs_level"])

    def _call(self, encoding, levels_hwc, chunk, limit, scratch, words):
        result = _Result()
        height, width, channels = levels_hwc.shape
        status = self._lib.tw_code_levels(
            ctypes.byref(self._constants), int(encoding), channels, height, width, int(chunk), int(limit),
            int(scratch), levels_hwc.ctypes.data_as(ctypes.POINTER(ctypes.c_int32)),
            words.ctypes.data_as(ctypes.POINTER(ctypes.c_uint32)), len(words), ctypes.byref(result))
        if status == _DATA_LEFT_OVER:
            raise BitstreamError("entropy payload has data left over after the last symbol")
        if status == _LEVEL_OVERFLOW:
            raise BitstreamError(f"decoded level exceeds {self._max_abs_level}: the entropy payload is corrupt")
        if status == _NO_MEMORY:
            raise MemoryError("the token-wise kernel could not allocate its working memory")
        if status != _OK:
            raise RuntimeError(f"the token-wise kernel refused its constants or scratch size (status {status})")
        return result

    def encode_levels(self, levels, chunk, limit, scratch):
        """(the payload words of the levels' symbols, ANS-encoded from an empty coder; the chunk
        size after the last chunk; the symbols' ideal bits) for levels (C, H, W) within
        ±max_abs_level (no copy when they are int32 held position-major, as the quantiser leaves
        them). `scratch`: elements of the largest chunk."""
        levels = np.asarray(levels)
        if levels.dtype != np.int32 and levels.size and np.abs(levels).max() > min(self._max_abs_level, 2 ** 31 - 1):
            raise BitstreamError(f"a level exceeds {self._max_abs_level}, the largest the syntax carries")
        levels_hwc = np.ascontiguousarray(levels.transpose(1, 2, 0), dtype=np.int32)   # a wave's elements together
        result = self._call(True, levels_hwc, chunk, limit, scratch, np.zeros(0, dtype=np.uint32))
        try:
            words = (np.ctypeslib.as_array(result.words, shape=(result.num_words,)).copy() if result.num_words
                     else np.zeros(0, dtype=np.uint32))
        finally:
            self._lib.tw_free(result.words)
        return words, result.chunk, result.ideal_bits

    def decode_levels(self, grid, chunk, limit, scratch, words):
        """(levels (C, H, W) int32, a view of a position-major array; the chunk size after the
        last chunk; the payload's words left, in canonical form) decoding from an ANS coder's
        words (`constriction` AnsCoder.get_compressed())."""
        channels, height, width = grid
        levels_hwc = np.zeros((height, width, channels), dtype=np.int32)
        words = np.ascontiguousarray(words, dtype=np.uint32)
        result = self._call(False, levels_hwc, chunk, limit, scratch, words)
        state = int(result.state)
        tail = [state & 0xFFFFFFFF, state >> 32] if state >> 32 else ([state] if state else [])
        left = np.concatenate([words[:result.bulk_words], np.array(tail, dtype=np.uint32)])
        return levels_hwc.transpose(2, 0, 1), result.chunk, left
