"""Coding one picture with an external video encoder: the anchors' inner codecs.

    HEVC: x265 --input in.yuv --input-res WxH --fps 1 --frames 1 --input-csp i400
               --input-depth 10 --output-depth 10 --profile main444-10-intra --qp QP
               --ipratio 1 --no-info --frame-threads 1 --pools 1 -o out.hevc
    VVC:  EncoderAppStatic [-c encoder_intra_vtm.cfg] -i in.yuv -b out.bit -wdt W -hgt H
               -fr 1 -f 1 -q QP --InputBitDepth=10 --InternalBitDepth=10 --OutputBitDepth=10
               --InputChromaFormat=400 --ChromaFormatIDC=400 --ConformanceWindowMode=1

The same function codes the image anchor's 8-bit 4:2:0 pictures (ctc/image_anchor.py).
Files live in a TemporaryDirectory that is removed whatever happens; a missing or
failing program is an ExternalToolError quoting its error line.
"""

import os
import re
import tempfile
import time
from dataclasses import dataclass

import numpy as np

from common.codepoints import InnerCodec
from common.errors import ConfigError
from common.external_tool import find_tool, run_tool
from decoder.inner_codec import plane_shapes, sample_dtype

ENCODER_PROGRAMS = {InnerCodec.HEVC: "x265", InnerCodec.VVC: "EncoderAppStatic"}
INNER_QP_RANGE = (0, 51)      # the QP both standards accept at every bit depth

# x265 profile per (chroma format, bit depth): the intra / still-picture profiles.
X265_PROFILES = {("400", 10): "main444-10-intra", ("420", 8): "mainstillpicture"}


@dataclass(frozen=True)
class InnerStream:
    data: bytes               # the Annex B byte stream of one picture
    encoder_info: str         # the program and its version, e.g. "x265 3.5+1-f0c1022b6"
    seconds: float            # wall time of the external encoder


def encode_picture(codec, planes, bit_depth, qp, chroma_format="400", vtm_cfg="", extra_args=()):
    """One intra picture (planes: [luma] or [luma, cb, cr] arrays of B-bit samples) coded
    with the external encoder of `codec` at `qp`. Returns an InnerStream."""
    codec = InnerCodec(codec)
    if not INNER_QP_RANGE[0] <= qp <= INNER_QP_RANGE[1]:
        raise ConfigError(f"QP {qp}: the inner codec's QP must lie in [{INNER_QP_RANGE[0]}, {INNER_QP_RANGE[1]}]")
    height, width = planes[0].shape
    if [p.shape for p in planes] != plane_shapes(width, height, chroma_format):
        raise ValueError(f"planes {[p.shape for p in planes]} are not a {width}×{height} {chroma_format} picture")
    with tempfile.TemporaryDirectory(prefix="fcrs-inner-") as folder:
        input_path = os.path.join(folder, "in.yuv")
        output_path = os.path.join(folder, "out.bit")
        dtype = sample_dtype(bit_depth)
        with open(input_path, "wb") as f:
            for plane in planes:
                f.write(np.ascontiguousarray(plane, dtype=dtype).tobytes())
        start = time.perf_counter()
        if codec == InnerCodec.HEVC:
            done = run_tool(_x265_command(input_path, output_path, width, height, bit_depth, qp, chroma_format)
                            + list(extra_args))
            info = _version(done, r"HEVC encoder version (\S+)", "x265")
        else:
            done = run_tool(_vtm_command(input_path, output_path, width, height, bit_depth, qp, chroma_format,
                                         vtm_cfg) + list(extra_args))
            info = _version(done, r"VTM Encoder Version ([^\s\[]+)", "VTM")
        seconds = time.perf_counter() - start
        with open(output_path, "rb") as f:
            data = f.read()
    return InnerStream(data=data, encoder_info=info, seconds=seconds)


def encoder_version(codec):
    """'<program> <version>' of the external encoder on PATH (x265: from `x265 --version`;
    VTM: the program name, its version is only in its encoding log)."""
    codec = InnerCodec(codec)
    if codec == InnerCodec.HEVC:
        return _version(run_tool(["x265", "--version"]), r"HEVC encoder version (\S+)", "x265")
    find_tool(ENCODER_PROGRAMS[codec])
    return "VTM"


def _x265_command(input_path, output_path, width, height, bit_depth, qp, chroma_format):
    profile = X265_PROFILES.get((chroma_format, bit_depth))
    if profile is None:
        raise ValueError(f"no x265 profile for {bit_depth}-bit {chroma_format}")
    return ["x265", "--input", input_path, "--input-res", f"{width}x{height}", "--fps", "1", "--frames", "1",
            "--input-csp", f"i{chroma_format}", "--input-depth", str(bit_depth), "--output-depth", str(bit_depth),
            # x265 logs "Unknown Intra profile" for 4:0:0 under main444-10-intra but codes it (the stream's
            # general_profile_idc is RExt, which libde265 decodes).
            "--profile", profile, "--qp", str(qp),
            # --qp sets the P-slice QP and the I-slice QP is qp - 6·log2(ipratio): with the default
            # ipratio 1.4 our single intra picture would be coded about 3 QP finer than asked.
            "--ipratio", "1",
            # Without --no-info x265 writes a ~2,200-byte SEI with its version and every option into
            # the stream: more than the whole picture at high QPs. The version goes into
            # va_encoder_info instead (InnerCodecInfo), which costs about 20 bytes.
            "--no-info",
            # One picture: threads buy nothing and one thread keeps the output reproducible.
            "--frame-threads", "1", "--pools", "1",
            "-o", output_path]


def _vtm_command(input_path, output_path, width, height, bit_depth, qp, chroma_format, vtm_cfg):
    command = ["EncoderAppStatic"]
    if vtm_cfg:
        if not os.path.isfile(vtm_cfg):
            raise ConfigError(f"VtmEncoderCfg: file not found: {vtm_cfg}")
        command += ["-c", vtm_cfg]
    return command + ["-i", input_path, "-b", output_path, "-wdt", str(width), "-hgt", str(height),
                      "-fr", "1", "-f", "1", "-q", str(qp), f"--InputBitDepth={bit_depth}",
                      f"--InternalBitDepth={bit_depth}", f"--OutputBitDepth={bit_depth}",
                      f"--InputChromaFormat={chroma_format}", f"--ChromaFormatIDC={chroma_format}",
                      "--ConformanceWindowMode=1"]


def _version(done, pattern, program):
    """'<program> <version>' from the encoder's log, or '<program>' when it does not say."""
    found = re.search(pattern, (done.stdout + done.stderr).decode("utf-8", "replace"))
    return f"{program} {found.group(1)}" if found else program
