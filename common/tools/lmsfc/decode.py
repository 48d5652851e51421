"""Decoder side of L-MSFC: a group's data unit decoded once, when the first of its tensors is
needed, into every member (section L-MSFC). The encoder reconstructs with the same code."""

import threading

from common.codepoints import Tool
from common.errors import BitstreamError
from common.tools.lmsfc.arithmetic import PATCH_ELEMENTS
from common.tools.lmsfc.codec import GroupParams, decode_group, to_values
from common.tools.lmsfc.graph import Family

BACKENDS = ("numpy", "torch")      # who evaluates the exact float64 products (same integers)


def group_params(members):
    """The GroupParams of a group from its member TensorSpecs (the first one starts it)."""
    start = members[0].lmsfc
    family = Family(channels=tuple(m.shape[0] for m in members), trunk=start.trunk, latent=start.latent,
                    hyper=start.hyper, extra_stages=start.extra_stages)
    return GroupParams(model_hash=start.model_hash, family=family, rate_index=start.rate_index,
                       level_sizes=tuple(m.shape[1:] for m in members), latent_size=start.latent_size)


class LmsfcGroup:
    """The members of one group, decoded together on first use."""

    def __init__(self, members, payload, backend="numpy"):
        self.members, self.payload, self.backend = members, payload, backend
        self._lock = threading.Lock()
        self._arrays = None

    def tensor(self, spec):
        with self._lock:
            if self._arrays is None:
                fixed_point = decode_group(group_params(self.members), self.payload, self.backend)
                self._arrays = {m.name: to_values(a, m.numpy_dtype).reshape(m.array_shape)
                                for m, a in zip(self.members, fixed_point)}
            return self._arrays[spec.name]


def lmsfc_group_sources(specs, payloads, backend="numpy"):
    """Per tensor, the LmsfcGroup it belongs to (None for other tools). Members after the first
    must have empty data units."""
    sources, group = [], None
    for spec, payload in zip(specs, payloads):
        if spec.tool != Tool.LMSFC:
            sources.append(None)
            continue
        if spec.lmsfc.group_start:
            group = LmsfcGroup([spec], payload, backend)
        elif payload:
            raise BitstreamError(f"tensor '{spec.name}' is a later level of an L-MSFC group but its data unit "
                                 "carries a payload")
        else:
            group.members.append(spec)
        sources.append(group)
    return sources


def decode_lmsfc_tensor(spec, payload):
    """A group of one tensor (a group's members are decoded through lmsfc_group_sources)."""
    return LmsfcGroup([spec], payload).tensor(spec)


ACTIVATIONS_ALIVE = 8       # int64 trunk-sized activations alive at once in DRNet (up-sampling, branches)


def lmsfc_memory(spec):
    """Bytes decoding this tensor needs at its peak: for a group's first tensor, DRNet's
    activations at the largest level's size (N channels, int64) and one im2col band; its values."""
    values = 16 * spec.num_elements
    if not spec.lmsfc.group_start:
        return values
    _, height, width = spec.shape
    return values + 8 * (ACTIVATIONS_ALIVE * spec.lmsfc.trunk * height * width + 2 * PATCH_ELEMENTS)
