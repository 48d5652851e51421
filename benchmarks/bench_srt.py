"""What SRT (sub-token translation ensembling, ctc/tasks/dinov2s.py front_srt) does to the saliency
task without coding: the saliency map of the SRT tokens against the plain tokens' map, per image,
on the 79 annotated coco-mini images (the evaluation set of fcmlm_dinov2s_saliency). Reads and
fills the CTC's feature cache, so after the two CTC runs it only runs the head.

    python benchmarks/bench_srt.py [--data ../shared/data/coco-mini] [--srt 8]

Prints the mean CC and KL (with their spread over images) and the tokens' relative change.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv=None):
    from ctc.config import load_config
    from ctc.datasets import load_samples
    from ctc.feature_cache import DEFAULT_ROOT, FeatureCache
    from ctc.tasks.evaluation import SaliencyTask

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "coco-mini"))
    parser.add_argument("--srt", type=int, default=8, help="translations (fcmlm_dinov2s_saliency_srt's 8)")
    parser.add_argument("--cache", default=str(DEFAULT_ROOT))
    args = parser.parse_args(argv)

    config = load_config("fcmlm_dinov2s_saliency")
    samples = load_samples(config, Path(args.data))
    plain_task, srt_task = SaliencyTask(), SaliencyTask({"srt": args.srt})
    plain_cache, srt_cache = FeatureCache(args.cache, plain_task), FeatureCache(args.cache, srt_task)
    cc, kl, change = [], [], []
    for sample in samples:
        plain, _, _ = plain_cache.of_sample(sample)
        ensembled, _, _ = srt_cache.of_sample(sample)
        scores = SaliencyTask.compare(srt_task.back(ensembled, {}), plain_task.back(plain, {}))
        cc.append(scores["cc"])
        kl.append(scores["kl"])
        change.append(float(np.linalg.norm(ensembled["tokens"] - plain["tokens"]) / np.linalg.norm(plain["tokens"])))
    print(f"SRT with {args.srt} translations, {len(samples)} images: the SRT tokens' saliency map against the plain "
          f"tokens' map: CC {np.mean(cc):.3f} (median {np.median(cc):.3f}, min {np.min(cc):.3f}), "
          f"KL {np.mean(kl):.4f} (median {np.median(kl):.4f}); tokens moved by {np.mean(change):.3f} of their norm")
    return 0


if __name__ == "__main__":
    sys.exit(main())
