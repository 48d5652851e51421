"""YOLOv5n (v6.0, COCO) split at its feature pyramid, written from ../shared/data/weights/README.md.

    RGB image (H0×W0, uint8)
      │ letterbox: r = 640 / max(H0, W0); resize (OpenCV INTER_LINEAR) to (round(W0·r), round(H0·r));
      │            pad with 114 to 640×640 (top/left round(d − 0.1), bottom/right round(d + 0.1)); / 255
      ▼
    front ─ backbone: layers 0..9 ──── split "backbone": C3, C4, C5 (layers 4, 6, 9)
          ─ PAN neck: layers 10..23 ── split "neck" (default): P3, P4, P5 (layers 17, 20, 23)
      ▼                                  64×80×80, 128×40×40, 256×20×20 at 640×640
    back  ─ (neck, for the backbone split) ─ Detect (layer 24): per level a 1×1 conv to 3 × 85,
            sigmoid, xy = (2σ − 0.5 + grid) · stride, wh = (2σ)² · anchor ─► B × 25200 × 85
      ▼
    non_max_suppression (objectness > conf, score = objectness × class probability, multi- or
    single-label, per-class IoU NMS via class-offset boxes, ≤ 30,000 in, ≤ 300 out)
      ▼
    boxes in original-image pixels: subtract the pad, divide by r, clip

back(front(x)) is the unsplit network, operation for operation. The weights are a
safetensors state dict whose tensor names are the module names below
(``model.<layer>.<part>``); its metadata (nc, stride, anchors_pixels) is checked
against this architecture. Nothing is downloaded: the user gives the file's path.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np
import torch
import torchvision
from torch import nn

from common.errors import InputError
from ctc.tasks.state_dict import load_exactly

__all__ = ["Yolov5n", "Letterbox", "letterbox", "non_max_suppression", "scale_boxes", "SPLIT_POINTS",
           "COCO_CATEGORY_IDS", "INPUT_SIZE"]

INPUT_SIZE = 640
PAD_VALUE = 114
NUM_CLASSES = 80
STRIDES = (8, 16, 32)
ANCHORS_PIXELS = (((10, 13), (16, 30), (33, 23)), ((30, 61), (62, 45), (59, 119)),
                  ((116, 90), (156, 198), (373, 326)))
BN_EPS = 1e-3
# split point -> (layer, tensor name) of the features the front hands over
SPLIT_POINTS = {"neck": ((17, "p3"), (20, "p4"), (23, "p5")),
                "backbone": ((4, "c3"), (6, "c4"), (9, "c5"))}
# The 80 training classes in order -> COCO category ids (the standard 80-of-91 mapping).
COCO_CATEGORY_IDS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25,
                     27, 28, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51,
                     52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77,
                     78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90)
CLASS_OFFSET = 7680          # per-class NMS: boxes of class c are shifted by c · CLASS_OFFSET pixels
MAX_NMS_INPUT = 30000
MAX_DETECTIONS = 300


# -- building blocks (README "Network") ------------------------------------------------------------

class Conv(nn.Module):
    """Conv2d (k×k, stride s, padding k // 2 unless given, no bias) → BatchNorm2d (eps 1e-3) → SiLU."""

    def __init__(self, c_in, c_out, k=1, s=1, padding=None):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, k, s, k // 2 if padding is None else padding, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=BN_EPS)
        self.act = nn.SiLU()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    def __init__(self, c, shortcut):
        super().__init__()
        self.cv1 = Conv(c, c, 1, 1)
        self.cv2 = Conv(c, c, 3, 1)
        self.shortcut = shortcut

    def forward(self, x):
        y = self.cv2(self.cv1(x))
        return x + y if self.shortcut else y


class C3(nn.Module):
    def __init__(self, c_in, c_out, n, shortcut):
        super().__init__()
        hidden = c_out // 2
        self.cv1 = Conv(c_in, hidden, 1, 1)
        self.cv2 = Conv(c_in, hidden, 1, 1)
        self.cv3 = Conv(2 * hidden, c_out, 1, 1)
        self.m = nn.Sequential(*(Bottleneck(hidden, shortcut) for _ in range(n)))

    def forward(self, x):
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))


