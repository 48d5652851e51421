"""The CTC's view of a task network: image -> features (front), features -> prediction (back).

    ClassificationTask  EfficientNet-Lite split at the backbone: one tensor '' (C×H×W);
                        prediction = the five best classes
    DetectionTask       Faster / Mask R-CNN R50-FPN split after the FPN: tensors p2..p6
                        (1×256×h×w); prediction = COCO result entries (bbox, score,
                        category, RLE mask)

Features and predictions are numpy / JSON-ready, so the runner stores them in the
feature cache and the records without knowing the network. Scoring (top-k, COCO
AP) happens in ctc/metrics.py from the stored predictions.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from common.errors import ConfigError

TOP_K = 5
BOX_DECIMALS = 2
SCORE_DECIMALS = 5


class ClassificationTask:
    kind = "classification"

    def __init__(self, network):
        from ctc.tasks.efficientnet_lite import EfficientNetLiteSplit

        self.net = EfficientNetLiteSplit(network)
        self.cache_key = f"{self.net.name}_backbone"

    def front(self, rgb):
        """({'' : C×H×W float32}, context) of one RGB image."""
        import torch
        from PIL import Image

        with torch.no_grad():
            features = self.net.front(self.net.preprocess(Image.fromarray(rgb))[None])[0]
        return {"": features.numpy()}, {}

    def back(self, tensors, context):
        import torch

        with torch.no_grad():
            logits = self.net.back(torch.from_numpy(np.ascontiguousarray(tensors[""], dtype=np.float32))[None])[0]
        return {"top5": [int(i) for i in torch.topk(logits, TOP_K).indices]}


class DetectionTask:
    kind = "detection"

    def __init__(self, network, weights, options):
        from ctc.tasks.rcnn_fpn import RcnnFpnSplit

        if not weights:
            raise ConfigError(f"{network} needs weights: pass --weights PATH (a torchvision COCO state_dict), "
                              "or --weights random to test the plumbing with seeded random weights")
        model = "mask" if network.startswith("mask") else "faster"
        self.split = RcnnFpnSplit(model, weights=None if weights == "random" else weights, **(options or {}))
        self.has_masks = model == "mask"
        size = f"{options.get('min_size', 800)}-{options.get('max_size', 1333)}" if options else "800-1333"
        self.cache_key = f"{network}_fpn_{size}_{'random' if weights == 'random' else 'weights'}"

    def front(self, rgb):
        """({p2..p6: 1×256×h×w float32}, {image_sizes, original_sizes}) of one RGB image."""
        import torch

        from ctc.coco import to_input

        image = to_input(rgb)
        with torch.no_grad():
            features, image_sizes, original_sizes = self.split.front([image])
        tensors = {name: value.numpy() for name, value in features.items()}
        return tensors, {"image_sizes": [list(s) for s in image_sizes],
                         "original_sizes": [list(s) for s in original_sizes]}

    def back(self, tensors, context):
        """COCO result entries (without image_id) of the detections."""
        import torch
        from pycocotools import mask as mask_utils

        features = OrderedDict((name, torch.from_numpy(np.ascontiguousarray(tensors[name], dtype=np.float32)))
                               for name in tensors)
        with torch.no_grad():
            detection = self.split.back(features, [tuple(s) for s in context["image_sizes"]],
                                        [tuple(s) for s in context["original_sizes"]])[0]
        results = []
        boxes = detection["boxes"].numpy().astype(np.float64)
        for i, (x0, y0, x1, y1) in enumerate(boxes):
            entry = {"category_id": int(detection["labels"][i]),
                     "bbox": [round(float(v), BOX_DECIMALS) for v in (x0, y0, x1 - x0, y1 - y0)],
                     "score": round(float(detection["scores"][i]), SCORE_DECIMALS)}
            if self.has_masks:
                binary = np.asfortranarray((detection["masks"][i, 0] > 0.5).numpy().astype(np.uint8))
                rle = mask_utils.encode(binary)
                entry["segmentation"] = {"size": [int(n) for n in rle["size"]], "counts": rle["counts"].decode()}
            results.append(entry)
        return {"detections": results}


def build_task(config, weights=None):
    network = config.task["network"]
    if config.is_classification:
        return ClassificationTask(network)
    return DetectionTask(network, weights or config.task.get("weights"), config.task.get("options") or {})
