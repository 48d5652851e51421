"""L-MSFC in torch, for training: the networks of common/tools/lmsfc/graph.py with float
weights, the mean-scale hyperprior's rate, and the decoder's integer arithmetic simulated
(straight-through) for the fine-tuning stage.

The rate model is the one the bitstream uses: y_c − μ_c is quantised with the step
Δ = 2^(e_c/8) of its latent exponent e_c, its scale index is round(t) − e_c on the ladder
σ_k = SIGMA_MIN · 2^(k/8) (in units of Δ), z has one factorised logistic per channel.
A model without gain units has e_c = r for every channel (r: the rate index); a model
with them learns a gain table E (rate indices × M, rounded straight-through to the
ladder's 1/8 octave), e_c = E[r, c]: a per-channel gain on y before quantisation and its
exact inverse after (Cui et al. 2021's gain units, tied), so each rate index spends its
precision where its λ says.

Each level is normalised per channel (training-pool mean and standard deviation, buffers
of the model) before FENet and denormalised after DRNet; the export folds the
denormalisation into DRNet's output convolutions and stores the normalisation for the
encoder (model_file.py).
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from common.tools.lmsfc.arithmetic import ACTIVATION_LIMIT, FRACTION_BITS, SIGMOID_BITS, WEIGHT_LIMIT
from common.tools.lmsfc.entropy import (LADDER_STEPS_PER_OCTAVE, NUM_SCALES, RATE_INDEX_MAX, RATE_INDEX_MIN, SIGMA_MIN,
                                        Z_LIMIT)
from common.tools.lmsfc.graph import (drnet, fenet, hyper_analysis, hyper_synthesis, latent_size, layer_shapes)

ACT_SCALE = float(1 << FRACTION_BITS)


def round_ste(x):
    return x + (torch.round(x) - x).detach()


def weight_shift(weight):
    """The layer's shift s: the largest with max |w| · 2^s ≤ WEIGHT_LIMIT (at most 24)."""
    peak = float(weight.detach().abs().max())
    if peak == 0:
        return 24
    return max(0, min(24, math.floor(math.log2(WEIGHT_LIMIT / peak))))


