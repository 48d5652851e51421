"""CTC datasets: the images of a run and their ground truth, as a list of Samples.

    image_folder    a folder with labels.csv (file, class_index, ...): ImageNet-style classification
    coco            COCO images + an instances json: detection / instance segmentation
    package_images  images an installed package ships (scikit-image's data folder), with class
                    indices given in the config: the smoke test runs on them anywhere
    arc             questions of an ARC JSON Lines file (ctc/arc.py): a sample is a question, its
                    content the question's JSON line, its label the answer's index
"""

from __future__ import annotations

import csv
import importlib
from dataclasses import dataclass
from pathlib import Path


from common.errors import ConfigError, InputError


@dataclass(frozen=True)
class Sample:
    id: str              # unique within the dataset (file name, or the COCO image id)
    path: Path
    label: int = -1      # classification: class index; -1 when unknown
    coco_id: int = -1    # coco: the image id in the annotations
    content: str = ""    # a sample that is not a file of its own (an ARC question's JSON line)


def load_samples(config, root):
    """[Sample] of the config's dataset (root: the dataset folder; None for package_images)."""
    kind = config.dataset["kind"]
    if kind == "image_folder":
        samples = _image_folder(root)
    elif kind == "coco":
        samples = _coco(root, config.dataset)
    elif kind == "arc":
        samples = _arc(root, config.dataset)
    else:
        samples = _package_images(config.dataset)
    if not samples:
        raise InputError(f"the dataset holds no images ({kind}{', ' + str(root) if root else ''})")
    return samples


def read_labels_csv(folder):
    """``labels.csv`` (columns file, class_index, ...) of an image folder: [(image path, class index)]
    in file order."""
    folder = Path(folder)
    with open(folder / "labels.csv", newline="") as fh:
        return [(folder / row["file"], int(row["class_index"])) for row in csv.DictReader(fh)]


def _image_folder(root):
    if not (root / "labels.csv").is_file():
        raise InputError(f"{root} has no labels.csv (columns file, class_index)")
    try:
        items = read_labels_csv(root)
    except (KeyError, ValueError) as exc:
        raise InputError(f"{root}/labels.csv is malformed: {exc}") from None
    missing = [path for path, _ in items if not path.is_file()]
    if missing:
        raise InputError(f"{len(missing)} images of labels.csv missing from {root}, e.g. {missing[0].name}")
    return [Sample(id=path.name, path=path, label=label) for path, label in items]


def coco_paths(root, dataset):
    images = root / (dataset.get("images") or "val2017")
    annotations = root / (dataset.get("annotations") or "annotations/instances_val2017.json")
    return images, annotations


def _coco(root, dataset):
    from ctc.coco import load_coco

    images, annotations = coco_paths(root, dataset)
    return [Sample(id=str(image_id), path=path, coco_id=image_id) for image_id, path in load_coco(images, annotations)]


def _arc(root, dataset):
    from ctc.arc import read_arc_lines

    path = root / (dataset.get("file") or "arc_easy_test.jsonl")
    if not path.is_file():
        raise InputError(f"ARC questions not found: {path}")
    questions = read_arc_lines(path)[:dataset.get("questions")]
    return [Sample(id=question.id, path=path, label=question.answer_index, content=line)
            for question, line in questions]


def _package_images(dataset):
    package = dataset.get("package") or "skimage"
    labels = dataset.get("labels") or {}
    if not labels:
        raise ConfigError("dataset.labels must name the package's images (file: class index)")
    try:
        module = importlib.import_module(f"{package}.data")
    except ImportError:
        raise ConfigError(f"package_images: package '{package}' is not installed") from None
    folder = Path(module.__file__).parent
    samples = []
    for name, label in labels.items():
        path = folder / name
        if not path.is_file():
            raise InputError(f"package_images: {package} ships no {name}")
        samples.append(Sample(id=name, path=path, label=int(label)))
    return samples
