"""Conformance streams: the inputs, encoder settings and descriptions of every
golden stream in bitstreams/, and the command that (re)writes them.

    python -m encoder.conformance --write bitstreams    # `make conformance`

For each stream NAME it writes NAME.bin, NAME.md5 (one `<md5>  <tensor name>`
line per decoded tensor) and NAME.txt (what the stream exercises). Run it only
when the bitstream or the encoder changes on purpose, and review the diff.
"""

import argparse
import os
import sys
from dataclasses import dataclass

import numpy as np

from common.codepoints import UnitType
from common.stream import UNIT_HEADER_BYTES, iter_units, write_stream
from encoder.encoder import encode_features
from encoder.options import default_options
from encoder.tools.interface import StepOffsets


@dataclass(frozen=True)
class ConformanceStream:
    name: str
    description: str
    qp: int
    rounding_offset: float = 0.5
    options: tuple = ()              # further (option, value) pairs, e.g. (("Tool", "anchor"),)
    decoder_programs: tuple = ()     # external programs decoding needs (tests skip without them)
    encoder_programs: tuple = ()     # external programs encoding needs


def _relu6_map(rng, channels, height, width, active=0.12):
    """Sparse, one-sided, spatially correlated values in [0, 6], like a ReLU6 backbone output."""
    field = rng.normal(size=(channels, height + 2, width + 2))
    smooth = sum(field[:, i:i + height, j:j + width] for i in range(3) for j in range(3)) / 3.0
    threshold = np.quantile(smooth, 1.0 - active, axis=(1, 2), keepdims=True)
    return np.clip(2.0 * (smooth - threshold), 0.0, 6.0)


def stream_inputs(name):
    """(tensors, step_offsets) of a conformance stream, deterministic."""
    rng = np.random.default_rng(sum(map(ord, name)))
    if name == "chw_map":
        return {"": _relu6_map(rng, 64, 7, 7).astype(np.float32)}, None
    if name == "tokens_step_map":
        tokens = rng.normal(size=(197, 48)) * np.exp(rng.normal(size=48))  # per-channel scales
        tokens[:, 5] *= 40.0                                                # an outlier channel
        offsets = rng.integers(-6, 7, size=(1, 197))
        return {"": tokens.astype(np.float32)}, {"": offsets}
    if name == "channel_step_offsets":
        scales = np.exp(rng.normal(size=(24, 1, 1)))                        # channels of different ranges
        values = (_relu6_map(rng, 24, 9, 11) * scales).astype(np.float32)
        channels = rng.integers(-12, 13, size=24)
        channels[3] = -30                                                   # escape in the channel vector
        tokens = rng.normal(size=(50, 20)) * np.exp(rng.normal(size=20))
        return ({"map": values, "tokens": tokens.astype(np.float32)},
                {"map": StepOffsets(tokens=rng.integers(-4, 5, size=(9, 11)), channels=channels),
                 "tokens": StepOffsets(channels=rng.integers(-8, 9, size=20))})
    if name == "pyramid_p2_p6":
        sizes = {"p2": (32, 48), "p3": (16, 24), "p4": (8, 12), "p5": (4, 6), "p6": (2, 3)}
        return {level: rng.normal(scale=1.5, size=(1, 16) + hw).astype(np.float32)
                for level, hw in sizes.items()}, None
    if name == "extreme_range":
        magnitudes = 10.0 ** rng.uniform(-3, 4, size=(8, 6, 5))
        values = magnitudes * rng.choice([-1.0, 1.0], size=magnitudes.shape)
        values[0, 0, :] = 0.0
        offsets = rng.integers(-40, 41, size=(6, 5))
        offsets[2, 3] = 150                                                 # escape in the offset map
        return {"": values}, {"": offsets}
    if name == "float16_output":
        return {"tokens": (rng.normal(size=(1, 64, 24)) * 3.0).astype(np.float16)}, None
    if name == "unknown_unit_skipped":
        return {"": _relu6_map(rng, 16, 5, 6).astype(np.float32)}, None
    if name == "video_anchor_hevc":
        tokens = rng.normal(size=(40, 96)) * np.exp(rng.normal(size=96) * 0.5)
        tokens[:, 7] *= 25.0                                                # an outlier channel
        return {"map": _relu6_map(rng, 48, 7, 7)[None].astype(np.float32), "tokens": tokens}, None
    if name == "video_anchor_frame_hevc":
        sizes = {"p3": (16, 16, 16), "p4": (32, 8, 8), "p5": (64, 4, 4)}      # a YOLO-like pyramid, 1/5 scale
        return {level: (rng.normal(scale=0.8, size=(1,) + shape) - 0.2).astype(np.float32)
                for level, shape in sizes.items()}, None
    if name == "lmsfc_pyramid":
        return {level: _silu_map(rng, (1,) + shape) for level, shape in
                {"p3": (64, 20, 28), "p4": (128, 10, 14), "p5": (256, 5, 7)}.items()}, None
    if name == "lmsfc_gains":
        return {level: _silu_map(rng, shape) for level, shape in
                {"p3": (64, 24, 16), "p4": (128, 12, 8), "p5": (256, 6, 4)}.items()}, None
    if name == "lmsfc_latent_above":
        return {level: _silu_map(rng, shape) for level, shape in
                {"p3": (64, 22, 18), "p4": (128, 11, 9), "p5": (256, 6, 5)}.items()}, None
    if name == "lmsfc_two_groups":
        first = {f"a_{level}": _silu_map(rng, shape) for level, shape in
                 {"p3": (64, 16, 16), "p4": (128, 8, 8), "p5": (256, 4, 4)}.items()}
        second = {f"b_{level}": _silu_map(rng, shape).astype(np.float16) for level, shape in
                  {"p3": (64, 9, 13), "p4": (128, 5, 7), "p5": (256, 3, 4)}.items()}
        return {**first, **second}, None
    raise KeyError(name)


