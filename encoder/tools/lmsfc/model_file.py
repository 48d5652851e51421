"""Export a trained FusionModel to a model file (safetensors, content-hash named).

The file holds the encoder's analysis layers (enc.*, ha.*, float16: informative) and the
decoder's normative integer data (hs.*, dec.* as weight_int / bias_int / shift,
z's frequency tables); `common/tools/lmsfc/models.py` reads it and defines the
content hash. Integerisation: w_int = round(w · 2^s) with the layer's shift s
(the largest with max |w_int| ≤ WEIGHT_LIMIT, at most 24), b_int = round(b · 2^(F + s)).

The model's per-level normalisation is folded into DRNet's output convolutions (their
outputs are then the levels themselves) and stored for the encoder as level_mean.i /
level_std.i (informative); a gain table is stored as gain_exponents (normative).
`initialise_from` reads a model file back into a FusionModel, to continue training it.
"""

import json
from pathlib import Path

import numpy as np
import torch

from common.tools.lmsfc.arithmetic import FRACTION_BITS
from common.tools.lmsfc.entropy import Z_LIMIT, quantise_frequencies
from common.tools.lmsfc.graph import DECODER_PREFIXES
from common.tools.lmsfc.models import DEFAULT_MODEL_DIR, Model, model_hash, write_model_file
from encoder.tools.lmsfc.network import weight_shift

__all__ = ["DEFAULT_MODEL_DIR", "save_model", "model_arrays", "initialise_from"]


def z_frequencies(model):
    """Per channel of z: the discretised logistic over −Z_LIMIT … Z_LIMIT, tails on the ends."""
    loc = model.z_loc.detach().double().numpy()
    scale = np.exp(model.z_log_scale.detach().double().numpy())
    symbols = np.arange(-Z_LIMIT, Z_LIMIT + 1, dtype=np.float64)
    rows = []
    for c in range(len(loc)):
        upper = 1 / (1 + np.exp(-(symbols + 0.5 - loc[c]) / scale[c]))
        lower = 1 / (1 + np.exp(-(symbols - 0.5 - loc[c]) / scale[c]))
        upper[-1], lower[0] = 1.0, 0.0
        rows.append(quantise_frequencies(np.maximum(upper - lower, 1e-12)))
    return np.stack(rows)


def output_layer_level(name):
    """i of DRNet's output convolution dec.out.i, None for every other layer."""
    return int(name.split(".")[2]) if name.startswith("dec.out.") else None


def folded_params(model):
    """The model's layers with the denormalisation folded into each dec.out.i:
    w·σ_c, b·σ_c + μ_c per output channel c."""
    params = {name: tensor.detach().double() for name, tensor in model.params().items()}
    for name in list(params):
        level = output_layer_level(name)
        if level is None:
            continue
        mean, std = (t.double() for t in model.normalisation(level))
        shape = (-1, 1, 1, 1) if name.endswith(".weight") else (-1,)
        params[name] = params[name] * std.view(shape) + (mean if name.endswith(".bias") else 0)
    return params


def model_arrays(model):
    """{name: array} of the model file."""
    arrays = {}
    params = folded_params(model)
    for name, value in params.items():
        layer, kind = name.rsplit(".", 1)
        if not layer.startswith(DECODER_PREFIXES):
            arrays[name] = value.half().numpy()      # informative: float16 halves the file
            continue
        weight = params[layer + ".weight"]
        shift = weight_shift(weight)
        if kind == "weight":
            arrays[layer + ".weight_int"] = torch.round(value * 2.0 ** shift).numpy().astype(np.int16)
            arrays[layer + ".shift"] = np.array([shift], dtype=np.int64)
        else:
            arrays[layer + ".bias_int"] = torch.round(value * 2.0 ** (shift + FRACTION_BITS)).numpy().astype(np.int64)
    arrays["z_frequencies"] = z_frequencies(model)
    for i in range(model.family.num_levels):
        mean, std = model.normalisation(i)
        arrays[f"level_mean.{i}"] = mean.detach().float().numpy()
        arrays[f"level_std.{i}"] = std.detach().float().numpy()
    if model.gain_exponents is not None:
        arrays["gain_exponents"] = torch.round(model.gain_exponents.detach()).numpy().astype(np.int64)
    return arrays


