"""The L-MSFC networks, declared once over an `ops` object.

Each function below is the whole definition of one network: which convolution
reads which tensor, with how many output channels, kernel and stride. Three
backends run the same text:

* `common/tools/lmsfc/integer_ops.py`: the normative integer arithmetic of the
  decoder side (hyper-synthesis, DRNet) and the encoder's float analysis;
* `encoder/tools/lmsfc/torch_ops.py`: float training, with the integer
  arithmetic simulated (straight-through) for the fine-tuning;
* `ShapeOps` here: a dry run that lists every layer and its weight shape, so
  the model file, the trainer and the decoder agree on one parameter table.

Shapes: a level is C×H×W; level i + 1 has the stride of level i doubled and the
size ceil(H_i / 2) × ceil(W_i / 2). The latent y lies E stride-2 stages below
the last level (E = `extra_stages`; E = 0: at the last level's resolution; E = −1: at the
second-to-last level's, the last level joining it from below), the hyper-latent z one more.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    """The family parameters of a model: what the parameter set signals besides its hash."""
    channels: tuple        # C_i of each level, the largest map first
    trunk: int             # N: channels of FENet's and DRNet's trunks
    latent: int            # M: channels of y
    hyper: int             # channels of z and of the hyper networks
    extra_stages: int      # E >= -1: stride-2 stages from the last level down to y (-1: y at the
                           # second-to-last level's size, the last level joining from below)

    @property
    def num_levels(self):
        return len(self.channels)


def halved(size):
    return (size[0] + 1) // 2, (size[1] + 1) // 2


def latent_level(family):
    """Index of the level whose size y has when E <= 0 (the last level for E = 0)."""
    return family.num_levels - 1 + min(family.extra_stages, 0)


def latent_size(family, level_sizes):
    """(H, W) of y: the last level's size halved E times (E = −1: the second-to-last level's size)."""
    size = level_sizes[latent_level(family)]
    for _ in range(family.extra_stages):
        size = halved(size)
    return size


def stage_sizes(family, level_sizes):
    """Sizes DRNet passes through from y up to the last level: the E − 1 sizes between them,
    smallest first (none for E ≤ 1)."""
    sizes, size = [], level_sizes[-1]
    for _ in range(family.extra_stages - 1):
        size = halved(size)
        sizes.append(size)
    return sizes[::-1]


def residual_block(ops, name, x, channels):
    """x + conv3(relu(conv3(x)))."""
    t = ops.relu(ops.conv(f"{name}.a", x, channels, 3))
    return ops.add(x, ops.conv(f"{name}.b", t, channels, 3))


def down_block(ops, name, x, channels):
    """Stride-2 residual block: conv1 stride 2 (skip) + conv3(relu(conv3 stride 2))."""
    t = ops.relu(ops.conv(f"{name}.a", x, channels, 3, stride=2))
    return ops.add(ops.conv(f"{name}.skip", x, channels, 1, stride=2), ops.conv(f"{name}.b", t, channels, 3))


def up_block(ops, name, x, channels, size):
    """Up-sampling residual block: sub-pixel conv (conv3 to 4·C, pixel shuffle, crop to `size`),
    then t + conv3(relu(conv3(relu(t))))."""
    t = ops.crop(ops.pixel_shuffle(ops.conv(f"{name}.up", x, 4 * channels, 3)), size)
    u = ops.relu(ops.conv(f"{name}.a", ops.relu(t), channels, 3))
    return ops.add(t, ops.conv(f"{name}.b", u, channels, 3))


def attention_block(ops, name, x, channels):
    """Simplified attention (Cheng et al. 2020): x + trunk(x) · sigmoid(gate(x)), trunk and gate
    one residual unit each."""
    trunk = residual_block(ops, f"{name}.trunk", x, channels)
    gate = ops.conv(f"{name}.gate.b", ops.relu(ops.conv(f"{name}.gate.a", x, channels, 1)), channels, 1)
    return ops.add(x, ops.sigmoid_gate(trunk, gate))


def fenet(ops, family, levels, level_sizes):
    """Encoder: the largest level through a stride-2 block, concatenated with the next level,
    again, ... (the last level's stride-2 block only when E ≥ 1), then E − 1 more stages,
    attention, and a conv to the M channels of y. E = −1: the fusion stops at the
    second-to-last level, the last one is brought up to it by an up-sampling block and added."""
    n, top = family.trunk, latent_level(family)
    h = None
    for i, level in enumerate(levels):
        if i > top:
            h = ops.add(h, up_block(ops, f"enc.{i}.up", ops.conv(f"enc.{i}.in", level, n, 3), n, level_sizes[top]))
            h = residual_block(ops, f"enc.{i}.res", h, n)
            continue
        x = level if h is None else ops.concat(h, level)
        h = ops.conv(f"enc.{i}.in", x, n, 3)
        h = residual_block(ops, f"enc.{i}.res", h, n)
        if i < top or family.extra_stages > 0:
            h = down_block(ops, f"enc.{i}.down", h, n)
    for j in range(family.extra_stages - 1):
        h = residual_block(ops, f"enc.extra.{j}.res", h, n)
        h = down_block(ops, f"enc.extra.{j}.down", h, n)
    h = attention_block(ops, "enc.attention", h, n)
    return ops.conv("enc.out", h, family.latent, 3)


def hyper_analysis(ops, family, y):
    """y -> z, one stride-2 stage below y."""
    t = ops.relu(ops.conv("ha.a", y, family.hyper, 3))
    return ops.conv("ha.b", t, family.hyper, 3, stride=2)


def hyper_synthesis(ops, family, z_hat, y_size):
    """ẑ -> (mean, scale) of y: M channels of mean, M of log-scale in ladder steps."""
    t = ops.relu(ops.conv("hs.a", z_hat, family.hyper, 3))
    t = ops.crop(ops.pixel_shuffle(ops.conv("hs.up", t, 4 * family.hyper, 3)), y_size)
    t = ops.relu(ops.conv("hs.b", ops.relu(t), family.hyper, 3))
    return ops.conv("hs.out", t, 2 * family.latent, 3)


def drnet(ops, family, y_hat, level_sizes):
    """Decoder: y through attention up to the last level, up through every level (per-level
    branches), bottom-up mixing from the largest map down, one output conv per level.
    E = −1: the last level's branch is a stride-2 block below y's level."""
    n, top = family.trunk, latent_level(family)
    h = ops.relu(ops.conv("dec.in", y_hat, n, 3))
    h = attention_block(ops, "dec.attention", h, n)
    for j, size in enumerate(stage_sizes(family, level_sizes)):
        h = up_block(ops, f"dec.extra.{j}", h, n, size)
    branches = [None] * family.num_levels
    for i in reversed(range(family.num_levels)):
        if i > top:
            branches[i] = down_block(ops, f"dec.down.{i}", h, n)
            continue
        if i == top and family.extra_stages <= 0:
            h = residual_block(ops, f"dec.last.{i}", h, n)       # y is at this level's size already
        else:
            h = up_block(ops, f"dec.up.{i}", h, n, level_sizes[i])
        branches[i] = h
    mixed = [branches[0]]
    for i in range(1, family.num_levels):
        mixed.append(ops.add(branches[i], ops.conv(f"dec.mix.{i}", mixed[-1], n, 3, stride=2)))
    return [ops.conv(f"dec.out.{i}", m, c, 3) for i, (m, c) in enumerate(zip(mixed, family.channels))]


DECODER_PREFIXES = ("hs.", "dec.")     # layers the decoder runs (integer); the rest is encoder-only


class ShapeOps:
    """Dry run: records every layer's weight shape (C_out, C_in, k, k). Tensors are (C, H, W) tuples."""

    def __init__(self):
        self.layers = {}

    def conv(self, name, x, channels, kernel, stride=1):
        self.layers[name] = (channels, x[0], kernel, kernel)
        return (channels, -(-x[1] // stride), -(-x[2] // stride))

    def relu(self, x):
        return x

    def add(self, a, b):
        if a != b:
            raise ValueError(f"add of {a} and {b}")
        return a

    def concat(self, a, b):
        if a[1:] != b[1:]:
            raise ValueError(f"concat of {a} and {b}")
        return (a[0] + b[0],) + a[1:]

    def pixel_shuffle(self, x):
        return (x[0] // 4, 2 * x[1], 2 * x[2])

    def crop(self, x, size):
        return (x[0],) + tuple(size)

    def sigmoid_gate(self, x, gate):
        return self.add(x, gate)


def layer_shapes(family):
    """{layer name: (C_out, C_in, k, k)} of every layer of the family, encoder and decoder."""
    ops = ShapeOps()
    sizes = [(64 >> i, 64 >> i) for i in range(family.num_levels)]
    levels = [(c,) + size for c, size in zip(family.channels, sizes)]
    y = fenet(ops, family, levels, sizes)
    z = hyper_analysis(ops, family, y)
    hyper_synthesis(ops, family, z, y[1:])
    drnet(ops, family, y, sizes)
    return ops.layers