def _silu_map(rng, shape):
    """Signed, smooth SiLU outputs like a detector's neck (YOLOv5n P3-P5), float32."""
    x = rng.normal(scale=1.5, size=shape) - 0.5
    return (x / (1 + np.exp(-x))).astype(np.float32)


def lmsfc(models):
    """The ConformanceStream fields of an L-MSFC stream coded with these models (LmsfcModels)."""
    return dict(options=(("Tool", "lmsfc"), ("LmsfcModels", models)))


def hevc_anchor(packing):
    """The ConformanceStream fields of a video-anchor stream with an HEVC inner stream."""
    return dict(options=(("Tool", "anchor"), ("InnerCodec", "hevc"), ("AnchorPacking", packing)),
                decoder_programs=("libde265-dec265",), encoder_programs=("x265", "libde265-dec265"))


STREAMS = (
    ConformanceStream("chw_map", "C×H×W map (64×7×7 float32), sparse one-sided ReLU6-like values, uniform "
                      "steps: significance/level contexts, channel statistics, wave order.", qp=44),
    ConformanceStream("tokens_step_map", "N×C token matrix (197×48 float32, signed, one outlier channel) "
                      "with a per-token step-offset map (tsq_step_map_flag = 1) and a dead-zone quantiser.",
                      qp=40, rounding_offset=0.35),
    ConformanceStream("channel_step_offsets", "Separable step maps (tsq_channel_offsets_flag = 1): a 24×9×11 "
                      "float32 ReLU6-like map with per-channel scales, coded with a per-channel step-offset "
                      "vector (offsets −12..12 and an escape, −30) and a per-token map (−4..4); a 50×20 "
                      "float32 token matrix with a channel vector only (tsq_step_map_flag = 0).", qp=44),
    ConformanceStream("pyramid_p2_p6", "Five named tensors p2..p6 (1×16×H×W float32, batch axis kept), "
                      "as an FPN pyramid: several tensor data units and hashes in one stream.", qp=44),
    ConformanceStream("extreme_range", "C×H×W float64 with magnitudes 1e-3..1e4, negatives, zeros and a "
                      "fine step: Exp-Golomb remainders of large order, bypass pieces, level escapes, "
                      "step offsets of ±40 and an offset escape (150).", qp=-20),
    ConformanceStream("float16_output", "N×C tokens (1×64×24 float16): float16 reconstruction and "
                      "rounding of q·Δ to half precision.", qp=36),
    ConformanceStream("unknown_unit_skipped", "A 16×5×6 map followed by a unit of reserved type 200 "
                      "(before the hash unit): the decoder must skip it and decode normally.", qp=44),
    ConformanceStream("video_anchor_hevc", "Video anchor (ti_tool_idc = 2) with an HEVC inner stream: a "
                      "1×48×7×7 float32 ReLU6-like map (48 tiles of 7×7 in 8 tile columns, 56×42 padded "
                      "to a 64×64 picture) and a 40×96 float64 token matrix with an outlier channel (two 40×48 "
                      "column strips stacked in one tile column, padded to 64×80; va_min_value / "
                      "va_max_value rounded outwards to float32), each its own x265 picture at QP 27 with "
                      "va_encoder_info. Decoding needs libde265-dec265.", qp=27, **hevc_anchor("tensor")),
    ConformanceStream("video_anchor_frame_hevc", "Video anchor, MPEG-VCM one-frame packing: three tensors "
                      "p3, p4, p5 (1×16×16×16, 1×32×8×8, 1×64×4×4 float32, signed) tiled into one x265 "
                      "picture at QP 32, each a full-width band below the previous one "
                      "(va_tile_origin_y 0, 64, 96; 4, 8 and 16 tile columns; a 64×112 picture); p4 and p5 "
                      "have va_shared_picture_flag = 1 and empty tensor data units, each tensor its own "
                      "va_min_value / va_max_value. Decoding needs libde265-dec265.", qp=32,
                      **hevc_anchor("frame")),
    ConformanceStream("lmsfc_pyramid", "L-MSFC (ti_tool_idc = 3) with the conformance model shipped for it "
                      "(common/tools/lmsfc/models/conformance-*.safetensors: N = M = 8, z of 8 channels, "
                      "E = 1): one group of three tensors p3, p4, p5 (1×64×20×28, 1×128×10×14, 1×256×5×7 "
                      "float32, batch axis kept), odd sizes so every up-sampling is cropped (y 3×4, z 2×2), "
                      "rate index 4; p4 and p5 have lm_group_start_flag = 0 and empty data units.", qp=4,
                      **lmsfc("conformance")),
    ConformanceStream("lmsfc_two_groups", "L-MSFC, two groups in one stream, both with the conformance "
                      "model: a_p3..a_p5 (64×16×16, 128×8×8, 256×4×4 float32) and b_p3..b_p5 (64×9×13, "
                      "128×5×7, 256×3×4 float16: the fixed-point values rounded to half precision) at a "
                      "negative rate index (−6, finer latent step).", qp=-6,
                      **lmsfc("conformance,conformance")),
    ConformanceStream("lmsfc_gains", "L-MSFC with gain units: the conformance-gains model (N = M = 8, z of 8 "
                      "channels, E = 1, a gain table of 4 rate indices whose rows give the 8 latent channels "
                      "different exponents, e.g. 5, 6 and 4 in row 2) codes p3, p4, p5 (64×24×16, 128×12×8, "
                      "256×6×4 float32, no batch axis) at rate index 2: each channel's scale indices and "
                      "step follow its own exponent.", qp=2,
                      **lmsfc("conformance-gains")),
    ConformanceStream("lmsfc_latent_above", "L-MSFC with y one level above the last (lm_extra_stages = −1, "
                      "se(v) since version 2): the conformance-stride16 model (N = M = 8, z of 8 channels, a "
                      "gain table of 4 rate indices) codes p3, p4, p5 (64×22×18, 128×11×9, 256×6×5 float32, "
                      "odd sizes) at rate index 1: y has p4's 11×9, z 6×5; FENet brings p5 up to p4 (cropped "
                      "from 12×10) and DRNet reaches p5 through a stride-2 block.", qp=1,
                      **lmsfc("conformance-stride16")),
)


