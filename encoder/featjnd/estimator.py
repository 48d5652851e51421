"""The FeatJND estimator G_θ: feature f (N×C×H×W) -> same-shape perturbation δ.

    f ─► 3×3 conv C→w ─► BN ─► ReLU ─► [1×1 residual block (conv, BN, ReLU, conv, BN) + skip] × B
      ─► 3×3 conv w→C ─► u ─► δ = clamp(u, ±DELTA_LIMIT)             output "direction" (the paper's)
                             δ = exp(clamp(u, ±LOG_AMPLITUDE_LIMIT))  output "noise"

Two kinds of δ, by what the estimator was trained to tolerate (ctc/training/featjnd.py):
"direction" is one signed perturbation f + δ the task hardly sees (the paper's); "noise" is
a positive per-element amplitude such that f + δ ⊙ n, n i.i.d. of unit variance (the
quantiser's error at steps Δ = √12·δ), is just noticeable: the noise tolerance the step
allocation needs (encoder/featjnd/allocation.py).

The bottleneck width w keeps it small (w = 64, B = 2: 1.5 M parameters, 6 MB,
for C = 1280); one network serves every FPN level (all have C = 256). A pyramid
whose levels differ in channels (YOLOv5n P3–P5: 64, 128, 256) gets one such
network per level (PyramidJNDEstimator), picked by the tensor's channel count. It
is trained against a frozen task head (ctc/training/featjnd.py) and used only by the
encoder, to shape per-token steps: the decoder never needs it.

Weights are stored as safetensors, the file name carrying the first 12 hex
digits of the SHA-256 of the file's content, with the architecture in the
metadata, so a file can be neither swapped silently nor unpickled.
"""

import hashlib
import json
import os

import torch
from torch import nn

from common.errors import InputError

DELTA_LIMIT = 10.0
LOG_AMPLITUDE_LIMIT = 8.0      # noise amplitudes within e^±8 (a 1e-7 relative noise floor is far below any step)
OUTPUTS = ("direction", "noise")


class _ResidualBlock(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(width, width, 1, bias=False), nn.BatchNorm2d(width),
                                  nn.ReLU(inplace=True), nn.Conv2d(width, width, 1, bias=False),
                                  nn.BatchNorm2d(width))

    def forward(self, x):
        return torch.relu(x + self.body(x))


