"""`make demo`: the main job end to end on a photo that scikit-image ships, then on a detector.

    astronaut.png ─► EfficientNet-Lite0 front ─► 1280×7×7 feature ─► encode (FeatJND steps) ─► .bin
        ─► decode ─► feature ─► classifier head ─► same top-1 as uncompressed?
    and a PNG of the photo, the feature energy and the FeatJND tolerance map.

    When the YOLOv5n weights are found (../shared/data/weights/, or --yolo-weights):
    coco-mini photo ─► YOLOv5n front ─► P3, P4, P5 (.npz pyramid) ─► encode (token-wise) ─► .bin
        ─► decode ─► detection head ─► detections before and after, a PNG with both sets of boxes.

Runs the real `encode` / `decode` apps (as subprocesses, exactly as a user
would) and prints what each step did.
"""

import argparse
import os
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(REPO), "shared", "data")
YOLO_WEIGHTS = os.path.join(SHARED_DATA, "weights", "yolov5n_coco.safetensors")
YOLO_IMAGE = os.path.join(SHARED_DATA, "coco-mini", "val2017", "000000568290.jpg")
DETECTION_CONF, DETECTION_IOU = 0.25, 0.45       # display thresholds (the CTC scores at 0.001 / 0.6)


def run_app(module, args):
    command = [sys.executable, "-m", module] + args
    print("$ " + " ".join([module.split(".")[0].replace("encoder", "encode").replace("decoder", "decode")] + args))
    completed = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    for line in (completed.stdout + completed.stderr).splitlines():
        print("    " + line)
    if completed.returncode != 0:
        sys.exit(f"demo: {module} failed with exit code {completed.returncode}")
    return completed


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cfg", default="cfg/featjnd.cfg", help="encoder configuration")
    parser.add_argument("--out", default="out/demo", help="folder for the feature, bitstream and decoded feature")
    parser.add_argument("--yolo-weights", default=YOLO_WEIGHTS, help="YOLOv5n safetensors for the detection part")
    parser.add_argument("--yolo-image", default=YOLO_IMAGE, help="photo for the detection part")
    parser.add_argument("--yolo-cfg", default="cfg/uniform.cfg", help="encoder configuration of the detection part")
    parser.add_argument("--yolo-qp", type=int, default=56, help="QP of the detection part")
    args = parser.parse_args(argv)
    os.makedirs(os.path.join(REPO, args.out), exist_ok=True)
    classification_demo(args)
    detection_demo(args)
    return 0


def classification_demo(args):
    import torch
    from PIL import Image
    from skimage import data
    from torchvision.models import ResNet50_Weights

    from ctc.tasks.efficientnet_lite import EfficientNetLiteSplit

    torch.set_num_threads(2)
    categories = ResNet50_Weights.IMAGENET1K_V1.meta["categories"]   # ImageNet class names, offline
    os.makedirs(os.path.join(REPO, args.out), exist_ok=True)
    feature_path = os.path.join(args.out, "astronaut_lite0.npy")
    stream_path = os.path.join(args.out, "astronaut_lite0.bin")
    decoded_path = os.path.join(args.out, "astronaut_lite0_rec.npy")
    picture_path = os.path.join(args.out, "astronaut_lite0_featjnd.png")

    start = time.perf_counter()
    net = EfficientNetLiteSplit("efficientnet-lite0")
    image = Image.fromarray(data.astronaut())
    with torch.no_grad():
        feature = net.front(net.preprocess(image)[None])[0].numpy()
    np.save(os.path.join(REPO, feature_path), feature)
    print(f"feature: EfficientNet-Lite0 backbone output of scikit-image's astronaut photo (512x512 -> 224x224): "
          f"{'x'.join(map(str, feature.shape))} float32, {np.mean(feature == 0):.1%} zeros "
          f"-> {feature_path} ({time.perf_counter() - start:.1f} s)")

    run_app("encoder.app", ["-c", args.cfg, "-i", feature_path, "-o", stream_path])
    run_app("decoder.app", ["-i", stream_path, "-o", decoded_path])

    from ctc.featjnd_picture import write_tolerance_picture
    from encoder.cfg import resolve_options
    from encoder.featjnd.allocation import weights_path
    from encoder.featjnd.estimator import load_estimator
    options = resolve_options([os.path.join(REPO, args.cfg)], [])
    estimator = load_estimator(weights_path(options["JndWeights"]))
    write_tolerance_picture(image, net, estimator, os.path.join(REPO, picture_path), options["JndEpsilon"])

    decoded = np.load(os.path.join(REPO, decoded_path))
    bits = 8 * os.path.getsize(os.path.join(REPO, stream_path))
    nrmse = np.linalg.norm(decoded.astype(np.float64) - feature) / np.linalg.norm(feature)
    with torch.no_grad():
        logits = net.back(torch.from_numpy(np.stack([feature, decoded])))
    original_class, decoded_class = (int(i) for i in logits.argmax(dim=1))
    print("summary:")
    print(f"  bits                    {bits} ({bits / 8:.0f} bytes; uncompressed float32: {feature.size * 32} bits, "
          f"{feature.size * 32 / bits:.0f}x)")
    print(f"  bits per feature point  {bits / feature.size:.4f}")
    print(f"  NRMSE                   {nrmse:.4f}  (||f - f^|| / ||f||)")
    print("  MD5 check               OK (decoder verified the decoded-feature hash)")
    print(f"  top-1 uncompressed      {original_class} {categories[original_class]}")
    print(f"  top-1 decoded           {decoded_class} {categories[decoded_class]}")
    print(f"  same top-1              {'yes' if original_class == decoded_class else 'NO'}")
    print(f"  tolerance map           {picture_path} (photo | feature energy | FeatJND tolerance per token)")


