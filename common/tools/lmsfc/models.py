"""L-MSFC model files: reading them, their content hash, finding one by hash.

A model file is safetensors (header JSON + little-endian arrays) whose metadata
holds the family parameters. The decoder-side (normative) part is every array
named hs.* / dec.* (weight_int int16, bias_int int64, shift int64),
z_frequencies and, for a model with gain units, gain_exponents (int64, one row of
M latent step exponents per rate index); the encoder's part is the float enc.* /
ha.* layers and the per-level normalisation level_mean.i / level_std.i. The
model's content hash is the SHA-256 of the family parameters (as canonical JSON)
followed by, for each normative array in sorted name order, its name, dtype,
shape and bytes. The parameter set signals the first 8 bytes of
it; a file is named <name>-<first 16 hex digits>.safetensors.
"""

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np

from common.errors import BitstreamError
from common.tools.lmsfc.arithmetic import BIAS_LIMIT, MAX_CONV_INPUTS, WEIGHT_LIMIT
from common.tools.lmsfc.entropy import FREQUENCY_BITS, RATE_INDEX_MAX, RATE_INDEX_MIN, Z_LIMIT
from common.tools.lmsfc.graph import DECODER_PREFIXES, Family, layer_shapes

DEFAULT_MODEL_DIR = Path(__file__).with_name("models")
MODEL_PATH_VARIABLE = "FCRS_LMSFC_MODELS"       # extra folders searched, os.pathsep-separated
HASH_BYTES = 8


NORMATIVE_ARRAYS = ("z_frequencies", "gain_exponents")


def is_normative(name):
    return name.startswith(DECODER_PREFIXES) or name in NORMATIVE_ARRAYS


def family_json(family):
    return json.dumps(asdict(family), sort_keys=True, separators=(",", ":"))


def model_hash(family, arrays):
    """Hex SHA-256 of the family and the normative arrays."""
    digest = hashlib.sha256(family_json(family).encode())
    for name in sorted(n for n in arrays if is_normative(n)):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def write_model_file(path, family, arrays, metadata):
    from safetensors.numpy import save_file
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    save_file({n: np.ascontiguousarray(a) for n, a in arrays.items()}, str(temporary),
              metadata={"family": family_json(family), **metadata})
    os.chmod(temporary, 0o644)         # a model file is data to share (save_file creates it private)
    os.replace(temporary, path)


