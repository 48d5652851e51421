"""Training data of the learned tools: the photo pools of ../shared/data and what the trainers
draw from them.

    classification (FeatJND on EfficientNet-Lite): image_files ─► augmented_crops
        (torchvision's RandomResizedCrop rule, bicubic, flip) ─► normalised 3×S×S tensors
    detection (L-MSFC, FeatJND on YOLOv5n): training_pool (313 photos, never the 79 annotated
        coco-mini images) ─► split_pool ─► cached_pyramids (random scale + flip, letterbox,
        frozen YOLOv5n front; float16 on disk) ─► random_crop (aligned across P3, P4, P5)
    or, for any image folder (a COCO or OpenImages layout included): image_files ─►
        StreamingPyramids (the same augmentation, the front run on the fly: no cache)

CachedPyramids and StreamingPyramids are the two sources a trainer draws crops from.
"""

import json
import math
import os
import random
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
CROP_SCALE = (0.35, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)
CACHE = Path(os.environ.get("FCRS_CACHE", Path.home() / ".cache" / "fcrs")) / "fusion_train"
HELD_OUT = 13                      # pool images kept for validation (every 24th)


# -- classification: augmented crops -----------------------------------------------------------------

def image_files(folder):
    """Every .jpg / .jpeg / .png below folder (recursively), in sorted path order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist")
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def random_resized_crop(image, rng, size, scale=CROP_SCALE, ratio=CROP_RATIO):
    """torchvision's RandomResizedCrop (same sampling rule, numpy generator) + bicubic resize + flip (p = ½)."""
    from PIL import Image
    width, height = image.size
    area = width * height
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            left = int(rng.integers(0, width - w + 1))
            top = int(rng.integers(0, height - h + 1))
            break
    else:  # fall back to a centre crop clipped to the ratio range
        aspect = width / height
        if aspect < ratio[0]:
            w, h = width, int(round(width / ratio[0]))
        elif aspect > ratio[1]:
            w, h = int(round(height * ratio[1])), height
        else:
            w, h = width, height
        left, top = (width - w) // 2, (height - h) // 2
    crop = image.crop((left, top, left + w, top + h)).resize((size, size), Image.BICUBIC)
    if rng.random() < 0.5:
        crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
    return crop


def normalise(image):
    """RGB PIL image -> 3×H×W float tensor, (pixel − 127) / 128 as EfficientNet-Lite expects."""
    w, h = image.size
    x = torch.frombuffer(bytearray(image.convert("RGB").tobytes()), dtype=torch.uint8)
    return (x.view(h, w, 3).permute(2, 0, 1).float() - 127.0) / 128.0


def augmented_crops(path, seed, index, count, size):
    """count crops of one image, drawn from a generator seeded by (seed, index)."""
    from PIL import Image
    rng = np.random.default_rng([seed, index])
    with Image.open(path) as image:
        image = image.convert("RGB")
        return [normalise(random_resized_crop(image, rng, size)) for _ in range(count)]



# -- detection: the photo pool and its YOLOv5n pyramids ----------------------------------------------