class FeatJNDEstimator(nn.Module):
    """`scale` multiplies δ: the calibration's κ, which makes α = 1 just noticeable
    (ctc/training/featjnd_calibration.py). `output`: "direction" or "noise" (module docstring);
    a "noise" estimator starts from a constant amplitude e^initial_log_amplitude."""

    def __init__(self, channels, width=64, num_blocks=2, scale=1.0, output="direction", initial_log_amplitude=-2.0):
        super().__init__()
        if output not in OUTPUTS:
            raise ValueError(f"estimator output must be one of {OUTPUTS}, not {output!r}")
        self.config = {"channels": channels, "width": width, "num_blocks": num_blocks}
        if output != "direction":            # the paper's estimators' configs stay as they were
            self.config["output"] = output
        if scale != 1.0:
            self.config["scale"] = float(scale)
        self.output = output
        self.scale = float(scale)
        self.entry = nn.Sequential(nn.Conv2d(channels, width, 3, padding=1, bias=False),
                                   nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        self.blocks = nn.Sequential(*[_ResidualBlock(width) for _ in range(num_blocks)])
        self.exit = nn.Conv2d(width, channels, 3, padding=1)
        if output == "noise":
            nn.init.zeros_(self.exit.weight)
            nn.init.constant_(self.exit.bias, initial_log_amplitude)

    def forward(self, features):
        raw = self.exit(self.blocks(self.entry(features)))
        if self.output == "noise":
            delta = torch.exp(torch.clamp(raw, -LOG_AMPLITUDE_LIMIT, LOG_AMPLITUDE_LIMIT))
        else:
            delta = torch.clamp(raw, -DELTA_LIMIT, DELTA_LIMIT)
        return delta if self.scale == 1.0 else self.scale * delta

    def set_scale(self, scale):
        self.scale = float(scale)
        self.config.pop("scale", None)
        if scale != 1.0:
            self.config["scale"] = self.scale

    def for_channels(self, channels):
        """The network that takes `channels`-channel tensors (this one), or None."""
        return self if channels == self.config["channels"] else None


class PyramidJNDEstimator(nn.Module):
    """One FeatJNDEstimator per pyramid level (levels differ in channels); forward maps a list of
    levels to their deltas."""

    def __init__(self, levels, width=32, num_blocks=2, scale=1.0, output="direction"):
        super().__init__()
        levels = [int(c) for c in levels]
        if len(set(levels)) != len(levels):
            raise ValueError(f"pyramid levels must differ in channels (the encoder picks the network by "
                             f"them): {levels}")
        self.config = {"levels": levels, "width": width, "num_blocks": num_blocks}
        if output != "direction":
            self.config["output"] = output
        self.output = output
        self.networks = nn.ModuleList(FeatJNDEstimator(c, width, num_blocks, output=output) for c in levels)
        self.set_scale(scale)

    def forward(self, levels):
        return [network(f) for network, f in zip(self.networks, levels)]

    def set_scale(self, scale):
        self.config.pop("scale", None)
        if scale != 1.0:
            self.config["scale"] = float(scale)
        for network in self.networks:
            network.set_scale(scale)

    def for_channels(self, channels):
        return next((n for n in self.networks if n.config["channels"] == channels), None)


def build_estimator(config):
    """The estimator a stored config describes (one network, or one per pyramid level)."""
    return PyramidJNDEstimator(**config) if "levels" in config else FeatJNDEstimator(**config)


def save_estimator(model, folder, prefix, metadata=None):
    """Write the weights as `<prefix>_<sha256[:12]>.safetensors` in folder; returns the path."""
    from safetensors.torch import save
    # One metadata entry holding sorted JSON: safetensors writes several entries in a
    # random order, which would make the bytes (and the hash in the name) irreproducible.
    info = {"fcrs": json.dumps({"config": model.config, **{k: str(v) for k, v in (metadata or {}).items()}},
                               sort_keys=True)}
    data = save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, metadata=info)
    path = os.path.join(folder, f"{prefix}_{hashlib.sha256(data).hexdigest()[:12]}.safetensors")
    with open(path, "wb") as f:
        f.write(data)
    return path


def load_estimator(path):
    """The estimator stored at path (eval mode). Checks the content hash in the file name."""
    from safetensors.torch import load
    if not os.path.isfile(path):
        raise InputError(f"FeatJND weight file not found: {path}")
    with open(path, "rb") as f:
        data = f.read()
    stem = os.path.basename(path).rsplit(".", 1)[0]
    expected = stem.rsplit("_", 1)[-1]
    if hashlib.sha256(data).hexdigest()[:len(expected)] != expected or len(expected) != 12:
        raise InputError(f"FeatJND weight file {path}: content does not match the hash in its name")
    from safetensors import safe_open
    try:
        with safe_open(path, framework="pt") as handle:
            config = json.loads(handle.metadata()["fcrs"])["config"]
        state = load(data)
    except Exception as exc:  # malformed safetensors header or metadata
        raise InputError(f"FeatJND weight file {path} is unreadable: {exc}") from None
    try:
        model = build_estimator(config)
        model.load_state_dict(state)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise InputError(f"FeatJND weight file {path} does not hold the estimator its metadata describes: "
                         f"{str(exc).splitlines()[0]}") from None
    return model.eval()


def estimator_metadata(path):
    """The training metadata stored with an estimator (task, model, command, ...)."""
    from safetensors import safe_open
    with safe_open(path, framework="pt") as handle:
        return json.loads(handle.metadata()["fcrs"])
