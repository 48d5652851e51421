"""A small COCO reader: the annotated images of a COCO folder (e.g. the shared COCO-mini).

    annotations JSON ─► pycocotools COCO ─► ids of images with ≥ 1 annotation ─► [(id, path)]

The CTC evaluation (COCO mAP) builds on the same pycocotools index later.
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import numpy as np
import torch

from common.errors import InputError

__all__ = ["load_coco", "load_image", "to_input"]


def load_coco(images_dir: str | os.PathLike, annotations_json: str | os.PathLike) -> list[tuple[int, Path]]:
    """``[(image id, image path), ...]`` by increasing id, for the images that have annotations.

    Raises ``InputError`` when the folder, the JSON or an annotated image file is missing.
    """
    from pycocotools.coco import COCO

    images_dir, annotations_json = Path(images_dir), Path(annotations_json)
    if not images_dir.is_dir():
        raise InputError(f"COCO image folder not found: {images_dir}")
    if not annotations_json.is_file():
        raise InputError(f"COCO annotation file not found: {annotations_json}")
    with contextlib.redirect_stdout(io.StringIO()):     # COCO() prints progress lines
        coco = COCO(str(annotations_json))
    annotated = [image_id for image_id in sorted(coco.getImgIds()) if coco.getAnnIds(imgIds=[image_id])]
    result = [(image_id, images_dir / coco.imgs[image_id]["file_name"]) for image_id in annotated]
    missing = [path for _, path in result if not path.is_file()]
    if missing:
        raise InputError(f"{len(missing)} annotated COCO images missing from {images_dir}, e.g. {missing[0].name}")
    return result


def to_input(rgb) -> torch.Tensor:
    """H×W×3 uint8 RGB -> a 3×H×W float tensor in 0..1, the R-CNN split's input."""
    return torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1).float() / 255.0     # a writable copy


def load_image(path: str | os.PathLike) -> torch.Tensor:
    """An image file as the R-CNN split's input (:func:`to_input`)."""
    from ctc.images import read_rgb

    return to_input(read_rgb(path))