class Model:
    """A loaded model: family, integer decoder layers {name: (w, b, s)}, z tables, float encoder
    layers {name: (w, b)}, and its hash."""

    def __init__(self, path):
        from safetensors import safe_open
        self.path = Path(path)
        try:
            with safe_open(str(path), framework="numpy") as handle:
                metadata = handle.metadata() or {}
                arrays = {name: handle.get_tensor(name) for name in handle.keys()}
            self.family = family_from_json(metadata["family"])
        except Exception as exc:     # safetensors raises its own SafetensorError for a damaged file
            raise BitstreamError(f"L-MSFC model file {path} is unreadable: {exc}") from None
        self.name = metadata.get("name", self.path.stem)
        self.info = metadata.get("info", "")
        self.hash = model_hash(self.family, arrays)
        self.integer_layers, self.float_layers = {}, {}
        missing = [name for name in self._required_arrays() if name not in arrays]
        if missing:
            raise BitstreamError(f"L-MSFC model file {path} lacks {', '.join(missing[:3])}"
                                 f"{' …' if len(missing) > 3 else ''}")
        for layer, shape in layer_shapes(self.family).items():
            if layer.startswith(DECODER_PREFIXES):
                weight = arrays[layer + ".weight_int"].astype(np.int64)
                bias = arrays[layer + ".bias_int"].astype(np.int64)
                shift = int(arrays[layer + ".shift"].ravel()[0])
                if (weight.shape != shape or bias.shape != (shape[0],) or np.abs(weight).max() > WEIGHT_LIMIT
                        or np.abs(bias).max() > BIAS_LIMIT or not 0 <= shift <= 24
                        or shape[1] * shape[2] * shape[3] > MAX_CONV_INPUTS):
                    raise BitstreamError(f"L-MSFC model file {path}: layer {layer} breaks the integer bounds")
                self.integer_layers[layer] = (weight, bias, shift)
            else:
                self.float_layers[layer] = (arrays[layer + ".weight"].astype(np.float32),
                                            arrays[layer + ".bias"].astype(np.float32))
        self.z_frequencies = arrays["z_frequencies"].astype(np.int64)
        if (self.z_frequencies.shape != (self.family.hyper, 2 * Z_LIMIT + 1) or self.z_frequencies.min() < 1
                or (self.z_frequencies.sum(axis=1) != 1 << FREQUENCY_BITS).any()):
            raise BitstreamError(f"L-MSFC model file {path}: z_frequencies are not {self.family.hyper} tables of "
                                 f"{2 * Z_LIMIT + 1} frequencies >= 1 summing to 2^{FREQUENCY_BITS}")
        self.gain_exponents = arrays.get("gain_exponents")
        if self.gain_exponents is not None:
            self.gain_exponents = self.gain_exponents.astype(np.int64)
            if (self.gain_exponents.ndim != 2 or self.gain_exponents.shape[1] != self.family.latent
                    or not 1 <= len(self.gain_exponents) <= RATE_INDEX_MAX + 1
                    or self.gain_exponents.min() < RATE_INDEX_MIN or self.gain_exponents.max() > RATE_INDEX_MAX):
                raise BitstreamError(f"L-MSFC model file {path}: gain_exponents is not a table of 1 to "
                                     f"{RATE_INDEX_MAX + 1} rows of {self.family.latent} exponents in "
                                     f"[{RATE_INDEX_MIN}, {RATE_INDEX_MAX}]")
        self.level_normalisation = [(arrays[f"level_mean.{i}"].astype(np.float32),
                                     arrays[f"level_std.{i}"].astype(np.float32))
                                    if f"level_mean.{i}" in arrays else None for i in range(self.family.num_levels)]

    def _required_arrays(self):
        names = ["z_frequencies"]
        for layer in layer_shapes(self.family):
            suffixes = ("weight_int", "bias_int", "shift") if layer.startswith(DECODER_PREFIXES) else ("weight", "bias")
            names += [f"{layer}.{suffix}" for suffix in suffixes]
        return names

    @property
    def rate_indices(self):
        """(lowest, highest) rate index the model codes: the gain table's rows, or the whole
        range of the step table for a model without gain units."""
        if self.gain_exponents is None:
            return RATE_INDEX_MIN, RATE_INDEX_MAX
        return 0, len(self.gain_exponents) - 1

    def latent_exponents(self, rate_index):
        """e_c (M,) of rate index r: gain_exponents[r], or r for every channel without gain units;
        a BitstreamError for a rate index the model does not code."""
        low, high = self.rate_indices
        if not low <= rate_index <= high:
            raise BitstreamError(f"L-MSFC model {self.name} codes rate indices {low} … {high}; the stream has "
                                 f"{rate_index}")
        if self.gain_exponents is None:
            return np.full(self.family.latent, rate_index, dtype=np.int64)
        return self.gain_exponents[rate_index]

    @property
    def hash_bytes(self):
        return bytes.fromhex(self.hash)[:HASH_BYTES]


def family_from_json(text):
    fields = json.loads(text)
    return Family(channels=tuple(int(c) for c in fields["channels"]), trunk=int(fields["trunk"]),
                  latent=int(fields["latent"]), hyper=int(fields["hyper"]), extra_stages=int(fields["extra_stages"]))


def model_folders():
    extra = [Path(p) for p in os.environ.get(MODEL_PATH_VARIABLE, "").split(os.pathsep) if p]
    return extra + [DEFAULT_MODEL_DIR]


_CACHE = {}


def find_model(hash_bytes):
    """The model whose hash starts with hash_bytes, from the model folders; a BitstreamError naming
    the hash when none has it."""
    key = hash_bytes.hex()
    if key not in _CACHE:
        for folder in model_folders():
            for path in sorted(folder.glob(f"*-{key}*.safetensors")) if folder.is_dir() else []:
                model = Model(path)
                if model.hash.startswith(key):
                    _CACHE[key] = model
                    break
            if key in _CACHE:
                break
        else:
            raise BitstreamError(f"the stream needs L-MSFC model {key}, which is not installed "
                                 f"(searched {', '.join(str(f) for f in model_folders())}; "
                                 f"add folders with {MODEL_PATH_VARIABLE})")
    return _CACHE[key]
