"""FCM-LM's hyperprior baseline: bmshj2018's scale hyperprior (Ballé et al. 2018, CompressAI's
layers) adapted to one feature type, with gain units so that one model covers every rate point.

    feature ─► layout (tokens: the patch grid as a map, [CLS] on a row below it; a C×H×W latent
    as it is) ─► per-channel normalisation (training-pool statistics) ─► zero padding to a
    multiple of STRIDE
    g_a ─► y · gain[r] ─► ŷ (Gaussian, scales from the hyperprior h_s(ẑ)) ─► ŷ / gain[r] ─► g_s

g_a:  conv 1×1 C→N, GDN, conv 3×3 N→N, GDN, conv 3×3 N→N, GDN, conv 3×3 N→M  (bmshj2018's four
      convolutions and GDNs, without its four stride-2 stages: the features are already 14–32
      times smaller than the picture, and a latent smaller than the feature bounds the
      distortion whatever the rate; a first try with one stride-2 stage and M < C stalled at
      12 % NMSE on DINOv2 tokens at every rate)
      plus a linear shortcut (conv 1×1 C→M, and M→C in g_s) initialised to the identity on the
      first C latent channels (M ≥ C), so that training starts from per-channel scalar
      quantisation with a learned entropy model and converges within an hour on two CPU cores
      (without it, 800 steps left TAEF2 latents at 34 % NMSE at 2.8 bits per point)
h_a:  conv 3×3 M→Nh, ReLU, conv 3×3/2, ReLU, conv 3×3/2        h_s: the mirror, ReLU-bounded scales
gain: per rate index r and latent channel, exp(log_gain[r, c]) (Cui et al. 2021's gain units, as
      the project's L-MSFC uses)

A CTC tool, not an FCRS tool: its decoder is CompressAI's float network and its entropy coder
(rANS), bit-exact only on the machine and library versions that encoded (the runner's MD5 check
compares the encoder's reconstruction with the decoder's). The stream is this module's own:

    u8 rate index · u16 rows · u16 columns (of the padded map) · u32 bytes of z · z · y

Models: content-hash named safetensors in models/ (float16 weights, a JSON header with the
layout, statistics and training command), trained by `python -m ctc.training.hyperprior`.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.errors import InputError

MODELS = Path(__file__).parent / "models"
STRIDE = 4                       # h_a's two stride-2 stages: the map's sides are padded to a multiple
HEADER = struct.Struct("<BHHI")
GAIN_SPAN = 5.0                  # octaves between the first and the last rate index's initial gains
# CompressAI's entropy-model tables, recomputed from the learned parameters when a model loads
DERIVED_BUFFERS = ("_quantized_cdf", "_offset", "_cdf_length", "scale_table")


@dataclass(frozen=True)
class Layout:
    """How one feature tensor becomes a C×H×W map: `grid` (h, w) for N×C tokens whose last h·w
    are a patch grid and whose first N − h·w (the [CLS] token) go on a row below it; None for a
    C×H×W tensor."""
    channels: int
    grid: tuple | None = None

    def padded_size(self, shape):
        """(rows, columns) of the map of a feature of `shape`, padded to multiples of STRIDE."""
        if self.grid is None:
            sides = shape[1:]
        else:
            h, w = self.grid
            sides = (h + -(-(shape[0] - h * w) // w), w)
        return tuple(-(-side // STRIDE) * STRIDE for side in sides)

    def to_map(self, feature):
        if self.grid is None:
            return feature
        h, w = self.grid
        prefix = feature.shape[0] - h * w
        patches = feature[prefix:].T.reshape(self.channels, h, w)
        extra = np.zeros((self.channels, -(-prefix // w), w), feature.dtype)
        extra.reshape(self.channels, -1)[:, :prefix] = feature[:prefix].T
        return np.concatenate([patches, extra], axis=1)

    def from_map(self, fmap, shape):
        if self.grid is None:
            return fmap[:, :shape[1], :shape[2]]
        h, w = self.grid
        prefix = shape[0] - h * w
        patches = fmap[:, :h].reshape(self.channels, h * w).T
        head = fmap[:, h:].reshape(self.channels, -1)[:, :prefix].T
        return np.concatenate([head, patches], axis=0)


def build_network(channels, n=96, m=128, n_hyper=64, rates=6):
    if m < channels:
        raise ValueError(f"the latent needs at least the feature's channels ({channels}), got {m}")
    """The untrained network (torch and compressai imported here, not at module import)."""
    import torch
    from compressai.entropy_models import EntropyBottleneck, GaussianConditional
    from compressai.layers import GDN
    from compressai.models import CompressionModel
    from torch import nn

    def conv(a, b, k, stride=1):
        return nn.Conv2d(a, b, k, stride=stride, padding=k // 2)

    def deconv(a, b, k, stride=1):
        if stride == 1:
            return conv(a, b, k)
        return nn.ConvTranspose2d(a, b, k, stride=stride, padding=k // 2, output_padding=stride - 1)

    class FeatureHyperprior(CompressionModel):
        def __init__(self):
            super().__init__()
            self.entropy_bottleneck = EntropyBottleneck(n_hyper)
            self.gaussian_conditional = GaussianConditional(None)
            self.g_a = nn.Sequential(conv(channels, n, 1), GDN(n), conv(n, n, 3), GDN(n), conv(n, n, 3), GDN(n),
                                     conv(n, m, 3))
            self.g_s = nn.Sequential(conv(m, n, 3), GDN(n, inverse=True), conv(n, n, 3), GDN(n, inverse=True),
                                     conv(n, n, 3), GDN(n, inverse=True), conv(n, channels, 1))
            self.shortcut_a = nn.Conv2d(channels, m, 1, bias=False)
            self.shortcut_s = nn.Conv2d(m, channels, 1, bias=False)
            with torch.no_grad():
                eye = torch.eye(m, channels)[:, :, None, None]
                self.shortcut_a.weight.copy_(eye)
                self.shortcut_s.weight.copy_(eye.transpose(0, 1))
            self.h_a = nn.Sequential(conv(m, n_hyper, 3), nn.ReLU(inplace=True), conv(n_hyper, n_hyper, 3, 2),
                                     nn.ReLU(inplace=True), conv(n_hyper, n_hyper, 3, 2))
            self.h_s = nn.Sequential(deconv(n_hyper, n_hyper, 3, 2), nn.ReLU(inplace=True),
                                     deconv(n_hyper, n_hyper, 3, 2), nn.ReLU(inplace=True), conv(n_hyper, m, 3),
                                     nn.ReLU(inplace=True))
            # the latent's steps start spread over GAIN_SPAN octaves, finest first (λ spans about
            # twice as many octaves: distortion goes with the step squared)
            octaves = torch.linspace(GAIN_SPAN / 2, -GAIN_SPAN / 2, rates) if rates > 1 else torch.zeros(1)
            self.log_gain = nn.Parameter((octaves * math.log(2))[:, None].repeat(1, m))

        def gain(self, rate):
            return self.log_gain[rate].exp()[..., None, None]

        def forward(self, x, rate):
            """Training: the map's reconstruction and the likelihoods of y and z (noise for rounding)."""
            gain = self.gain(rate)
            y = self.analysis(x) * gain
            z = self.h_a(torch.abs(y))
            z_hat, z_likelihoods = self.entropy_bottleneck(z)
            y_hat, y_likelihoods = self.gaussian_conditional(y, self.h_s(z_hat))
            return self.synthesis(y_hat / gain), y_likelihoods, z_likelihoods

        def analysis(self, x):
            return self.g_a(x) + self.shortcut_a(x)

        def synthesis(self, y):
            return self.g_s(y) + self.shortcut_s(y)

        def compress(self, x, rate):
            gain = self.gain(rate)
            y = self.analysis(x) * gain
            z = self.h_a(torch.abs(y))
            z_strings = self.entropy_bottleneck.compress(z)
            z_hat = self.entropy_bottleneck.decompress(z_strings, z.shape[-2:])
            indexes = self.gaussian_conditional.build_indexes(self.h_s(z_hat))
            y_strings = self.gaussian_conditional.compress(y, indexes)
            y_hat = self.gaussian_conditional.quantize(y, "dequantize")
            return y_strings[0], z_strings[0], self.synthesis(y_hat / gain)

        def decompress(self, y_string, z_string, latent_shape, rate):
            z_hat = self.entropy_bottleneck.decompress([z_string], latent_shape)
            indexes = self.gaussian_conditional.build_indexes(self.h_s(z_hat))
            y_hat = self.gaussian_conditional.decompress([y_string], indexes, z_hat.dtype)
            return self.synthesis(y_hat / self.gain(rate))

    return FeatureHyperprior()