def detection_demo(args):
    """P3–P5 of one coco-mini photo through encode / decode; detections before and after."""
    missing = [path for path in (args.yolo_weights, args.yolo_image) if not os.path.isfile(path)]
    if missing:
        print(f"\ndetection: skipped, {missing[0]} not found. Point the demo at the YOLOv5n weights and a "
              "photo with: make demo DEMO_ARGS='--yolo-weights PATH.safetensors --yolo-image PHOTO.jpg'")
        return
    import torch

    from common.errors import InputError
    from ctc.images import read_rgb
    from ctc.runner import feature_error
    from ctc.tasks.yolov5n import Yolov5n, letterbox, non_max_suppression, scale_boxes, to_input

    print(f"\ndetection: YOLOv5n (COCO) split after its neck, {os.path.relpath(args.yolo_image, REPO)}")
    stem = os.path.splitext(os.path.basename(args.yolo_image))[0]
    pyramid_path = os.path.join(args.out, f"{stem}_yolov5n_p3p5.npz")
    stream_path = os.path.join(args.out, f"{stem}_yolov5n_p3p5.bin")
    decoded_path = os.path.join(args.out, f"{stem}_yolov5n_p3p5_rec.npz")
    picture_path = os.path.join(args.out, f"{stem}_yolov5n_detections.png")
    try:
        net = Yolov5n(args.yolo_weights)
    except InputError as exc:
        sys.exit(f"demo: {exc}")
    names = net.class_names
    rgb = read_rgb(args.yolo_image)
    letterboxed, placement = letterbox(rgb)
    with torch.no_grad():
        features = {name: value.numpy() for name, value in net.front(to_input(letterboxed)).items()}
    np.savez(os.path.join(REPO, pyramid_path), **features)
    points = sum(f.size for f in features.values())
    print(f"pyramid: {', '.join(f'{n} {chr(215).join(map(str, f.shape[1:]))}' for n, f in features.items())} "
          f"float32 ({points:,} feature points) -> {pyramid_path}")
    run_app("encoder.app", ["-c", args.yolo_cfg, "-i", pyramid_path, "-o", stream_path, f"--QP={args.yolo_qp}"])
    run_app("decoder.app", ["-i", stream_path, "-o", decoded_path])

    with np.load(os.path.join(REPO, decoded_path)) as stored:
        decoded = {name: stored[name] for name in features}

    def detect(tensors):
        with torch.no_grad():
            raw = net.back({name: torch.from_numpy(value) for name, value in tensors.items()})
        boxes = non_max_suppression(raw, DETECTION_CONF, DETECTION_IOU)[0]
        return scale_boxes(boxes, placement).numpy()

    before, after = detect(features), detect(decoded)
    bits = 8 * os.path.getsize(os.path.join(REPO, stream_path))
    pixels = rgb.shape[0] * rgb.shape[1]
    print("summary:")
    print(f"  bits                    {bits} ({bits / 8:.0f} bytes; uncompressed float32: {points * 32} bits, "
          f"{points * 32 / bits:.0f}x)")
    print(f"  bpp                     {bits / pixels:.4f}  (bits per pixel of the {rgb.shape[1]}x{rgb.shape[0]} photo)")
    print(f"  bits per feature point  {bits / points:.4f}")
    print(f"  NRMSE                   {feature_error(features, decoded)['nrmse']:.4f}")
    for label, found in (("uncompressed", before), ("decoded", after)):
        listed = ", ".join(f"{names[int(c)]} {s:.2f}" for *_, s, c in found) or "none"
        print(f"  detections {label:<13}{len(found)}: {listed}")
    _draw_detections(rgb, before, after, names, os.path.join(REPO, picture_path))
    print(f"  boxes                   {picture_path} (uncompressed: green solid; decoded: red dashed)")


def _draw_detections(rgb, before, after, names, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    fig, ax = plt.subplots(figsize=(rgb.shape[1] / 100, rgb.shape[0] / 100), dpi=100)
    ax.imshow(rgb)
    for detections, color, style, dy in ((before, "lime", "-", -2), (after, "red", "--", 12)):
        for x0, y0, x1, y1, score, cls in detections:
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=color, linestyle=style, lw=1.5))
            ax.text(x0, y0 + dy, f"{names[int(cls)]} {score:.2f}", color=color, fontsize=6)
    ax.set_axis_off()
    fig.subplots_adjust(0, 0, 1, 1)
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
