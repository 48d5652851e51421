"""The ANS payload format both entropy-coded tools use: constriction 0.5.0's stack.AnsCoder data
as little-endian 32-bit words."""

import numpy as np

from common.errors import BitstreamError


def ans_decoder(payload, what):
    """A constriction AnsCoder reading `payload`; a BitstreamError naming `what` when the payload
    is not whole words or not valid ANS data."""
    import constriction  # imported here so that importing this module stays cheap

    if len(payload) % 4:
        raise BitstreamError(f"{what}: length is not a multiple of 4 bytes")
    words = np.frombuffer(payload, dtype="<u4").astype(np.uint32)
    try:
        return constriction.stream.stack.AnsCoder(words)
    except ValueError as exc:   # e.g. "ANS compressed data never ends in a zero word"
        raise BitstreamError(f"{what} is corrupt ({exc})") from None


def ans_payload(coder):
    """The payload bytes of an AnsCoder's compressed data."""
    return coder.get_compressed().astype("<u4").tobytes()