class SPPF(nn.Module):
    def __init__(self, c_in, c_out):
        super().__init__()
        hidden = c_in // 2
        self.cv1 = Conv(c_in, hidden, 1, 1)
        self.cv2 = Conv(4 * hidden, c_out, 1, 1)
        self.pool = nn.MaxPool2d(5, stride=1, padding=2)

    def forward(self, x):
        x = self.cv1(x)
        y1 = self.pool(x)
        y2 = self.pool(y1)
        return self.cv2(torch.cat((x, y1, y2, self.pool(y2)), 1))


class Detect(nn.Module):
    """Per level a 1×1 conv (with bias) to 3 anchors × (4 box + 1 objectness + 80 classes), decoded."""

    def __init__(self, channels):
        super().__init__()
        self.outputs = 5 + NUM_CLASSES
        self.m = nn.ModuleList(nn.Conv2d(c, 3 * self.outputs, 1) for c in channels)
        # anchors in units of the level's stride, as the checkpoint stores them
        self.register_buffer("anchors", torch.tensor(ANCHORS_PIXELS, dtype=torch.float32)
                             / torch.tensor(STRIDES, dtype=torch.float32)[:, None, None])

    def logits(self, levels):
        """[P3, P4, P5] -> per level B × 3 × ny × nx × 85 raw outputs (before the sigmoid)."""
        out = []
        for conv, x in zip(self.m, levels):
            batch, _, ny, nx = x.shape
            out.append(conv(x).view(batch, 3, self.outputs, ny, nx).permute(0, 1, 3, 4, 2))
        return out

    def forward(self, levels):
        """[P3, P4, P5] -> B × (3 · Σ ny·nx) × 85: xywh in input pixels, objectness, class probabilities."""
        decoded = []
        for i, raw in enumerate(self.logits(levels)):
            batch, _, ny, nx, _ = raw.shape
            y = raw.sigmoid()
            grid_y, grid_x = torch.meshgrid(torch.arange(ny, dtype=y.dtype), torch.arange(nx, dtype=y.dtype),
                                            indexing="ij")
            grid = torch.stack((grid_x, grid_y), 2).view(1, 1, ny, nx, 2)
            anchor_grid = (self.anchors[i] * STRIDES[i]).view(1, 3, 1, 1, 2)
            xy = (y[..., 0:2] * 2 - 0.5 + grid) * STRIDES[i]
            wh = (y[..., 2:4] * 2) ** 2 * anchor_grid
            decoded.append(torch.cat((xy, wh, y[..., 4:]), -1).view(batch, -1, self.outputs))
        return torch.cat(decoded, 1)


# -- the network -----------------------------------------------------------------------------------

