"""Pictures of what FeatJND sees: photo | feature energy | token tolerance s_t, side by side.

    photo ─► shorter side 256, centre crop 224 ─► EfficientNet-Lite0 front ─► f (1280×7×7)
      ─► energy_t = mean_c f²                           (7×7, nearest-upsampled to 224)
      ─► δ = G_θ(f), s_t = mean_c |δ| / (|f| + ε)       (7×7, nearest-upsampled to 224)

    python -m ctc.featjnd_picture --image PATH [--image ...] --out DIR [--weights PATH] [--epsilon E]

s_t is computed by the encoder's own ``token_tolerance``, so the picture shows
exactly the map that shapes the per-token steps (before λ scaling and snapping).
"""

import argparse
import glob
import os
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WEIGHTS_GLOB = os.path.join(REPO, "encoder", "featjnd", "weights", "featjnd_efficientnet-lite0_*.safetensors")
DEFAULT_EPSILON = 0.01     # the encoder's JndEpsilon default


def default_weights():
    """The shipped EfficientNet-Lite0 estimator in encoder/featjnd/weights/."""
    found = sorted(glob.glob(WEIGHTS_GLOB))
    if not found:
        raise FileNotFoundError(f"no weight file matches {WEIGHTS_GLOB}; train one with python -m ctc.training.featjnd")
    return found[-1]


def token_maps(image, net, estimator, epsilon=DEFAULT_EPSILON):
    """(network input 3×S×S, energy h×w, tolerance s h×w) for one PIL image, as numpy arrays."""
    import torch

    from encoder.featjnd.allocation import token_tolerance

    x = net.preprocess(image)
    with torch.no_grad():
        f = net.front(x[None])[0]
        delta = estimator.eval()(f[None])[0]
    f64, delta64 = f.double().numpy(), delta.double().numpy()
    return x.numpy(), np.mean(f64 ** 2, axis=0), token_tolerance(f64, delta64, epsilon)


def _upsample(grid, size):
    """Nearest-neighbour upsampling of an h×w map to size×size (size a multiple of h and w)."""
    h, w = grid.shape
    return np.kron(grid, np.ones((size // h, size // w)))


def write_tolerance_picture(image, net, estimator, path, epsilon=DEFAULT_EPSILON):
    """Write the three-panel PNG for image (PIL image or path) to path; returns {energy, tolerance} (h×w)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    title = os.path.basename(str(image)) if not isinstance(image, Image.Image) else "image"
    if not isinstance(image, Image.Image):
        with Image.open(image) as opened:
            image = opened.convert("RGB")
    x, energy, tolerance = token_maps(image, net, estimator, epsilon)
    size = x.shape[-1]
    photo = np.clip((x.transpose(1, 2, 0) * 128.0 + 127.0) / 255.0, 0.0, 1.0)
    cv = float(tolerance.std() / tolerance.mean()) if tolerance.mean() > 0 else 0.0

    figure, axes = plt.subplots(1, 3, figsize=(14, 4.6))
    axes[0].imshow(photo)
    axes[0].set_title(f"input: centre crop {size}×{size}")
    panels = [(axes[1], energy, "magma", f"feature energy mean_c f² ({energy.shape[0]}×{energy.shape[1]} tokens)"),
              (axes[2], tolerance, "viridis", f"JND tolerance s_t = mean_c |δ|/(|f|+{epsilon:g})")]
    for axis, grid, cmap, label in panels:
        shown = axis.imshow(_upsample(grid, size), cmap=cmap, interpolation="nearest")
        axis.set_title(label)
        figure.colorbar(shown, ax=axis, fraction=0.046, pad=0.04)
    for axis in axes:
        axis.set_xticks([])
        axis.set_yticks([])
    figure.suptitle(f"{title}: s_t from {tolerance.min():.3g} to {tolerance.max():.3g}, "
                    f"coefficient of variation {cv:.3f}")
    figure.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return {"energy": energy, "tolerance": tolerance}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m ctc.featjnd_picture", description=__doc__.splitlines()[0])
    parser.add_argument("--image", action="append", required=True, help="photo (repeat for several)")
    parser.add_argument("--weights", default="", help="FeatJND estimator (default: the shipped Lite0 file)")
    parser.add_argument("--out", required=True, help="folder for the PNGs (<image stem>_featjnd.png)")
    parser.add_argument("--epsilon", type=float, default=DEFAULT_EPSILON, help="ε of s_t (default: JndEpsilon's)")
    parser.add_argument("--model", default="efficientnet-lite0", help="task network the estimator was trained for")
    args = parser.parse_args(argv)

    import torch

    from ctc.tasks.efficientnet_lite import EfficientNetLiteSplit
    from encoder.featjnd.estimator import load_estimator

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    weights = args.weights or default_weights()
    estimator = load_estimator(weights)
    net = EfficientNetLiteSplit(args.model)
    for image in args.image:
        path = os.path.join(args.out, os.path.splitext(os.path.basename(image))[0] + "_featjnd.png")
        maps = write_tolerance_picture(image, net, estimator, path, args.epsilon)
        s = maps["tolerance"]
        print(f"{path}: s_t mean {s.mean():.4g}, min {s.min():.4g}, max {s.max():.4g}, "
              f"CV {s.std() / s.mean():.3f} (weights {os.path.basename(weights)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
