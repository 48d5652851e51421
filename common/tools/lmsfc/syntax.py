"""L-MSFC's syntax: the group parameters in tensor_info() and the group's data unit payload."""

from dataclasses import dataclass

from common.codepoints import Layout, Tool
from common.syntax import SyntaxStructure
from common.tools.lmsfc.entropy import RATE_INDEX_MAX, RATE_INDEX_MIN
from common.tools.lmsfc.graph import Family, halved, latent_size
from common.tools.lmsfc.models import HASH_BYTES

MAX_GROUP_LEVELS = 8
MAX_NETWORK_CHANNELS = 1024
MIN_EXTRA_STAGES = -1
MAX_EXTRA_STAGES = 8
MAX_LATENT_DIM = 1 << 16


def lmsfc_params(rw, s):
    rw.flag(s, "lm_group_start_flag")
    if s.lm_group_start_flag:
        rw.bytes(s, "lm_model_hash", HASH_BYTES)
        rw.ue(s, "lm_num_levels_minus1", hi=MAX_GROUP_LEVELS - 1)
        rw.ue(s, "lm_trunk_channels_minus1", hi=MAX_NETWORK_CHANNELS - 1)
        rw.ue(s, "lm_latent_channels_minus1", hi=MAX_NETWORK_CHANNELS - 1)
        rw.ue(s, "lm_hyper_channels_minus1", hi=MAX_NETWORK_CHANNELS - 1)
        rw.se(s, "lm_extra_stages", lo=MIN_EXTRA_STAGES, hi=MAX_EXTRA_STAGES)
        rw.se(s, "lm_rate_idx", lo=RATE_INDEX_MIN, hi=RATE_INDEX_MAX)
        rw.ue(s, "lm_latent_height_minus1", hi=MAX_LATENT_DIM - 1)
        rw.ue(s, "lm_latent_width_minus1", hi=MAX_LATENT_DIM - 1)


def lmsfc_group_payload(rw, s):
    rw.ue(s, "lm_z_substream_size")
    rw.byte_alignment()
    rw.bytes(s, "lm_z_substream", s.lm_z_substream_size)
    rw.rest(s, "lm_y_substream")


def lmsfc_groups(tensors):
    """[(index of the group's first tensor, [member indices])] of the L-MSFC groups, or None when
    the groups break the constraints of lmsfc_params() (section L-MSFC: groups)."""
    groups, open_group = [], None
    for index, t in enumerate(tensors):
        if t.ti_tool_idc != Tool.LMSFC:
            if open_group is not None:
                return None
            continue
        params = t.ti_lmsfc_params
        if t.ti_layout_idc != Layout.CHW:
            return None
        if params.lm_group_start_flag:
            if open_group is not None:
                return None
            open_group = (index, [index], params.lm_num_levels_minus1 + 1)
        elif open_group is None:
            return None
        else:
            open_group[1].append(index)
        if len(open_group[1]) == open_group[2]:
            if not group_geometry_consistent([tensors[i] for i in open_group[1]]):
                return None
            groups.append(open_group[:2])
            open_group = None
    return None if open_group is not None else groups


def group_family(members):
    params = members[0].ti_lmsfc_params
    return Family(channels=tuple(t.ti_num_channels_minus1 + 1 for t in members),
                  trunk=params.lm_trunk_channels_minus1 + 1, latent=params.lm_latent_channels_minus1 + 1,
                  hyper=params.lm_hyper_channels_minus1 + 1, extra_stages=params.lm_extra_stages)


def group_level_sizes(members):
    return [(t.ti_height_minus1 + 1, t.ti_width_minus1 + 1) for t in members]


def group_geometry_consistent(members):
    """Each member is half the size of the one before (rounded up); the latent size follows."""
    sizes = group_level_sizes(members)
    if any(halved(a) != b for a, b in zip(sizes, sizes[1:])):
        return False
    params = members[0].ti_lmsfc_params
    signalled = (params.lm_latent_height_minus1 + 1, params.lm_latent_width_minus1 + 1)
    return latent_size(group_family(members), sizes) == signalled