def training_pool(data):
    """The 313 pool photos, sorted: train-images, coco-train, unannotated coco-mini."""
    paths = [p for folder in (data / "train-images", data / "coco-train" / "train2017")
             for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
    with open(data / "coco-mini" / "annotations" / "instances_val2017.json") as fh:
        annotated = {entry["file_name"] for entry in json.load(fh)["images"]}
    paths += [p for p in sorted((data / "coco-mini" / "val2017").iterdir())
              if p.suffix.lower() in IMAGE_SUFFIXES and p.name not in annotated]
    return paths


def split_pool(paths):
    held = paths[::len(paths) // HELD_OUT][:HELD_OUT]
    return [p for p in paths if p not in held], held


def front_pyramid(net, rgb, size, flip, device="cpu"):
    """[P3, P4, P5] (float32 C×H×W) of an RGB image letterboxed to size×size, mirrored if `flip`."""
    from ctc.tasks.yolov5n import letterbox, to_input

    boxed, _ = letterbox(np.ascontiguousarray(rgb[:, ::-1] if flip else rgb), size)
    with torch.no_grad():
        levels = net.front(to_input(boxed).to(device))
    return [levels[name][0].float().cpu().numpy() for name in ("p3", "p4", "p5")]


def augmented_pyramids(net, path, seed, index, count):
    """`count` pyramids of one image: long side random in 320..640 (multiple of 32), random flip."""
    from ctc.images import read_rgb

    rng = random.Random(seed * 100_003 + index)
    rgb = read_rgb(path)
    out = []
    for _ in range(count):
        size = 32 * rng.randint(10, 20)
        pyramid = front_pyramid(net, rgb, size, rng.random() < 0.5)
        out.append([level.astype(np.float16) for level in pyramid])
    return out


def cached_pyramids(weights, paths, seed, count, tag):
    """Pyramids of every path (count augmentations each), from the disk cache when it exists."""
    from ctc.tasks.yolov5n import Yolov5n

    CACHE.mkdir(parents=True, exist_ok=True)
    file = CACHE / f"{tag}_seed{seed}_x{count}_{len(paths)}.npz"
    if file.exists():
        with np.load(file) as data:
            return [[data[f"{i}_{j}_{level}"] for level in range(3)] for i in range(len(paths))
                    for j in range(count)]
    torch.set_num_threads(max(1, torch.get_num_threads()))
    net = Yolov5n(weights, split="neck").eval()
    pyramids, arrays = [], {}
    for i, path in enumerate(tqdm(paths, desc=f"{tag} features", unit="image", file=sys.stderr)):
        for j, pyramid in enumerate(augmented_pyramids(net, path, seed, i, count)):
            pyramids.append(pyramid)
            arrays.update({f"{i}_{j}_{level}": array for level, array in enumerate(pyramid)})
    temporary = file.with_suffix(".tmp.npz")
    np.savez(temporary, **arrays)
    os.replace(temporary, file)
    return pyramids


def random_crop(pyramid, rng, size):
    """An aligned crop: P3 size×size at a multiple of 4, P4 and P5 the matching halves."""
    height, width = pyramid[0].shape[1:]
    top = 4 * rng.randint(0, (height - size) // 4)
    left = 4 * rng.randint(0, (width - size) // 4)
    crops = []
    for level, array in enumerate(pyramid):
        t, l, s = top >> level, left >> level, size >> level
        crops.append(array[:, t:t + s, l:l + s])
    if rng.random() < 0.5:
        crops = [c[:, :, ::-1] for c in crops]
    return crops


class CachedPyramids:
    """Crops drawn from pyramids held in memory (cached_pyramids)."""

    def __init__(self, pyramids):
        self.pyramids = pyramids
        self._fitting = {}

    def draw(self, rng, crop):
        """An aligned crop (P3 crop × crop) of a pyramid drawn at random among those large enough."""
        if crop not in self._fitting:
            self._fitting[crop] = [p for p in self.pyramids if min(p[0].shape[1:]) >= crop]
        fitting = self._fitting[crop]
        return random_crop(fitting[rng.randrange(len(fitting))], rng, crop)

    def sample(self, count):
        return self.pyramids[:count]


class StreamingPyramids:
    """Crops of pyramids computed on the fly: an image drawn at random, long side random in
    max(320, 8 · crop) … 640 (a multiple of 32), a random flip, letterboxed, through the frozen
    front on `device`. For training on image folders of any size without a feature cache."""

    def __init__(self, paths, net, device="cpu"):
        if not paths:
            raise SystemExit("no training images (.jpg, .jpeg, .png) found")
        self.paths, self.net, self.device = list(paths), net, device

    def pyramid(self, path, size, flip):
        from ctc.images import read_rgb

        return front_pyramid(self.net, read_rgb(path), size, flip, self.device)

    def draw(self, rng, crop):
        size = 32 * rng.randint(max(10, -(-crop // 4)), 20)
        pyramid = self.pyramid(self.paths[rng.randrange(len(self.paths))], size, rng.random() < 0.5)
        return random_crop(pyramid, rng, crop)

    def sample(self, count):
        """`count` whole pyramids (640, no flip) of evenly spaced images: for statistics."""
        step = max(1, len(self.paths) // count)
        return [self.pyramid(path, 640, False) for path in self.paths[::step][:count]]


# -- text: what the LLM condition's features are trained and measured on ------------------------------

# ARC is evaluation only: the LLM features' training text is the Python standard library's
# docstrings, which no evaluation set holds (and which every Python 3.11 has, byte for byte)
TEXT_MODULES = ("abc", "argparse", "base64", "bisect", "calendar", "collections", "contextlib", "copy", "csv",
                "decimal", "difflib", "fractions", "functools", "gzip", "heapq", "hmac",
                "inspect", "ipaddress", "itertools", "json", "logging", "os", "pickle", "random",
                "re", "shlex", "shutil", "statistics", "string", "struct", "subprocess", "tarfile", "textwrap",
                "threading", "timeit", "typing", "unittest", "uuid", "warnings", "weakref", "zipfile")


def docstring_texts(characters, members=False):
    """Per TEXT_MODULES module, its docstring (with `members`: then those of its public classes and
    functions, in name order), whitespace collapsed, cut to `characters`."""
    import importlib
    import inspect

    texts = []
    for name in TEXT_MODULES:
        module = importlib.import_module(name)
        parts = [inspect.getdoc(module) or ""]
        if members:
            parts += [inspect.getdoc(value) or "" for key, value in sorted(vars(module).items())
                      if not key.startswith("_") and (inspect.isclass(value) or inspect.isfunction(value))
                      and getattr(value, "__module__", None) == name]
        texts.append(" ".join(" ".join(parts).split())[:characters])
    return texts

