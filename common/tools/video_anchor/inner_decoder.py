"""Decoding a video anchor's inner bitstream with an external video decoder.

    HEVC: libde265-dec265 -q -t 0 -o rec.yuv inner.bit
    VVC:  DecoderAppStatic -b inner.bit -o rec.yuv -d <bit depth>     (VTM, when on PATH)
          vvdecapp -b inner.bit -o rec.yuv -t 1                      (VVdeC, otherwise)

Both VVC decoders conform, so either gives the same samples; FCRS_VVC_DECODER=vtm or
=vvdec in the environment chooses one, or names a DecoderAppStatic / vvdecapp program by path.

The decoder writes planar YUV (samples of more than 8 bits as little-endian
16-bit words); its files live in a TemporaryDirectory that is removed whatever
happens. A stream that does not decode to exactly one picture of the expected
size is a BitstreamError; a missing or failing program an ExternalToolError.
"""

import os
import re
import shutil
import tempfile

import numpy as np

from common.codepoints import InnerCodec
from common.errors import BitstreamError, ExternalToolError
from common.external_tool import run_tool

HEVC_DECODER = "libde265-dec265"
VVC_DECODERS = {"vtm": "DecoderAppStatic", "vvdec": "vvdecapp"}      # in order of preference
VVC_DECODER_VARIABLE = "FCRS_VVC_DECODER"


def decoder_program(codec):
    """The external decoder of `codec`: for VVC the one FCRS_VVC_DECODER names, else VTM's
    DecoderAppStatic when on PATH, else vvdecapp (the not-found error names both)."""
    if InnerCodec(codec) == InnerCodec.HEVC:
        return HEVC_DECODER
    chosen = os.environ.get(VVC_DECODER_VARIABLE, "")
    if chosen in VVC_DECODERS:
        return VVC_DECODERS[chosen]
    if chosen:
        if os.path.basename(chosen) not in VVC_DECODERS.values():
            raise ExternalToolError(f"{VVC_DECODER_VARIABLE}={chosen}: choose one of {', '.join(VVC_DECODERS)}, "
                                    f"or the path of a {' or '.join(VVC_DECODERS.values())} program")
        return chosen
    for program in VVC_DECODERS.values():
        if shutil.which(program):
            return program
    raise ExternalToolError("no VVC decoder on PATH: put VTM's DecoderAppStatic or VVdeC's vvdecapp there "
                            "(e.g. ../shared/tools/vvc/bin)")
STANDARD_NAMES = {InnerCodec.HEVC: "HEVC", InnerCodec.VVC: "VVC"}


def plane_shapes(width, height, chroma_format):
    """(height, width) of each plane of a 4:0:0 or 4:2:0 picture."""
    if chroma_format == "400":
        return [(height, width)]
    chroma = (-(-height // 2), -(-width // 2))
    return [(height, width), chroma, chroma]


def sample_dtype(bit_depth):
    return np.dtype("<u2") if bit_depth > 8 else np.dtype("u1")


def decode_picture(codec, bitstream, width, height, bit_depth, chroma_format="400"):
    """The planes of the single picture an inner bitstream holds: [luma] for 4:0:0,
    [luma, cb, cr] for 4:2:0, each an (H, W) array of B-bit samples."""
    codec = InnerCodec(codec)
    program = decoder_program(codec)
    shapes = plane_shapes(width, height, chroma_format)
    dtype = sample_dtype(bit_depth)
    expected = sum(h * w for h, w in shapes) * dtype.itemsize
    # VTM writes a 4:0:0 picture with 4:2:0 mid-grey chroma planes unless told otherwise: accept both.
    accepted = {expected}
    if codec == InnerCodec.VVC and chroma_format == "400":
        accepted.add(sum(h * w for h, w in plane_shapes(width, height, "420")) * dtype.itemsize)
    with tempfile.TemporaryDirectory(prefix="fcrs-inner-") as folder:
        stream_path = os.path.join(folder, "inner.bit")
        output_path = os.path.join(folder, "rec.yuv")
        with open(stream_path, "wb") as f:
            f.write(bitstream)
        if codec == InnerCodec.HEVC:
            run_tool([program, "-q", "-t", "0", "-o", output_path, stream_path])
        elif os.path.basename(program) == VVC_DECODERS["vvdec"]:
            run_tool([program, "-b", stream_path, "-o", output_path, "-t", "1"])
        else:
            run_tool([program, "-b", stream_path, "-o", output_path, "-d", str(bit_depth)])
        size = os.path.getsize(output_path) if os.path.isfile(output_path) else 0
        if size not in accepted:
            raise BitstreamError(f"the inner {STANDARD_NAMES[codec]} stream decodes to {size} bytes of samples; "
                                 f"one {width}×{height} {bit_depth}-bit {chroma_format} picture has {expected}")
        samples = np.fromfile(output_path, dtype=dtype)
    planes, start = [], 0
    for h, w in shapes:
        planes.append(samples[start:start + h * w].reshape(h, w))
        start += h * w
    return planes


def decoder_version(codec):
    """Informative: the external decoder's name and version (from its help or version text)."""
    program = decoder_program(codec)
    if program == HEVC_DECODER:
        done = run_tool([program, "--help"])
        text = (done.stdout + done.stderr).decode("utf-8", "replace").split()
        return " ".join(text[:2]) if text else program
    if os.path.basename(program) == VVC_DECODERS["vvdec"]:
        done = run_tool([program, "--version"])
        found = re.search(r"version (\S+)", (done.stdout + done.stderr).decode("utf-8", "replace"))
        return f"VVdeC {found.group(1)}" if found else program
    return program