@dataclass(frozen=True)
class LmsfcParams:
    """lmsfc_params() in plain words; the fields after group_start only for a group's first tensor."""
    group_start: bool
    model_hash: bytes = b""
    num_levels: int = 0
    trunk: int = 0
    latent: int = 0
    hyper: int = 0
    extra_stages: int = 0
    rate_index: int = 0
    latent_size: tuple = ()


def to_lmsfc_params(params):
    s = SyntaxStructure(lm_group_start_flag=int(params.group_start))
    if params.group_start:
        s.lm_model_hash = params.model_hash
        s.lm_num_levels_minus1 = params.num_levels - 1
        s.lm_trunk_channels_minus1 = params.trunk - 1
        s.lm_latent_channels_minus1 = params.latent - 1
        s.lm_hyper_channels_minus1 = params.hyper - 1
        s.lm_extra_stages = params.extra_stages
        s.lm_rate_idx = params.rate_index
        s.lm_latent_height_minus1, s.lm_latent_width_minus1 = params.latent_size[0] - 1, params.latent_size[1] - 1
    return s


def from_lmsfc_params(s):
    if not s.lm_group_start_flag:
        return LmsfcParams(group_start=False)
    return LmsfcParams(group_start=True, model_hash=bytes(s.lm_model_hash), num_levels=s.lm_num_levels_minus1 + 1,
                       trunk=s.lm_trunk_channels_minus1 + 1, latent=s.lm_latent_channels_minus1 + 1,
                       hyper=s.lm_hyper_channels_minus1 + 1, extra_stages=s.lm_extra_stages,
                       rate_index=s.lm_rate_idx,
                       latent_size=(s.lm_latent_height_minus1 + 1, s.lm_latent_width_minus1 + 1))


SEMANTICS = {
    "lm_group_start_flag": "1: the tensor is the first level of an L-MSFC group and the group's parameters "
                           "follow; its data unit carries lmsfc_group_payload(). 0: the tensor is the next "
                           "level of the group the nearest preceding tensor with the flag set started; its data "
                           "unit's tdu_entropy_payload is empty.",
    "lm_model_hash": "The first 8 bytes of the SHA-256 content hash of the model (section L-MSFC: models). A "
                     "decoder without that model refuses the stream, naming the hash.",
    "lm_num_levels_minus1": "Number L of tensors in the group, minus 1: this one and the next L − 1 tensors, "
                            "largest map first, each ceil(H / 2) × ceil(W / 2) of the one before.",
    "lm_trunk_channels_minus1": "Trunk channels N of the model's family, minus 1.",
    "lm_latent_channels_minus1": "Channels M of the latent y, minus 1.",
    "lm_hyper_channels_minus1": "Channels of the hyper-latent z and of the hyper networks, minus 1.",
    "lm_extra_stages": "Number E of stride-2 stages from the last level down to y (0: y has the last level's "
                       "size; −1: y has the second-to-last level's size and the last level joins it from below, "
                       "as fenet and drnet of common/tools/lmsfc/graph.py say). Coded se(v), so E = 0 and E = 1 "
                       "have the bits ue(v) gave them in version 1.",
    "lm_rate_idx": "Rate index r. For a model with gain units, the row of its gain table that gives each "
                   "channel c of y its latent exponent e_c (r in 0 … R − 1); for a model without, e_c = r. The "
                   "latent step of channel c is Δ = 2^(e_c / 8) (fixed point: steps[e_c − RATE_INDEX_MIN] of the "
                   "tables), and e_c is subtracted from the channel's scale indices.",
    "lm_latent_height_minus1": "Height of y, minus 1: the last level's height halved (rounded up) E times "
                               "(E = −1: the second-to-last level's height).",
    "lm_latent_width_minus1": "Width of y, minus 1: the last level's width halved (rounded up) E times "
                              "(E = −1: the second-to-last level's width).",
    "lm_z_substream_size": "Size in bytes of lm_z_substream.",
    "lm_z_substream": "The ANS data of ẑ (section L-MSFC entropy coding).",
    "lm_y_substream": "The ANS data of y's levels and escapes, to the end of the unit (section L-MSFC "
                      "entropy coding).",
}
