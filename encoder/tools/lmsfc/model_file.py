"""Export a trained FusionModel to a model file (safetensors, content-hash named).

The file holds the encoder's analysis layers (enc.*, ha.*, float16: informative) and the
decoder's normative integer data (hs.*, dec.* as weight_int / bias_int / shift,
z's frequency tables); `common/tools/lmsfc/models.py` reads it and defines the
content hash. Integerisation: w_int = round(w · 2^s) with the layer's shift s
(the largest with max |w_int| ≤ WEIGHT_LIMIT, at most 24), b_int = round(b · 2^(F + s)).
"""

import json
from pathlib import Path

import numpy as np
import torch

from common.tools.lmsfc.arithmetic import FRACTION_BITS
from common.tools.lmsfc.entropy import Z_LIMIT, quantise_frequencies
from common.tools.lmsfc.graph import DECODER_PREFIXES
from common.tools.lmsfc.models import DEFAULT_MODEL_DIR, model_hash, write_model_file
from encoder.tools.lmsfc.network import weight_shift

__all__ = ["DEFAULT_MODEL_DIR", "save_model", "model_arrays"]


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


def model_arrays(model):
    """{name: array} of the model file."""
    arrays = {}
    for name, tensor in model.params().items():
        layer, kind = name.rsplit(".", 1)
        value = tensor.detach().double()
        if not layer.startswith(DECODER_PREFIXES):
            arrays[name] = value.half().numpy()      # informative: float16 halves the file
            continue
        weight = model.params()[layer + ".weight"]
        shift = weight_shift(weight)
        if kind == "weight":
            arrays[layer + ".weight_int"] = torch.round(value * 2.0 ** shift).numpy().astype(np.int16)
            arrays[layer + ".shift"] = np.array([shift], dtype=np.int64)
        else:
            arrays[layer + ".bias_int"] = torch.round(value * 2.0 ** (shift + FRACTION_BITS)).numpy().astype(np.int64)
    arrays["z_frequencies"] = z_frequencies(model)
    return arrays


def save_model(model, folder, name, info):
    """Write <folder>/<name>-<hash16>.safetensors; returns its path."""
    arrays = model_arrays(model)
    family = model.family
    digest = model_hash(family, arrays)
    path = Path(folder) / f"{name}-{digest[:16]}.safetensors"
    write_model_file(path, family, arrays, {"name": name, "info": json.dumps(info, default=str)})
    return path