def learned_state(network):
    """The parameters and buffers a model file holds (not the tables CompressAI derives from them)."""
    return {key: value for key, value in network.state_dict().items()
            if not any(key.endswith(name) for name in DERIVED_BUFFERS)}


class HyperpriorModel:
    """A trained model file: its layout, normalisation and network, ready to code features."""

    def __init__(self, path):
        import torch
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise InputError(f"hyperprior model not found: {path}")
        try:
            import compressai  # noqa: F401
        except ImportError:
            raise InputError("the hyperprior tool needs compressai (pip install -e '.[largemodels]')") from None
        try:
            with safe_open(str(path), "pt") as fh:
                self.meta = json.loads(fh.metadata()["fcrs"])
                state = {key: fh.get_tensor(key).float() for key in fh.keys()}
        except Exception as exc:        # safetensors' own error, no FCRS header, a header that is not JSON
            raise InputError(f"{path.name}: not a hyperprior model file ({str(exc).splitlines()[0]})") from None
        self.name = path.name
        self.layout = Layout(self.meta["channels"], tuple(self.meta["grid"]) if self.meta["grid"] else None)
        self.rates = len(self.meta["lambdas"])
        self.mean = np.asarray(self.meta["mean"], np.float32)[:, None, None]
        self.std = np.asarray(self.meta["std"], np.float32)[:, None, None]
        torch.manual_seed(0)
        self.network = build_network(self.meta["channels"], *self.meta["widths"], rates=self.rates)
        # nn.Module's loader: CompressAI's own expects the derived tables, which update() computes
        missing, unexpected = torch.nn.Module.load_state_dict(self.network, state, strict=False)
        if unexpected or any(not any(key.endswith(name) for name in DERIVED_BUFFERS) for key in missing):
            raise InputError(f"{path.name}: does not match the hyperprior network ({len(missing)} missing, "
                             f"{len(unexpected)} unexpected tensors)")
        self.network.update(force=True)
        self.network.eval()

    def padded_map(self, feature):
        """The normalised C×H×W map the network codes, zero-padded to multiples of STRIDE."""
        fmap = (self.layout.to_map(np.asarray(feature, np.float32)) - self.mean) / self.std
        rows, cols = self.layout.padded_size(feature.shape)
        padded = np.zeros((fmap.shape[0], rows, cols), np.float32)
        padded[:, :fmap.shape[1], :fmap.shape[2]] = fmap
        return padded

    def _feature(self, padded, shape):
        width = self.layout.grid[1] if self.layout.grid else shape[2]      # the padding columns out
        return self.layout.from_map((padded * self.std + self.mean)[:, :, :width], shape)

    def encode(self, feature, rate):
        """(stream bytes, the encoder's reconstruction) of one feature at rate index `rate`."""
        import torch

        if not 0 <= rate < self.rates:
            raise InputError(f"{self.name}: rate index {rate} outside 0..{self.rates - 1}")
        padded = self.padded_map(feature)
        with torch.no_grad():
            y_string, z_string, recon = self.network.compress(torch.from_numpy(padded)[None], rate)
        stream = HEADER.pack(rate, padded.shape[1], padded.shape[2], len(z_string)) + z_string + y_string
        return stream, self._feature(recon[0].numpy(), feature.shape)

    def decode(self, stream, shape):
        """The feature (of `shape`, which the CTC knows from the task) a stream decodes to."""
        import torch

        if len(stream) < HEADER.size:
            raise InputError("hyperprior stream: truncated header")
        rate, rows, cols, z_bytes = HEADER.unpack_from(stream)
        if rate >= self.rates or (rows, cols) != self.layout.padded_size(shape) or HEADER.size + z_bytes > len(stream):
            raise InputError("hyperprior stream: malformed header")
        z_string = stream[HEADER.size:HEADER.size + z_bytes]
        y_string = stream[HEADER.size + z_bytes:]
        with torch.no_grad():
            recon = self.network.decompress(y_string, z_string, (rows // STRIDE, cols // STRIDE), rate)
        return self._feature(recon[0].numpy(), shape)


def save_model(network, meta, folder=MODELS):
    """Writes a model file: the learned state in float16, `meta` (feature, channels, grid, widths,
    lambdas, mean, std, command) as its JSON header; named <feature>-<content hash>. Returns its path."""
    import torch
    from safetensors.torch import save_file

    state = {key: value.detach().to(torch.float16).contiguous() for key, value in learned_state(network).items()}
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    staging = folder / f".hyperprior-{meta['feature']}.staging"
    save_file(state, str(staging), metadata={"fcrs": json.dumps(meta)})
    final = folder / f"hyperprior-{meta['feature']}-{content_hash(staging)}.safetensors"
    staging.replace(final)
    final.chmod(0o644)                  # safetensors writes its files private
    return final


def model_path(name):
    """A model file in models/ by its full name, or the one whose name starts with `name`-."""
    path = Path(name)
    if path.is_file():
        return path
    matches = sorted(MODELS.glob(f"{name}-*.safetensors"))
    if len(matches) != 1:
        raise InputError(f"hyperprior model '{name}': {len(matches)} files match in {MODELS}")
    return matches[0]


def content_hash(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def digest(array):
    return hashlib.md5(np.ascontiguousarray(array, np.float32).tobytes()).hexdigest()