class Yolov5n(nn.Module):
    """YOLOv5n with ``front`` (image batch -> split features) and ``back`` (features -> B × 25200 × 85).

    ``weights``: path of the safetensors file (None: untrained layers, for counting operations
    only); ``split``: "neck" (P3–P5) or "backbone" (C3–C5).
    Frozen and always in eval mode (BatchNorm uses the running statistics).
    """

    def __init__(self, weights: str | os.PathLike | None, split: str = "neck"):
        super().__init__()
        if split not in SPLIT_POINTS:
            raise ValueError(f"unknown split point {split!r}; choose one of {sorted(SPLIT_POINTS)}")
        self.split = split
        self.names = tuple(name for _, name in SPLIT_POINTS[split])
        self.model = nn.ModuleList([
            Conv(3, 16, 6, 2, padding=2),            # 0
            Conv(16, 32, 3, 2),                      # 1
            C3(32, 32, 1, True),                     # 2
            Conv(32, 64, 3, 2),                      # 3
            C3(64, 64, 2, True),                     # 4  C3
            Conv(64, 128, 3, 2),                     # 5
            C3(128, 128, 3, True),                   # 6  C4
            Conv(128, 256, 3, 2),                    # 7
            C3(256, 256, 1, True),                   # 8
            SPPF(256, 256),                          # 9  C5
            Conv(256, 128, 1, 1),                    # 10
            nn.Upsample(scale_factor=2.0, mode="nearest"),   # 11 (12: concat with 6)
            nn.Identity(),                           # 12
            C3(256, 128, 1, False),                  # 13
            Conv(128, 64, 1, 1),                     # 14
            nn.Upsample(scale_factor=2.0, mode="nearest"),   # 15 (16: concat with 4)
            nn.Identity(),                           # 16
            C3(128, 64, 1, False),                   # 17 P3
            Conv(64, 64, 3, 2),                      # 18 (19: concat with 14)
            nn.Identity(),                           # 19
            C3(128, 128, 1, False),                  # 20 P4
            Conv(128, 128, 3, 2),                    # 21 (22: concat with 10)
            nn.Identity(),                           # 22
            C3(256, 256, 1, False),                  # 23 P5
            Detect((64, 128, 256)),                  # 24
        ])
        metadata = load_weights(self, weights) if weights is not None else {}
        names = json.loads(metadata.get("names", "[]"))
        self.class_names = tuple(names) if len(names) == NUM_CLASSES else tuple(map(str, range(NUM_CLASSES)))
        self.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> Yolov5n:
        return super().train(False)

    # -- the two halves of the network ------------------------------------------------------------------

    def backbone(self, x):
        """Layers 0..9: (C3, C4, C5)."""
        m = self.model
        x = m[3](m[2](m[1](m[0](x))))
        c3 = m[4](x)
        c4 = m[6](m[5](c3))
        c5 = m[9](m[8](m[7](c4)))
        return c3, c4, c5

    def neck(self, c3, c4, c5):
        """Layers 10..23: (P3, P4, P5) from the backbone outputs."""
        m = self.model
        x10 = m[10](c5)
        x13 = m[13](torch.cat((m[11](x10), c4), 1))
        x14 = m[14](x13)
        p3 = m[17](torch.cat((m[15](x14), c3), 1))
        p4 = m[20](torch.cat((m[18](p3), x14), 1))
        p5 = m[23](torch.cat((m[21](p4), x10), 1))
        return p3, p4, p5

    def front(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """B×3×640×640 (RGB, 0..1) -> {p3, p4, p5} (neck) or {c3, c4, c5} (backbone), B×C×h×w each."""
        levels = self.backbone(images)
        if self.split == "neck":
            levels = self.neck(*levels)
        return dict(zip(self.names, levels))

    def back(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Split features -> B × 25200 × 85 raw predictions (xywh, objectness, class probabilities)."""
        levels = [features[name] for name in self.names]
        if self.split == "backbone":
            levels = self.neck(*levels)
        return self.model[24](levels)

    def head_logits(self, features: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        """Split features -> the Detect head's raw outputs per level (B × 3 × ny × nx × 85, before the
        sigmoid and the box decoding): what FeatJND's detection discrepancy compares."""
        levels = [features[name] for name in self.names]
        if self.split == "backbone":
            levels = self.neck(*levels)
        return self.model[24].logits(levels)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """The unsplit network, layer by layer in the README's order."""
        return self.model[24](list(self.neck(*self.backbone(images))))


def load_weights(model: Yolov5n, path) -> dict:
    """Loads the safetensors state dict at `path` after checking its metadata, which it returns;
    any problem is one InputError line."""
    from safetensors import SafetensorError, safe_open

    if not os.path.isfile(path):
        raise InputError(f"YOLOv5n weight file not found: {path} "
                         "(e.g. ../shared/data/weights/yolov5n_coco.safetensors)")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            state = {key: f.get_tensor(key) for key in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputError(f"YOLOv5n weight file {path} is not a readable safetensors file: "
                         f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    _check_metadata(metadata, path)
    load_exactly(model, state, f"YOLOv5n weight file {path}")
    return metadata


def _check_metadata(metadata, path):
    def field(key):
        if key not in metadata:
            raise InputError(f"YOLOv5n weight file {path}: metadata has no '{key}' (is it a YOLOv5n checkpoint?)")
        try:
            return json.loads(metadata[key])
        except ValueError:
            raise InputError(f"YOLOv5n weight file {path}: metadata '{key}' is not JSON") from None

    expected = {"nc": NUM_CLASSES, "stride": [float(s) for s in STRIDES],
                "anchors_pixels": [[[float(v) for v in pair] for pair in level] for level in ANCHORS_PIXELS]}
    for key, value in expected.items():
        found = field(key)
        if found != value:
            raise InputError(f"YOLOv5n weight file {path}: metadata {key} = {found}, this network needs {value}")


# -- pre- and post-processing (README "Pre- and post-processing") ------------------------------------

@dataclass(frozen=True)
class Letterbox:
    """How an image was placed in the 640×640 input: scale r, left and top padding, original size."""
    ratio: float
    pad_left: float             # d of the horizontal padding (half the total; may be .5)
    pad_top: float
    original_height: int
    original_width: int


def letterbox(rgb: np.ndarray, size: int = INPUT_SIZE) -> tuple[np.ndarray, Letterbox]:
    """H0×W0×3 uint8 RGB -> (size×size×3 uint8 letterboxed RGB, Letterbox)."""
    import cv2

    height, width = rgb.shape[:2]
    ratio = size / max(height, width)
    new_width, new_height = round(width * ratio), round(height * ratio)
    image = np.ascontiguousarray(rgb)
    if (new_width, new_height) != (width, height):
        image = cv2.resize(image, (new_width, new_height), interpolation=cv2.INTER_LINEAR)
    pad_x, pad_y = (size - new_width) / 2, (size - new_height) / 2
    top, bottom = round(pad_y - 0.1), round(pad_y + 0.1)
    left, right = round(pad_x - 0.1), round(pad_x + 0.1)
    image = np.pad(image, ((top, bottom), (left, right), (0, 0)), constant_values=PAD_VALUE)
    return image, Letterbox(ratio, pad_x, pad_y, height, width)


def to_input(letterboxed: np.ndarray) -> torch.Tensor:
    """size×size×3 uint8 RGB -> 1×3×size×size float32 in 0..1."""
    return torch.from_numpy(np.ascontiguousarray(letterboxed.transpose(2, 0, 1))).float()[None] / 255.0


def non_max_suppression(prediction: torch.Tensor, conf: float = 0.001, iou: float = 0.6,
                        multi_label: bool = True, max_detections: int = MAX_DETECTIONS) -> list[torch.Tensor]:
    """B × N × 85 -> per image K × 6 (x0, y0, x1, y1, score, class index), best first, in input pixels."""
    results = []
    for x in prediction:
        x = x[x[:, 4] > conf]
        scores = x[:, 5:] * x[:, 4:5]
        boxes = torch.cat((x[:, :2] - x[:, 2:4] / 2, x[:, :2] + x[:, 2:4] / 2), 1)
        if multi_label:
            box_index, cls = (scores > conf).nonzero(as_tuple=False).T
            x = torch.cat((boxes[box_index], scores[box_index, cls, None], cls[:, None].float()), 1)
        else:
            best, cls = scores.max(1, keepdim=True)
            x = torch.cat((boxes, best, cls.float()), 1)[best.view(-1) > conf]
        if x.shape[0] > MAX_NMS_INPUT:
            x = x[x[:, 4].argsort(descending=True)[:MAX_NMS_INPUT]]
        keep = torchvision.ops.nms(x[:, :4] + x[:, 5:6] * CLASS_OFFSET, x[:, 4], iou)[:max_detections]
        results.append(x[keep])
    return results


def scale_boxes(detections: torch.Tensor, placement: Letterbox) -> torch.Tensor:
    """Boxes from input pixels back to the original image: subtract the pad, divide by r, clip."""
    boxes = detections[:, :4].clone()
    boxes[:, [0, 2]] = ((boxes[:, [0, 2]] - placement.pad_left) / placement.ratio).clamp(0, placement.original_width)
    boxes[:, [1, 3]] = ((boxes[:, [1, 3]] - placement.pad_top) / placement.ratio).clamp(0, placement.original_height)
    return torch.cat((boxes, detections[:, 4:]), 1)
