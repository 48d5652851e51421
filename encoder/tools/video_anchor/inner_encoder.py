"""Coding one picture with an external video encoder: the anchors' inner codecs.

    hevc:  x265 --input in.yuv --input-res WxH --fps 1 --frames 1 --input-csp i400
                --input-depth 10 --output-depth 10 --profile main444-10-intra --qp QP
                --ipratio 1 --no-info --frame-threads 1 --pools 1 -o out.hevc
    vtm:   EncoderAppStatic -c encoder_intra_vtm.cfg -i in.yuv -b out.bit -o rec.yuv -wdt W -hgt H
                -fr 1 -f 1 -q QP --InputBitDepth=10 --InternalBitDepth=10 --OutputBitDepth=10
                --InputChromaFormat=400 --ChromaFormatIDC=400 --ConformanceWindowMode=1
    vvenc: vvencFFapp -i in.yuv -b out.bit -o rec.yuv --SourceWidth W --SourceHeight H -fr 1 -f 1
                --InputChromaFormat 400 --InputBitDepth 10 --InternalBitDepth 10 --OutputBitDepth 10
                --preset PRESET -q QP --IntraQPOffset 0 --IntraPeriod 1 --Threads 1

vtm and vvenc both write VVC streams (va_inner_codec_idc 1) that either VVC decoder decodes.
VTM takes MPEG's all-intra settings from encoder_intra_vtm.cfg (VtmEncoderCfg, by default
the file beside EncoderAppStatic); vvencFFapp is the VVenC app that accepts
--IntraQPOffset 0, so its intra picture is coded at QP as VTM's is (vvencapp codes it
3 QP finer). The VVC encoders' reconstructions come back with the stream, so the anchor
can check the decoder's output against them. The same function codes the image
anchor's 8-bit 4:2:0 pictures with x265 (ctc/image_anchor.py). Files live in a
TemporaryDirectory that is removed whatever happens; a missing or failing program is
an ExternalToolError quoting its error line.
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
from common.tools.video_anchor.inner_decoder import plane_shapes, sample_dtype

# InnerCodec option value -> (standard of the stream, encoder program)
INNER_ENCODERS = {"hevc": (InnerCodec.HEVC, "x265"), "vtm": (InnerCodec.VVC, "EncoderAppStatic"),
                  "vvenc": (InnerCodec.VVC, "vvencFFapp")}
VTM_INTRA_CFG = "encoder_intra_vtm.cfg"       # MPEG's all-intra settings, shipped beside VTM's apps
VVENC_PRESETS = ("faster", "fast", "medium", "slow", "slower")
INNER_QP_RANGE = (0, 51)      # the QP both standards accept at every bit depth

# x265 profile per (chroma format, bit depth): the intra / still-picture profiles.
X265_PROFILES = {("400", 10): "main444-10-intra", ("420", 8): "mainstillpicture"}


@dataclass(frozen=True)
class InnerStream:
    data: bytes               # the Annex B byte stream of one picture
    encoder_info: str         # the program and its version, e.g. "x265 3.5+1-f0c1022b6"
    seconds: float            # wall time of the external encoder
    reconstruction: np.ndarray = None   # VVC encoders: the luma plane they reconstructed


def encode_picture(encoder, planes, bit_depth, qp, chroma_format="400", vtm_cfg="", vvenc_preset="medium",
                   program="", extra_args=()):
    """One intra picture (planes: [luma] or [luma, cb, cr] arrays of B-bit samples) coded by
    `encoder` (an INNER_ENCODERS key; `program`: the path of its program, default found on
    PATH) at `qp`. Returns an InnerStream."""
    if program and not (os.path.isfile(program) and os.access(program, os.X_OK)):
        raise ConfigError(f"InnerEncoder: {program} is not an executable file")
    program = program or INNER_ENCODERS[encoder][1]
    if not INNER_QP_RANGE[0] <= qp <= INNER_QP_RANGE[1]:
        raise ConfigError(f"QP {qp}: the inner codec's QP must lie in [{INNER_QP_RANGE[0]}, {INNER_QP_RANGE[1]}]")
    height, width = planes[0].shape
    if [p.shape for p in planes] != plane_shapes(width, height, chroma_format):
        raise ValueError(f"planes {[p.shape for p in planes]} are not a {width}×{height} {chroma_format} picture")
    with tempfile.TemporaryDirectory(prefix="fcrs-inner-") as folder:
        input_path = os.path.join(folder, "in.yuv")
        output_path = os.path.join(folder, "out.bit")
        recon_path = os.path.join(folder, "rec.yuv")
        dtype = sample_dtype(bit_depth)
        with open(input_path, "wb") as f:
            for plane in planes:
                f.write(np.ascontiguousarray(plane, dtype=dtype).tobytes())
        if encoder == "hevc":
            command = _x265_command(program, input_path, output_path, width, height, bit_depth, qp, chroma_format)
            version = (r"HEVC encoder version (\S+)", "x265")
        elif encoder == "vtm":
            command = _vtm_command(program, input_path, output_path, recon_path, width, height, bit_depth, qp,
                                   chroma_format, vtm_cfg)
            version = (r"VTM Encoder Version ([^\s\[]+)", "VTM")
        else:
            command = _vvenc_command(program, input_path, output_path, recon_path, width, height, bit_depth, qp,
                                     chroma_format, vvenc_preset)
            version = (r"VVenC, the Fraunhofer H.266/VVC Encoder, version (\S+)", "VVenC")
        start = time.perf_counter()
        done = run_tool(command + list(extra_args))
        seconds = time.perf_counter() - start
        info = _version(done, *version)
        if encoder == "vvenc":
            info += f" {vvenc_preset}"
        with open(output_path, "rb") as f:
            data = f.read()
        reconstruction = None
        if encoder != "hevc" and os.path.isfile(recon_path):
            luma = np.fromfile(recon_path, dtype=dtype, count=width * height)
            reconstruction = luma.reshape(height, width) if luma.size == width * height else luma
    return InnerStream(data=data, encoder_info=info, seconds=seconds, reconstruction=reconstruction)


def encoder_version(encoder):
    """'<program> <version>' of an inner encoder on PATH (x265 and VVenC report it; VTM's
    version is only in its encoding log, so it is named alone)."""
    program = INNER_ENCODERS[encoder][1]
    if encoder == "hevc":
        return _version(run_tool([program, "--version"]), r"HEVC encoder version (\S+)", "x265")
    if encoder == "vvenc":
        return _version(run_tool([program, "--version"]), r"version (\S+)", "VVenC")
    find_tool(program)
    return "VTM"


def _x265_command(program, input_path, output_path, width, height, bit_depth, qp, chroma_format):
    profile = X265_PROFILES.get((chroma_format, bit_depth))
    if profile is None:
        raise ValueError(f"no x265 profile for {bit_depth}-bit {chroma_format}")
    return [program, "--input", input_path, "--input-res", f"{width}x{height}", "--fps", "1", "--frames", "1",
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


def _vtm_command(program, input_path, output_path, recon_path, width, height, bit_depth, qp, chroma_format,
                 vtm_cfg):
    if not vtm_cfg:
        folder = os.path.dirname(find_tool(program))
        vtm_cfg = os.path.join(folder, VTM_INTRA_CFG)
        if not os.path.isfile(vtm_cfg):
            raise ConfigError(f"VTM needs its all-intra settings and none lie beside it in {folder}: set "
                              f"VtmEncoderCfg to VTM's cfg/{VTM_INTRA_CFG}")
    elif not os.path.isfile(vtm_cfg):
        raise ConfigError(f"VtmEncoderCfg: file not found: {vtm_cfg}")
    return [program, "-c", vtm_cfg, "-i", input_path, "-b", output_path, "-o", recon_path,
            "-wdt", str(width), "-hgt", str(height), "-fr", "1", "-f", "1", "-q", str(qp),
            f"--InputBitDepth={bit_depth}", f"--InternalBitDepth={bit_depth}", f"--OutputBitDepth={bit_depth}",
            f"--InputChromaFormat={chroma_format}", f"--ChromaFormatIDC={chroma_format}",
            "--ConformanceWindowMode=1"]


def _vvenc_command(program, input_path, output_path, recon_path, width, height, bit_depth, qp, chroma_format,
                   preset):
    if preset not in VVENC_PRESETS:
        raise ConfigError(f"VvencPreset {preset!r}: choose one of {', '.join(VVENC_PRESETS)}")
    return [program, "-i", input_path, "-b", output_path, "-o", recon_path,
            "--SourceWidth", str(width), "--SourceHeight", str(height), "-fr", "1", "-f", "1",
            "--InputChromaFormat", chroma_format, "--InputBitDepth", str(bit_depth),
            "--InternalBitDepth", str(bit_depth), "--OutputBitDepth", str(bit_depth),
            # IntraQPOffset 0: the intra picture at QP (as VTM codes it); one thread: reproducible output
            "--preset", preset, "-q", str(qp), "--IntraQPOffset", "0", "--IntraPeriod", "1", "--Threads", "1"]


def _version(done, pattern, program):
    """'<program> <version>' from the encoder's log, or '<program>' when it does not say."""
    found = re.search(pattern, (done.stdout + done.stderr).decode("utf-8", "replace"))
    return f"{program} {found.group(1)}" if found else program
