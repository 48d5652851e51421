"""Decoded-feature hash: MD5 of a tensor's bytes (C order, little-endian, decoded dtype)."""

import hashlib

import numpy as np


def tensor_md5(array):
    little_endian = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    return hashlib.md5(little_endian.tobytes()).digest()