def encode_conformance_stream(stream):
    """The stream's bytes and its {tensor name: decoded array}."""
    tensors, offsets = stream_inputs(stream.name)
    options = default_options()
    options.update(QP=stream.qp, RoundingOffset=stream.rounding_offset, **dict(stream.options))
    result = encode_features(tensors, options, step_offsets=offsets)
    data = result.stream
    if stream.name == "unknown_unit_skipped":
        units = [(t, p, None) for t, p in iter_units(data)]
        units.insert(2, (200, b"reserved unit payload", None))
        assert units[3][0] == UnitType.DECODED_FEATURE_HASH
        units[3] = (UnitType.DECODED_FEATURE_HASH, hash_unit_payload(write_stream(units[:3])[:-UNIT_HEADER_BYTES],
                                                                     data, result.reconstruction), None)
        data = write_stream(units)
        assert UnitType.END_OF_STREAM not in [u[0] for u in units]
    return data, result.reconstruction


def hash_unit_payload(prefix, data, reconstruction):
    """A decoded_feature_hash() payload over `prefix` for the tensors of stream `data` (the hash
    covers every byte before it, so a unit inserted before it needs a new one)."""
    from common.codepoints import HashType
    from common.features import from_tensor_info
    from common.hashing import covered_digest, integrity_md5
    from common.syntax import SyntaxReader, SyntaxStructure, SyntaxWriter
    from common.syntax_structures import decoded_feature_hash, feature_parameter_set

    fps = SyntaxStructure()
    feature_parameter_set(SyntaxReader(next(iter_units(data))[1]), fps)
    specs = [from_tensor_info(t) for t in fps.fps_tensors]
    covered = covered_digest(prefix)
    rw = SyntaxWriter()
    decoded_feature_hash(rw, SyntaxStructure(dfh_hash_type_idc=HashType.MD5, dfh_num_tensors_minus1=len(specs) - 1,
                                             dfh_tensors=[SyntaxStructure(dfh_md5=integrity_md5(
                                                 covered, spec, reconstruction[spec.name])) for spec in specs]))
    return rw.getvalue()


