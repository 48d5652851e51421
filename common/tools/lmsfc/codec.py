"""L-MSFC: a group of pyramid levels coded jointly by a learned fusion codec.

This docstring down to the first code line is the spec's section "L-MSFC".

## Groups

A tensor with ti_tool_idc = 3 and lm_group_start_flag = 1 starts a group of
L = lm_num_levels_minus1 + 1 C×H×W tensors: itself and the next L − 1, the
largest map first, each ceil(H / 2) × ceil(W / 2) of the one before. The
group's data unit (that of its first tensor) holds lmsfc_group_payload(); the
other members' data units are empty. Their channels C_1 … C_L and the signalled
N, M, hyper channels and E form the model's family.

## Models

The stream names the model by lm_model_hash, the first 8 bytes of the SHA-256
content hash of its normative data (common/tools/lmsfc/models.py: the family as
canonical JSON, then every decoder-side array — integer weights, biases, shifts
of the hyper-synthesis (hs.*) and DRNet (dec.*) layers, and z's frequency
tables — by sorted name with its dtype and shape). A decoder that has no model
with that hash, or whose model has another family, refuses the stream. The
network structure is normative too: the functions hyper_synthesis and drnet of
common/tools/lmsfc/graph.py, over the operations of the next section.

## Decoding process

1. ẑ (hyper channels × ceil(H_y / 2) × ceil(W_y / 2)) from lm_z_substream
   (section L-MSFC entropy coding), as fixed-point ẑ · 2^F.
2. hyper_synthesis(ẑ) gives 2M channels of H_y × W_y (H_y × W_y signalled by
   lm_latent_height/width_minus1): the first M are μ, the last M are t.
3. The latent exponent e_c of each channel c of y: with r = lm_rate_idx, e_c =
   gain_exponents[r][c] for a model with gain units (its rate indices are the
   table's rows 0 … R − 1; any other r is an error), e_c = r for a model without.
   The levels q of y from lm_y_substream with the scale indices of t and e;
   ŷ = clamp(μ + q · Δ_{e_c}). (Gain units: the encoder quantised y_c with the
   step Δ_{e_c}, a gain 1 / Δ_{e_c} on y before quantisation whose inverse the
   decoder applies exactly.)
4. drnet(ŷ) gives the L members as fixed-point arrays a; the decoded value is
   a / 2^F in float64, rounded once to the tensor's dtype.
"""

from dataclasses import dataclass

import numpy as np

from common.errors import BitstreamError
from common.syntax import SyntaxReader, SyntaxStructure
from common.tools.lmsfc.arithmetic import ACTIVATION_LIMIT, FRACTION_BITS, IntegerOps
from common.tools.lmsfc.entropy import LatentCoder, latent_steps, scale_indices, tables
from common.tools.lmsfc.graph import Family, drnet, halved, hyper_synthesis, latent_size
from common.tools.lmsfc.models import find_model
from common.tools.lmsfc.syntax import lmsfc_group_payload


@dataclass(frozen=True)
class GroupParams:
    """What the parameter set says about a group: model, family, rate, member sizes."""
    model_hash: bytes
    family: Family
    rate_index: int
    level_sizes: tuple       # (H_i, W_i) of the member tensors, in order
    latent_size: tuple       # (H, W) of y as signalled

    @property
    def hyper_size(self):
        return halved(self.latent_size)


def group_model(params):
    """The installed model the group names, checked against the signalled family."""
    model = find_model(params.model_hash)
    if model.family != params.family:
        raise BitstreamError(f"L-MSFC model {params.model_hash.hex()} has family {model.family}, the stream "
                             f"signals {params.family}")
    return model


_INTEGER_OPS = {}


def integer_ops(model, product):
    """One IntegerOps per (model, product), so its float64 weight matrices are made once, not per
    stream."""
    key = (model.hash, product)
    if key not in _INTEGER_OPS:
        _INTEGER_OPS[key] = IntegerOps(model.integer_layers, tables()["sigmoid"], product)
    return _INTEGER_OPS[key]


def hyper_parameters(model, params, z_symbols, product="numpy"):
    """(μ, k) of every element of y, from ẑ (integer arithmetic)."""
    hyper = hyper_synthesis(integer_ops(model, product), model.family, z_symbols << FRACTION_BITS,
                            params.latent_size)
    latent = model.family.latent
    return hyper[:latent], scale_indices(hyper[latent:], model.latent_exponents(params.rate_index))


def latent_values(mean, levels, exponents):
    """ŷ = clamp(μ + q · Δ_{e_c}), fixed point; exponents: e_c of each channel (M,)."""
    return np.clip(mean + levels * latent_steps(exponents), -ACTIVATION_LIMIT, ACTIVATION_LIMIT)


def synthesise(model, params, y_hat, product="numpy"):
    """DRNet on ŷ: the decoded members as fixed-point integer arrays."""
    return drnet(integer_ops(model, product), model.family, y_hat, list(params.level_sizes))


def split_payload(payload, trace=None):
    """(z sub-stream, y sub-stream) of a group's data unit (lmsfc_group_payload())."""
    structure = SyntaxStructure()
    lmsfc_group_payload(SyntaxReader(payload, trace, "L-MSFC group payload"), structure)
    return structure.lm_z_substream, structure.lm_y_substream


def decode_group(params, payload, product="numpy", trace=None):
    """The member tensors of a group as fixed-point integer arrays (value · 2^F)."""
    model = group_model(params)
    if latent_size(model.family, list(params.level_sizes)) != tuple(params.latent_size):
        raise BitstreamError("the L-MSFC latent size does not follow from the member sizes")
    z_payload, y_payload = split_payload(payload, trace)
    z_coder = LatentCoder(z_payload)
    z_symbols = z_coder.decode_z((model.family.hyper,) + params.hyper_size, model.z_frequencies)
    z_coder.finish()
    exponents = model.latent_exponents(params.rate_index)
    mean, indices = hyper_parameters(model, params, z_symbols, product)
    y_coder = LatentCoder(y_payload)
    levels = y_coder.decode_y(indices.ravel()).reshape(indices.shape)
    y_coder.finish()
    return synthesise(model, params, latent_values(mean, levels, exponents), product)


def to_values(fixed_point, dtype):
    """value = a / 2^F, exact in float64, rounded once to dtype."""
    return (fixed_point.astype(np.float64) / (1 << FRACTION_BITS)).astype(dtype)
