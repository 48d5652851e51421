"""Decoder side of the video anchor: inner bitstream ─► external video decoder ─► picture
(decoded once for the tensors that share it) ─► tiles ─► levels ─► m + v·(M − m)/L ─► dtype
(section Video anchor). The encoder reconstructs with the same code."""

import threading

import numpy as np

from common.codepoints import Tool
from common.errors import BitstreamError
from common.tools.video_anchor.format import dequantise_levels, picture_to_levels
from common.tools.video_anchor.inner_decoder import decode_picture


class InnerPicture:
    """A video-anchor picture decoded once, when the first tensor that lies in it needs it
    (several tensors share one picture with the one-frame packing)."""

    def __init__(self, params, bitstream):
        self.params, self.bitstream = params, bitstream
        self._lock = threading.Lock()
        self._picture = None

    def picture(self):
        with self._lock:
            if self._picture is None:
                anchor = self.params
                (self._picture,) = decode_picture(anchor.inner_codec, self.bitstream, anchor.picture_width,
                                                  anchor.picture_height, anchor.bit_depth)
            return self._picture

    def tensor(self, spec):
        """One of the tensors whose tiles lie in this picture."""
        return video_anchor_tensor(spec, self.picture())


def shared_picture_sources(specs, payloads):
    """Per tensor, the InnerPicture its tiles lie in (None for other tools). A tensor with
    va_shared_picture_flag = 1 takes its predecessor's; its own payload must be empty."""
    sources, current = [], None
    for spec, payload in zip(specs, payloads):
        if spec.tool != Tool.VIDEO_ANCHOR:
            current = None
        elif not spec.anchor.shared_picture:
            current = InnerPicture(spec.anchor, payload)
        elif payload:
            raise BitstreamError(f"tensor '{spec.name}' shares the previous tensor's picture but its data unit "
                                 "carries a payload")
        sources.append(current)
    return sources


def decode_video_anchor_tensor(spec, payload):
    """A tensor alone in its picture: the inner bitstream through the external video decoder."""
    return video_anchor_tensor(spec, InnerPicture(spec.anchor, payload).picture())


def video_anchor_tensor(spec, picture):
    """A tensor's levels from its tiles of the decoded picture, then m + v·(M − m)/L."""
    anchor = spec.anchor
    levels = picture_to_levels(spec.layout, spec.shape, picture, anchor)
    if levels.max(initial=0) >= 1 << anchor.bit_depth:
        raise BitstreamError(f"tensor '{spec.name}': the inner picture has samples beyond {anchor.bit_depth} bits")
    with np.errstate(over="ignore"):
        return dequantise_levels(levels, anchor).astype(spec.numpy_dtype).reshape(spec.array_shape)


BYTES_PER_SAMPLE = 24       # the inner decoder's output file, the picture and its levels


def video_anchor_memory(spec):
    """Bytes decoding this tensor needs at its peak: its picture (once per shared picture) and
    its values."""
    picture = 0 if spec.anchor.shared_picture else BYTES_PER_SAMPLE * spec.anchor.picture_width * \
        spec.anchor.picture_height
    return picture + 16 * spec.num_elements
