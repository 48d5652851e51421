"""What a better prior for z could save an L-MSFC model: the z sub-stream's share of the bits, and
the bound on any factorised prior for z.

z is coded with one frequency table per channel (z_frequencies, 2·Z_LIMIT + 1 symbols), so the
bitstream already carries an arbitrary non-parametric density; only the training decides its
shape (today one logistic per channel, fitted jointly and tabulated on export). The best any
per-channel density can do — a learned non-parametric one such as CompressAI's
EntropyBottleneck included — is bounded here by each channel's empirical histogram of ẑ on the
training pool (augmented crops the model was trained on, add-½ smoothing), tabulated with the
normative quantise_frequencies and charged on the 13 held-out pool photos. That histogram fits
the training distribution exactly, so the saving it shows is an upper bound for a prior trained
jointly with the same transform.

Bits are real: the model's encoder writes each held-out photo's group payload at a spread of rate
indices, and the z and y sub-streams are measured in bytes. Needs ../shared.

    .venv/bin/python benchmarks/bench_lmsfc_entropy.py --model yolov5n-task
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = REPO.parent / "shared" / "data"

import numpy as np  # noqa: E402


def z_symbols(model, pyramid):
    """ẑ of one pyramid, as the encoder computes it."""
    from common.tools.lmsfc.entropy import Z_LIMIT
    from common.tools.lmsfc.graph import fenet, hyper_analysis
    from encoder.tools.lmsfc.analysis import FloatOps, normalised

    arrays = [level.astype(np.float32) for level in pyramid]
    analysis = FloatOps(model.float_layers)
    y = fenet(analysis, model.family, [normalised(a, norm) for a, norm in zip(arrays, model.level_normalisation)],
              [a.shape[1:] for a in arrays])
    return np.clip(np.round(hyper_analysis(analysis, model.family, y)), -Z_LIMIT, Z_LIMIT).astype(np.int64)


def histogram_tables(symbol_maps, channels):
    """Per channel, the empirical ẑ histogram (add-½) as normative integer frequencies."""
    from common.tools.lmsfc.entropy import Z_LIMIT, quantise_frequencies

    counts = np.full((channels, 2 * Z_LIMIT + 1), 0.5)
    for symbols in symbol_maps:
        for c in range(channels):
            counts[c] += np.bincount(symbols[c].ravel() + Z_LIMIT, minlength=2 * Z_LIMIT + 1)
    return np.stack([quantise_frequencies(row) for row in counts])


def table_bits(symbols, frequencies):
    """−log2 P of a C×h×w map of ẑ under per-channel integer frequency tables."""
    from common.tools.lmsfc.entropy import FREQUENCY_BITS, Z_LIMIT

    rows = np.arange(symbols.shape[0])[:, None]
    chosen = frequencies[rows, symbols.reshape(symbols.shape[0], -1) + Z_LIMIT]
    return float(np.sum(FREQUENCY_BITS - np.log2(chosen)))


def sub_stream_bytes(payload):
    """(z bytes, y bytes) of a group payload (lmsfc_group_payload)."""
    from common.syntax import SyntaxReader, SyntaxStructure
    from common.tools.lmsfc.syntax import lmsfc_group_payload

    structure = SyntaxStructure()
    lmsfc_group_payload(SyntaxReader(payload), structure)
    return len(structure.lm_z_substream), len(structure.lm_y_substream)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="yolov5n-task")
    parser.add_argument("--weights", default=str(DATA / "weights" / "yolov5n_coco.safetensors"))
    parser.add_argument("--fit-images", type=int, default=120, help="training-pool pyramids the histograms see")
    args = parser.parse_args(argv)
    if not Path(args.weights).is_file():
        sys.exit(f"bench_lmsfc_entropy: YOLOv5n weights not found at {args.weights}")

    from ctc.training.data import cached_pyramids, split_pool, training_pool
    from encoder.tools.lmsfc.analysis import encode_group, resolve_model

    model = resolve_model(args.model)
    train_paths, held_paths = split_pool(training_pool(DATA))
    held = cached_pyramids(args.weights, held_paths, 0, 1, "held")
    fit = cached_pyramids(args.weights, train_paths, 0, 3, "train")[:args.fit_images]
    fitted = histogram_tables([z_symbols(model, p) for p in fit], model.family.hyper)
    held_z = [z_symbols(model, p) for p in held]
    pixels = sum(64 * p[0].shape[1] * p[0].shape[2] for p in held)
    shipped_z = sum(table_bits(z, model.z_frequencies) for z in held_z)
    bound_z = sum(table_bits(z, fitted) for z in held_z)
    print(f"model {args.model}; {len(held)} held-out pool photos, z histograms from {len(fit)} training pyramids")
    print(f"ideal z bits per pixel: shipped tables {shipped_z / pixels:.5f}, empirical histograms "
          f"{bound_z / pixels:.5f} ({100 * (bound_z / shipped_z - 1):+.1f} % of z)")
    low, high = model.rate_indices
    rates = sorted({low, low + (high - low) // 3, low + 2 * (high - low) // 3, high})
    print(f"{'rate':>5} {'bpp':>8} {'z bpp':>8} {'z share':>8} {'bound saving':>13}")
    for rate in rates:
        z_bytes = y_bytes = 0
        for pyramid in held:
            coded = encode_group(model, [level.astype(np.float32) for level in pyramid], rate)
            z, y = sub_stream_bytes(coded.payload)
            z_bytes, y_bytes = z_bytes + z, y_bytes + y
        total = 8 * (z_bytes + y_bytes)
        saving = (shipped_z - bound_z) / total
        print(f"{rate:>5} {total / pixels:>8.4f} {8 * z_bytes / pixels:>8.4f} {100 * 8 * z_bytes / total:>7.1f}% "
              f"{100 * saving:>12.2f}%")
    print("(bound saving: the empirical histograms' ideal z bits saved, as a share of the real total)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
