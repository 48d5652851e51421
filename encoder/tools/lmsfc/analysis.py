"""L-MSFC encoding of one group: FENet and the hyper-analysis in float (numpy, no torch), then
the decoder's own integer hyper-synthesis and DRNet, so that the levels coded and the
reconstruction are exactly what the decoder derives.

    levels ─► per-channel normalisation ─► FENet ─► y ─► hyper-analysis ─► z ─► ẑ = clamp(round(z))
    ẑ ─► z sub-stream;  ẑ ─► hyper-synthesis (integer) ─► μ, k
    q = round((y_c − μ) / Δ_{e_c}) ─► y sub-stream     (e_c: the rate index's latent exponents)
    μ + q · Δ_{e_c} ─► DRNet (integer) ─► reconstruction
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.errors import ConfigError
from common.syntax import SyntaxStructure, SyntaxWriter
from common.tools.lmsfc.arithmetic import FRACTION_BITS, FloatOps
from common.tools.lmsfc.codec import GroupParams, hyper_parameters, latent_values, synthesise
from common.tools.lmsfc.entropy import MAX_LEVEL, Z_LIMIT, LatentCoder, latent_steps
from common.tools.lmsfc.graph import fenet, hyper_analysis, latent_size
from common.tools.lmsfc.models import Model, model_folders
from common.tools.lmsfc.syntax import lmsfc_group_payload


def resolve_model(name_or_path):
    """A model from a file path, or from a name: the file <name>-<hash>.safetensors in the model
    folders (common/tools/lmsfc/models/ and $FCRS_LMSFC_MODELS)."""
    path = Path(name_or_path)
    if path.suffix == ".safetensors":
        if not path.is_file():
            raise ConfigError(f"L-MSFC model file {path} does not exist")
        return Model(path)
    for folder in model_folders():
        matches = sorted(folder.glob(f"{name_or_path}-" + "[0-9a-f]" * 16 + ".safetensors")) if folder.is_dir() else []
        if matches:
            return Model(matches[0])
    raise ConfigError(f"no L-MSFC model named '{name_or_path}' in {', '.join(str(f) for f in model_folders())}")


def normalised(array, normalisation):
    """(p − mean_c) / std_c per channel, float32 (the model's normalisation; none: p)."""
    array = array.astype(np.float32)
    if normalisation is None:
        return array
    mean, std = normalisation
    return (array - mean[:, None, None]) / std[:, None, None]


@dataclass
class GroupCoding:
    params: GroupParams
    payload: bytes                 # lmsfc_group_payload(): the first member's tdu_entropy_payload
    reconstruction: list           # per member, fixed-point integers (value · 2^F), as the decoder's
    y_hat: np.ndarray              # ŷ in fixed point, what DRNet decoded


def encode_group(model, arrays, rate_index, backend="numpy"):
    """The GroupCoding of C×H×W arrays (the members, largest first) at a rate index."""
    family = model.family
    sizes = [tuple(a.shape[1:]) for a in arrays]
    analysis = FloatOps(model.float_layers)
    y = fenet(analysis, family, [normalised(a, norm) for a, norm in zip(arrays, model.level_normalisation)],
              sizes)
    z = hyper_analysis(analysis, family, y)
    z_symbols = np.clip(np.round(z), -Z_LIMIT, Z_LIMIT).astype(np.int64)
    params = GroupParams(model_hash=model.hash_bytes, family=family, rate_index=rate_index,
                         level_sizes=tuple(sizes), latent_size=latent_size(family, sizes))
    exponents = model.latent_exponents(rate_index)
    mean, indices = hyper_parameters(model, params, z_symbols, backend)
    levels = np.round((y.astype(np.float64) * (1 << FRACTION_BITS) - mean) / latent_steps(exponents)).astype(np.int64)
    levels = np.clip(levels, -MAX_LEVEL + 1, MAX_LEVEL - 1)

    z_coder = LatentCoder()
    z_coder.encode_z(z_symbols, model.z_frequencies)
    y_coder = LatentCoder()
    y_coder.encode_y(levels.ravel(), indices.ravel())
    rw = SyntaxWriter()
    z_payload = z_coder.payload()
    lmsfc_group_payload(rw, SyntaxStructure(lm_z_substream_size=len(z_payload), lm_z_substream=z_payload,
                                            lm_y_substream=y_coder.payload()))
    y_hat = latent_values(mean, levels, exponents)
    return GroupCoding(params, rw.getvalue(), synthesise(model, params, y_hat, backend), y_hat)