class TorchOps:
    """graph.py's operations on N×C×H×W float tensors; `simulate_integer` rounds weights and
    activations as the integer decoder does (straight-through gradients)."""

    def __init__(self, params, simulate_integer=False):
        self.params, self.simulate = params, simulate_integer

    def _activation(self, x):
        if not self.simulate:
            return x
        limit = ACTIVATION_LIMIT / ACT_SCALE
        return torch.clamp(round_ste(x * ACT_SCALE) / ACT_SCALE, -limit, limit)

    def conv(self, name, x, channels, kernel, stride=1):
        weight, bias = self.params[name + ".weight"], self.params[name + ".bias"]
        if self.simulate:
            scale = float(1 << weight_shift(weight))
            weight = round_ste(weight * scale) / scale
        return self._activation(F.conv2d(x, weight, bias, stride=stride, padding=kernel // 2))

    def relu(self, x):
        return F.relu(x)

    def add(self, a, b):
        return self._activation(a + b)

    def concat(self, a, b):
        return torch.cat([a, b], dim=1)

    def pixel_shuffle(self, x):
        return F.pixel_shuffle(x, 2)

    def crop(self, x, size):
        return x[:, :, :size[0], :size[1]]

    def sigmoid_gate(self, x, gate):
        smooth = torch.sigmoid(gate)
        if not self.simulate:
            return x * smooth
        index = torch.clamp(torch.floor(gate * 16) + 128, 0, 255)
        table = torch.round(torch.sigmoid((index - 127.5) / 16) * (1 << SIGMOID_BITS)) / (1 << SIGMOID_BITS)
        return self._activation(x * (smooth + (table - smooth).detach()))


class FusionModel(nn.Module):
    """One L-MSFC model of a family: every layer of graph.layer_shapes plus z's factorised prior,
    the per-level normalisation and, when `gain_init` is given (one initial latent exponent per
    rate index), the gain table. `checkerboard` adds a checkerboard context model (He et al. 2021;
    training only, for its ablation: neither the model file nor the decoder has it yet)."""

    def __init__(self, family, gain_init=None, checkerboard=False):
        super().__init__()
        self.family = family
        self.context = checkerboard_context(family) if checkerboard else None
        for i, channels in enumerate(family.channels):
            self.register_buffer(f"level_mean_{i}", torch.zeros(channels))
            self.register_buffer(f"level_std_{i}", torch.ones(channels))
        self.gain_exponents = None
        if gain_init is not None:
            table = torch.tensor([float(e) for e in gain_init]).view(-1, 1).repeat(1, family.latent)
            self.gain_exponents = nn.Parameter(table)
        self.names = sorted(layer_shapes(family))
        self.weights = nn.ParameterDict()
        for name, shape in layer_shapes(family).items():
            weight = torch.empty(shape)
            nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
            if name == "hs.out":
                weight.mul_(0.1)
            key = name.replace(".", "_")
            self.weights[key + "__weight"] = nn.Parameter(weight)
            self.weights[key + "__bias"] = nn.Parameter(torch.zeros(shape[0]))
        with torch.no_grad():      # start the scale channels mid-ladder
            self.weights["hs_out__bias"][family.latent:] = NUM_SCALES / 2
        self.z_loc = nn.Parameter(torch.zeros(family.hyper))
        self.z_log_scale = nn.Parameter(torch.zeros(family.hyper))

    def params(self):
        return {key.replace("__", ".").replace("_", "."): value for key, value in self.weights.items()}

    @property
    def num_rates(self):
        """Rate indices of the gain table (0: no gain units, r is the latent exponent)."""
        return 0 if self.gain_exponents is None else self.gain_exponents.shape[0]

    def normalisation(self, i):
        return getattr(self, f"level_mean_{i}"), getattr(self, f"level_std_{i}")

    def set_normalisation(self, means, stds):
        for i, (mean, std) in enumerate(zip(means, stds)):
            self.normalisation(i)[0].copy_(torch.as_tensor(mean))
            self.normalisation(i)[1].copy_(torch.as_tensor(std))

    def latent_exponents(self, rate_index):
        """e (N×M): the latent step exponent of every channel of y for each sample's rate index."""
        if self.gain_exponents is None:
            return rate_index.float().view(-1, 1).expand(-1, self.family.latent)
        table = torch.clamp(round_ste(self.gain_exponents), RATE_INDEX_MIN, RATE_INDEX_MAX)
        return table[rate_index.long()]

    def forward(self, levels, rate_index, simulate_integer=False, quantise=True):
        """levels: [N×C_i×H_i×W_i] -> (reconstructed levels, y bits, z bits) per sample (N,).
        quantise=False passes y itself to DRNet (the transform's own loss, the limit of any rate)."""
        ops = TorchOps(self.params(), simulate_integer)
        sizes = [tuple(level.shape[2:]) for level in levels]
        norms = [self.normalisation(i) for i in range(len(levels))]
        levels = [(level - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
                  for level, (mean, std) in zip(levels, norms)]
        y = fenet(ops, self.family, levels, sizes)
        z = hyper_analysis(ops, self.family, y)
        z_bits = self.z_bits(z + torch.empty_like(z).uniform_(-0.5, 0.5))
        z_hat = torch.clamp(round_ste(z), -Z_LIMIT, Z_LIMIT)
        hyper = hyper_synthesis(TorchOps(ops.params, simulate_integer), self.family, z_hat, latent_size(
            self.family, sizes))
        mean, scale_t = hyper[:, :self.family.latent], hyper[:, self.family.latent:]
        exponents = self.latent_exponents(rate_index)[:, :, None, None]
        step = 2.0 ** (exponents / LADDER_STEPS_PER_OCTAVE)
        if simulate_integer:
            scale_t = round_ste(scale_t)
        k = torch.clamp(scale_t - exponents, 0, NUM_SCALES - 1)
        sigma = SIGMA_MIN * 2.0 ** (k / LADDER_STEPS_PER_OCTAVE)
        v = (y - mean) / step
        shift = torch.zeros_like(v)
        if self.context is not None:       # second pass: the anchors' symbols refine the rest's mean and scale
            anchors = checkerboard_anchors(v.shape[2:], v.device)
            refinement = self.context(round_ste(v) * anchors) * (1 - anchors)
            shift = refinement[:, :self.family.latent]
            v = v - shift
            offset = refinement[:, self.family.latent:]
            k = torch.clamp(scale_t + (round_ste(offset) if simulate_integer else offset) - exponents, 0,
                            NUM_SCALES - 1)
            sigma = SIGMA_MIN * 2.0 ** (k / LADDER_STEPS_PER_OCTAVE)
        noisy = v + torch.empty_like(v).uniform_(-0.5, 0.5)
        y_bits = gaussian_bits(noisy, sigma)
        y_hat = mean + step * (round_ste(v) + shift) if quantise else y
        recon = drnet(ops, self.family, y_hat, sizes)
        recon = [r * std.view(1, -1, 1, 1) + mean.view(1, -1, 1, 1) for r, (mean, std) in zip(recon, norms)]
        return recon, y_bits.flatten(1).sum(1), z_bits.flatten(1).sum(1)

    def z_bits(self, z):
        loc = self.z_loc.view(1, -1, 1, 1)
        scale = torch.exp(self.z_log_scale).view(1, -1, 1, 1)
        upper = torch.sigmoid((z + 0.5 - loc) / scale)
        lower = torch.sigmoid((z - 0.5 - loc) / scale)
        return -torch.log2(torch.clamp(upper - lower, min=1e-9))


def checkerboard_context(family):
    """Anchor symbols (in latent steps) -> (mean shift in latent steps, scale-index offset) of the
    non-anchors: conv3 to the hyper width, ReLU, conv1. Zero-initialised output, so a warm
    start computes what the model without context computed."""
    net = nn.Sequential(nn.Conv2d(family.latent, family.hyper, 3, padding=1), nn.ReLU(),
                        nn.Conv2d(family.hyper, 2 * family.latent, 1))
    nn.init.zeros_(net[2].weight)
    nn.init.zeros_(net[2].bias)
    return net


def checkerboard_anchors(size, device):
    """1 at the anchors ((row + column) even: coded first, from the hyperprior alone), 0 elsewhere."""
    rows = torch.arange(size[0], device=device).view(-1, 1)
    columns = torch.arange(size[1], device=device).view(1, -1)
    return ((rows + columns) % 2 == 0).float().view(1, 1, *size)


def gaussian_bits(v, sigma):
    """−log2 of the probability of the unit interval around v under N(0, σ²)."""
    magnitude = v.abs()
    upper = 0.5 * torch.erfc(-(0.5 - magnitude) / (sigma * math.sqrt(2)))
    lower = 0.5 * torch.erfc(-(-0.5 - magnitude) / (sigma * math.sqrt(2)))
    return -torch.log2(torch.clamp(upper - lower, min=1e-9))


def widened_from(narrow, family):
    """A FusionModel of `family` (wider trunk, latent and hyper channels, same levels and E) that
    computes what `narrow` computes: narrow's weights copied into their place, every new input
    column zero (no old output sees a new channel), new output rows freshly initialised (so the
    new channels carry something and learn). The gain table's new columns take their row's mean,
    z's prior its defaults. Net2WiderNet with zero fan-out, for growing a trained model."""
    old = narrow.family
    if (family.channels, family.extra_stages) != (old.channels, old.extra_stages) or any(
            getattr(family, k) < getattr(old, k) for k in ("trunk", "latent", "hyper")):
        raise ValueError(f"cannot widen {old} to {family}")
    gain_init = None if narrow.gain_exponents is None else [0.0] * narrow.num_rates
    wide = FusionModel(family, gain_init)
    wide_params, old_params = wide.params(), narrow.params()

    def output_rows(name, count):
        if name == "hs.out":           # [means (M), scale indices (M)]
            return list(range(old.latent)) + [family.latent + c for c in range(old.latent)]
        return list(range(count))

    def input_columns(name, count):
        if name.startswith("enc.") and name.endswith(".in") and name != "enc.0.in":     # concat(trunk, level)
            level = count - old.trunk
            return list(range(old.trunk)) + [family.trunk + c for c in range(level)]
        return list(range(count))

    with torch.no_grad():
        for name, shape in layer_shapes(old).items():
            weight, bias = wide_params[name + ".weight"], wide_params[name + ".bias"]
            rows, columns = output_rows(name, shape[0]), input_columns(name, shape[1])
            new_columns = sorted(set(range(weight.shape[1])) - set(columns))
            weight[:, new_columns] = 0
            weight[torch.tensor(rows)[:, None], torch.tensor(columns)[None, :]] = old_params[name + ".weight"]
            bias[rows] = old_params[name + ".bias"]
        wide.z_loc[:old.hyper] = narrow.z_loc
        wide.z_log_scale[:old.hyper] = narrow.z_log_scale
        for i in range(family.num_levels):
            for mine, theirs in zip(wide.normalisation(i), narrow.normalisation(i)):
                mine.copy_(theirs)
        if narrow.gain_exponents is not None:
            table = narrow.gain_exponents
            wide.gain_exponents[:, :old.latent] = table
            wide.gain_exponents[:, old.latent:] = table.mean(dim=1, keepdim=True)
    return wide
