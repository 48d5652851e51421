"""Image files as the CTC reads them: pixels as stored, and a content hash (the feature cache's
key). Every reader of a photo (datasets, the runner, the trainers, the COCO helpers) goes
through here, so this module imports nothing of ctc."""

import hashlib

import numpy as np


def read_rgb(path):
    """An image file as H×W×3 uint8 RGB (as read, before any network preprocessing)."""
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def file_digest(path, length=16):
    """Content hash of an image file (the feature cache's key: renaming a file keeps its features)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:length]
