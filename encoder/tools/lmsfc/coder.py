"""The coder TENSOR_CODERS names for Tool lmsfc: the input tensors, in order, are split into
groups, one per model of LmsfcModels (a model of L levels takes the next L tensors), and each
group is coded by encode_group at rate index QP.

    LmsfcModels yolov5n                                   one group: P3, P4, P5 fused
    LmsfcModels yolov5n-nofusion-level0,…-level1,…-level2  three groups: the no-fusion ablation
"""

import dataclasses
import time

import numpy as np

from common.codepoints import Layout, Tool
from common.errors import ConfigError, InputError
from common.tools.lmsfc.codec import to_values
from common.tools.lmsfc.entropy import RATE_INDEX_MAX, RATE_INDEX_MIN
from common.tools.lmsfc.graph import halved
from common.tools.lmsfc.syntax import LmsfcParams
from encoder.tools.interface import CodedTensor, tensor_spec
from encoder.tools.lmsfc.analysis import encode_group, resolve_model

_MODELS = {}


def models_of(option_value):
    """The Model of every name or path in the comma-separated LmsfcModels option (cached)."""
    names = [n.strip() for n in option_value.split(",") if n.strip()]
    if not names:
        raise ConfigError("Tool lmsfc needs LmsfcModels: a model name or .safetensors path per group")
    for name in names:
        if name not in _MODELS:
            _MODELS[name] = resolve_model(name)
    return [_MODELS[name] for name in names]


def check_group(model, names, arrays):
    """The members fit the model: C×H×W maps with its channels, each half the one before."""
    family = model.family
    for name, array, channels in zip(names, arrays, family.channels):
        if array.ndim != 3 or array.shape[0] != channels:
            raise InputError(f"tensor '{name}': shape {array.shape} does not fit L-MSFC model {model.name} "
                             f"(level of {channels} channels, C×H×W)")
    sizes = [a.shape[1:] for a in arrays]
    for (name, a), b in zip(zip(names[1:], sizes[1:]), sizes):
        if halved(b) != tuple(a):
            raise InputError(f"tensor '{name}': {a[0]}×{a[1]} is not half the previous level's {b[0]}×{b[1]} "
                             "(rounded up), as L-MSFC needs")


def code_lmsfc_tensors(tensors, options, step_offsets, step_allocator):
    """L-MSFC: every group through its model at rate index QP; the group's payload goes to its
    first tensor, the encoding time is shared evenly by the members."""
    rate_index = options["QP"]
    if not RATE_INDEX_MIN <= rate_index <= RATE_INDEX_MAX:
        raise ConfigError(f"Tool lmsfc: QP is the rate index, in [{RATE_INDEX_MIN}, {RATE_INDEX_MAX}]; got {rate_index}")
    models = models_of(options["LmsfcModels"])
    names = list(tensors)
    if sum(m.family.num_levels for m in models) != len(names):
        raise InputError(f"the L-MSFC models {options['LmsfcModels']} code "
                         f"{sum(m.family.num_levels for m in models)} tensors; the input has {len(names)}")
    coded, first = [], 0
    for model in models:
        low, high = model.rate_indices
        if not low <= rate_index <= high:
            raise ConfigError(f"Tool lmsfc: model {model.name} codes the rate indices (QP) {low} … {high}; "
                              f"got {rate_index}")
        members = names[first:first + model.family.num_levels]
        first += len(members)
        arrays = [tensors[n][0] if tensors[n].ndim == 4 else tensors[n] for n in members]
        check_group(model, members, arrays)
        start = time.perf_counter()
        coding = encode_group(model, arrays, rate_index, backend=options["LmsfcBackend"])
        params = coding.params
        seconds = (time.perf_counter() - start) / len(members)
        for index, (name, values) in enumerate(zip(members, coding.reconstruction)):
            spec = tensor_spec(name, tensors[name], 0, step_map=False)
            group = LmsfcParams(group_start=index == 0)
            if index == 0:
                f = model.family
                group = LmsfcParams(group_start=True, model_hash=params.model_hash, num_levels=f.num_levels,
                                    trunk=f.trunk, latent=f.latent, hyper=f.hyper, extra_stages=f.extra_stages,
                                    rate_index=rate_index, latent_size=tuple(params.latent_size))
            spec = dataclasses.replace(spec, tool=Tool.LMSFC, lmsfc=group)
            assert spec.layout == Layout.CHW
            reconstruction = to_values(values, np.dtype(spec.numpy_dtype)).reshape(spec.array_shape)
            coded.append(CodedTensor(spec=spec, payload=coding.payload if index == 0 else b"",
                                     reconstruction=reconstruction, seconds=seconds))
    return coded
