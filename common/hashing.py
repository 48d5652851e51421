"""Hashes of decoded features.

tensor_md5: the MD5 of a tensor's values (C order, little-endian, decoded dtype): what
bitstreams/*.md5 list and the CTC records.

integrity_md5: the decoded_feature_hash's dfh_md5, which covers everything the decoder outputs
and the stream it came from: MD5(P ‖ H ‖ V) with P = MD5 of the stream's bytes before the hash
unit (stream header and every unit, reserved ones included: a changed bit anywhere in them
changes every hash), H the tensor's canonical header (name, layout, dtype, batch axis, decoded
shape) and V its values as tensor_md5 reads them.
"""

import hashlib
import struct

import numpy as np


def _little_endian(array):
    """The array's values in C order, little-endian, as a buffer (no copy when it already is)."""
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).reshape(-1).view(np.uint8)


def tensor_md5(array):
    return hashlib.md5(_little_endian(array)).digest()


def covered_digest(prefix):
    """P: the MD5 of the stream's bytes before the decoded_feature_hash unit's header."""
    return hashlib.md5(prefix).digest()


def canonical_header(spec):
    """H: u16 name length, UTF-8 name, u8 layout, u8 dtype, u8 batch flag, u8 rank, u32 per axis
    of the decoded shape (big-endian)."""
    name = spec.name.encode("utf-8")
    shape = spec.array_shape
    return (struct.pack(">H", len(name)) + name + bytes([spec.layout, spec.dtype, int(spec.batch_axis), len(shape)])
            + b"".join(struct.pack(">I", n) for n in shape))


def integrity_md5(covered, spec, array):
    digest = hashlib.md5(covered + canonical_header(spec))
    digest.update(_little_endian(array))
    return digest.digest()
