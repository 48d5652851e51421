"""The runner's on-disk feature cache: each image's front-half output, computed once.

    <cache root>/<task cache key>/<sha256 of the image file, 16 hex>.npz
        tensor:<name>   the feature tensors (float32, as the front produced them)
        context         JSON: what the back half needs besides the features (R-CNN image sizes)
        front_seconds   wall time of the front half when it was computed (nn_part_1)

The key names the network, split point and (R-CNN) input size, and the image by
content, so renamed or moved images keep their features and an edited image
gets new ones. Files are written atomically: parallel workers never see half a file.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from common.featio import write_atomically

DEFAULT_ROOT = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fcrs" / "features"
TENSOR_PREFIX = "tensor:"


class FeatureCache:
    def __init__(self, root, task):
        self.folder = Path(root) / task.cache_key
        self.folder.mkdir(parents=True, exist_ok=True)
        self.task = task

    def of_sample(self, sample):
        """(tensors, context, front_seconds) of a dataset sample (ctc.datasets.Sample)."""
        from ctc.images import file_digest, read_rgb

        return self.features(file_digest(sample.path), lambda: read_rgb(sample.path))

    def features(self, digest, rgb_of):
        """(tensors, context, front_seconds) of the image with content hash `digest`;
        rgb_of() reads the image when the features are not cached yet."""
        path = self.folder / f"{digest}.npz"
        if path.is_file():
            try:
                with np.load(path, allow_pickle=False) as stored:
                    tensors = {key[len(TENSOR_PREFIX):]: stored[key] for key in stored.files
                               if key.startswith(TENSOR_PREFIX)}
                    return tensors, json.loads(str(stored["context"])), float(stored["front_seconds"])
            except (OSError, ValueError, KeyError):
                pass    # damaged entry: compute it again
        start = time.perf_counter()
        tensors, context = self.task.front(rgb_of())
        seconds = time.perf_counter() - start
        arrays = {TENSOR_PREFIX + name: value for name, value in tensors.items()}
        arrays["context"] = np.array(json.dumps(context))
        arrays["front_seconds"] = np.array(seconds)
        write_atomically(path, lambda f: np.savez(f, **arrays))
        return tensors, context, seconds
