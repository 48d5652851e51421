"""`make demo`: the main job end to end on a photo that scikit-image ships.

    astronaut.png ─► EfficientNet-Lite0 front ─► 1280×7×7 feature ─► encode (FeatJND steps) ─► .bin
        ─► decode ─► feature ─► classifier head ─► same top-1 as uncompressed?
    and a PNG of the photo, the feature energy and the FeatJND tolerance map.

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
    args = parser.parse_args(argv)

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
    from encoder.featjnd.allocation import default_weights_path
    from encoder.featjnd.estimator import load_estimator
    options = resolve_options([os.path.join(REPO, args.cfg)], [])
    estimator = load_estimator(options["JndWeights"] or default_weights_path())
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