def recorded_encoder_info(data):
    """The va_encoder_info strings of a stream's video-anchor tensors (which inner encoder
    version made it: another version may code the same picture differently)."""
    from common.features import from_tensor_info
    from common.syntax import SyntaxReader, SyntaxStructure
    from common.syntax_structures import feature_parameter_set
    for unit_type, payload in iter_units(data):
        if unit_type == UnitType.FEATURE_PARAMETER_SET:
            fps = SyntaxStructure()
            feature_parameter_set(SyntaxReader(payload), fps)
            specs = [from_tensor_info(t) for t in fps.fps_tensors]
            # tensors sharing a picture carry no info of their own: the picture's first one does
            return sorted({s.anchor.encoder_info for s in specs if s.anchor is not None and not s.anchor.shared_picture})
    return []


def md5_lines(reconstruction):
    from common.hashing import tensor_md5
    return "".join(f"{tensor_md5(array).hex()}  {name}\n" for name, array in reconstruction.items())


def write_all(folder):
    for stream in STREAMS:
        data, reconstruction = encode_conformance_stream(stream)
        base = os.path.join(folder, stream.name)
        with open(base + ".bin", "wb") as f:
            f.write(data)
        with open(base + ".md5", "w") as f:
            f.write(md5_lines(reconstruction))
        with open(base + ".txt", "w") as f:
            more = "".join(f", {key} {value}" for key, value in stream.options)
            f.write(f"{stream.name}.bin — {len(data)} bytes\n\n{stream.description}\n\n"
                    f"Encoder settings: QP {stream.qp}, RoundingOffset {stream.rounding_offset}{more}; inputs from "
                    f"encoder/conformance.py:stream_inputs('{stream.name}').\n"
                    f"Expected decoded-tensor MD5s: {stream.name}.md5.\n")
        print(f"{stream.name}.bin  {len(data)} bytes")


def main(argv=None):
    parser = argparse.ArgumentParser(description="Regenerate the conformance streams.")
    parser.add_argument("--write", metavar="FOLDER", required=True)
    write_all(parser.parse_args(argv).write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
