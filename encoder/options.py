"""Every encoder option, declared once: the cfg parser, the CTC's config checks and
`encode --help` all read this table."""

import math
from dataclasses import dataclass

from common.tools.tokenwise.syntax import QP_MAX, QP_MIN


@dataclass(frozen=True)
class Option:
    name: str
    type: type          # int, float, str or bool
    default: object
    help: str
    choices: tuple = ()
    lo: float = None
    hi: float = None


OPTIONS = (
    Option("Tool", str, "tokenwise", "coding tool of every tensor: tokenwise (token-wise scalar quantisation), "
           "anchor (video anchor: min-max 10-bit levels tiled into one monochrome picture, intra-coded by "
           "InnerCodec), lmsfc (L-MSFC: the tensors, a pyramid largest level first, coded jointly by the learned "
           "fusion codecs of LmsfcModels)", choices=("tokenwise", "anchor", "lmsfc")),
    Option("QP", int, 40, "tokenwise: base step exponent, step = 2^((QP - 48) / 8), +8 doubles the step; "
           "anchor: the inner video codec's QP, 0..51 (+6 doubles its step); lmsfc: the rate index r, latent step "
           "2^(r / 8), -32..64", lo=QP_MIN, hi=QP_MAX),
    Option("RoundingOffset", float, 0.5, "quantiser rounding offset: q = sign(f) * floor(|f| / step + offset); "
           "0.5 rounds to nearest (error <= step/2), smaller values widen the dead zone", lo=0.0, hi=0.5),
    Option("DecodedFeatureHash", bool, True, "write the decoded-feature MD5 unit (the decoder checks it)"),
    Option("StepAllocation", str, "uniform", "per-token steps: uniform (QP everywhere), jnd (the paper's FeatJND "
           "tolerance map mean_c |delta| / (|f| + epsilon)), jnd_abs (steps follow (mean_c delta^-2)^(-1/2), the "
           "high-rate optimum for the JND-weighted error), jnd_rd (per token, the step minimising JND-weighted error "
           "+ mu * estimated bits), random (jnd's values permuted over tokens: the paper's baseline), "
           "jnd_separable (token x channel steps fitted to a noise-tolerance estimator's delta in the log domain: a "
           "token map and a channel vector), jnd_channel (its channel vector only), random_separable "
           "(jnd_separable's token and channel offsets permuted)",
           choices=("uniform", "jnd", "jnd_abs", "jnd_rd", "random", "jnd_separable", "jnd_channel",
                    "random_separable")),
    Option("NoiseBudget", float, 0.0, "target noise std sigma: steps scaled so that mean(step^2 / 12) = sigma^2; "
           "0 keeps the noise power of QP's uniform step", lo=0.0, hi=1e30),
    Option("JndWeights", str, "", "FeatJND estimator: a .safetensors path (content-hash named), or the name of "
           "one shipped in encoder/featjnd/weights/ (efficientnet-lite0, efficientnet-lite0-blocks, yolov5n-neck, "
           "and their noise-tolerance versions <name>-noise); empty: the shipped one that takes the tensor's "
           "channel count, of the kind the allocation uses (noise for the separable ones)"),
    Option("JndMapStrength", float, 0.5, "separable allocations: the fitted log-step map is multiplied by this (1 "
           "follows the estimator's tolerance, 0 is uniform; 0.5 was chosen on training photos: "
           "ctc/cfg/coco_train_yolov5n_featjnd_dev.yaml)", lo=0.0, hi=4.0),
    Option("JndEpsilon", float, 0.01, "epsilon of the token tolerance s_t = mean_c |delta| / (|f| + epsilon)",
           lo=1e-9, hi=1e9),
    Option("RandomSeed", int, 0, "seed of the permutations of StepAllocation random and random_separable", lo=0,
           hi=2**31 - 1),
    Option("InnerCodec", str, "hevc", "anchor: inner video codec: hevc (x265, decoded by libde265-dec265), "
           "vtm (VVC with VTM's EncoderAppStatic, MPEG's anchor encoder), vvenc (VVC with VVenC's vvencFFapp, "
           "much faster); VVC streams are decoded by VTM's DecoderAppStatic or VVdeC's vvdecapp from PATH",
           choices=("hevc", "vtm", "vvenc")),
    Option("InnerEncoder", str, "", "anchor: path of the inner encoder program (x265, EncoderAppStatic or "
           "vvencFFapp as InnerCodec says); empty: found on PATH"),
    Option("VvencPreset", str, "medium", "anchor with InnerCodec vvenc: VVenC's speed preset",
           choices=("faster", "fast", "medium", "slow", "slower")),
    Option("AnchorPacking", str, "frame", "anchor: frame (MPEG-VCM's feature anchor: all channels of all tensors "
           "tiled into one picture, each tensor a full-width band) or tensor (one picture per tensor)",
           choices=("frame", "tensor")),
    Option("TruncationMin", float, -math.inf, "anchor: values below are clipped to it before the min-max "
           "quantisation (-inf: no truncation)", lo=-math.inf, hi=math.inf),
    Option("TruncationMax", float, math.inf, "anchor: values above are clipped to it before the min-max "
           "quantisation (inf: no truncation)", lo=-math.inf, hi=math.inf),
    Option("InnerCodecInfo", bool, True, "anchor: record the inner encoder's name and version in the stream "
           "(va_encoder_info, about 20 bytes per tensor)"),
    Option("VtmEncoderCfg", str, "", "anchor with InnerCodec vtm: VTM encoder cfg passed with -c; empty: the "
           "encoder_intra_vtm.cfg beside EncoderAppStatic (MPEG's all-intra anchor settings)"),
    Option("LmsfcModels", str, "yolov5n", "lmsfc: comma-separated L-MSFC models (a name in "
           "common/tools/lmsfc/models/ or $FCRS_LMSFC_MODELS, or a .safetensors path); each codes the next "
           "L tensors of the input as one group (L its number of levels)"),
    Option("LmsfcBackend", str, "numpy", "lmsfc: who evaluates the integer networks' exact products in the "
           "encoder's reconstruction: numpy or torch (identical results)", choices=("numpy", "torch")),
)

OPTIONS_BY_NAME = {option.name: option for option in OPTIONS}


def default_options():
    return {option.name: option.default for option in OPTIONS}


def help_text():
    lines = []
    for o in OPTIONS:
        allowed = f" {{{', '.join(o.choices)}}}" if o.choices else (
            f" [{o.lo}, {o.hi}]" if o.lo is not None else "")
        default = int(o.default) if o.type is bool else o.default
        lines.append(f"  --{o.name}=<{o.type.__name__}>{allowed}  (default {default})\n      {o.help}")
    return "\n".join(lines)