def z_prior_of(frequencies):
    """(loc, scale) of the logistic with the mean and variance of each row of z's tables."""
    symbols = np.arange(-Z_LIMIT, Z_LIMIT + 1, dtype=np.float64)
    probabilities = frequencies / frequencies.sum(axis=1, keepdims=True)
    loc = probabilities @ symbols
    variance = probabilities @ symbols ** 2 - loc ** 2
    return loc, np.sqrt(3 * np.maximum(variance, 1e-3)) / np.pi


def initialise_from(model, path):
    """Load the model file at `path` into `model` (same family): the float layers, the integer
    layers as w_int / 2^s and b_int / 2^(F + s), z's prior fitted to its tables, the gain table
    when both have one of the same size. The file's output convolutions are unfolded with its own
    normalisation (none for a file without one), then expressed in `model`'s: the result
    computes what the file computes (exactly with the file's own normalisation; with another,
    away from the zero padding of FENet's input convolutions, which now pads another value)."""
    from safetensors import safe_open

    source = Model(path)
    if source.family != model.family:
        raise ValueError(f"{path} has family {source.family}, the model {model.family}")
    with safe_open(str(path), framework="numpy") as handle:
        arrays = {name: handle.get_tensor(name) for name in handle.keys()}
    values = {}
    for layer in source.float_layers:
        values[layer + ".weight"], values[layer + ".bias"] = (torch.from_numpy(a.astype(np.float64))
                                                              for a in source.float_layers[layer])
    for layer, (weight, bias, shift) in source.integer_layers.items():
        values[layer + ".weight"] = torch.from_numpy(weight / 2.0 ** shift)
        values[layer + ".bias"] = torch.from_numpy(bias / 2.0 ** (shift + FRACTION_BITS))
    for i, channels in enumerate(model.family.channels):
        file_mean = torch.from_numpy(arrays.get(f"level_mean.{i}", np.zeros(channels)).astype(np.float64))
        file_std = torch.from_numpy(arrays.get(f"level_std.{i}", np.ones(channels)).astype(np.float64))
        mean, std = (t.double() for t in model.normalisation(i))
        # the file's levels are x_file = (p − file_mean) / file_std, the model's x = (p − mean) / std:
        # x_file = x · std / file_std + (mean − file_mean) / file_std, folded into enc.i.in's level columns
        weight, bias = values[f"enc.{i}.in.weight"], values[f"enc.{i}.in.bias"]
        columns = slice(weight.shape[1] - channels, None)
        scale = (std / file_std).view(1, -1, 1, 1)
        shift_in = ((mean - file_mean) / file_std).view(1, -1, 1, 1)
        bias = bias + (weight[:, columns] * shift_in).sum(dim=(1, 2, 3))
        weight = weight.clone()
        weight[:, columns] = weight[:, columns] * scale
        values[f"enc.{i}.in.weight"], values[f"enc.{i}.in.bias"] = weight, bias
        # dec.out.i gives p in the file; the model's gives (p − mean) / std
        out_weight, out_bias = values[f"dec.out.{i}.weight"], values[f"dec.out.{i}.bias"]
        values[f"dec.out.{i}.weight"] = out_weight / std.view(-1, 1, 1, 1)
        values[f"dec.out.{i}.bias"] = (out_bias - mean) / std
    with torch.no_grad():
        for key, parameter in model.weights.items():
            parameter.copy_(values[key.replace("__", ".").replace("_", ".")].float())
        loc, scale = z_prior_of(source.z_frequencies.astype(np.float64))
        model.z_loc.copy_(torch.from_numpy(loc).float())
        model.z_log_scale.copy_(torch.from_numpy(np.log(scale)).float())
        gains = arrays.get("gain_exponents")
        if gains is not None and model.gain_exponents is not None and gains.shape == model.gain_exponents.shape:
            model.gain_exponents.copy_(torch.from_numpy(gains.astype(np.float32)))


def save_model(model, folder, name, info):
    """Write <folder>/<name>-<hash16>.safetensors; returns its path."""
    arrays = model_arrays(model)
    family = model.family
    digest = model_hash(family, arrays)
    path = Path(folder) / f"{name}-{digest[:16]}.safetensors"
    write_model_file(path, family, arrays, {"name": name, "info": json.dumps(info, default=str)})
    return path
