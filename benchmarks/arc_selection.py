"""How many ARC questions SmolLM2-135M answers correctly from uncompressed features: the pool an
LLM condition would score (FCM-LM keeps the questions the uncompressed model gets right). Two
ways to read the head's output:

    letters    one prompt with the choices lettered A, B, ...; the softmax over the letters'
               tokens at the last position (one forward pass a question)
    loglik     the log-likelihood of each choice's text after 'Question: ... Answer:', per
               character (lm-eval's acc_norm; one pass per choice)

    python benchmarks/arc_selection.py [--arc ../shared/data/arc] [--limit N]

Prints, per split and way, the questions answered correctly (and the chance level).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv=None):
    import torch

    from ctc.arc import parse_question, prompt, read_arc_lines
    from ctc.tasks.evaluation import ArcTask
    from ctc.tasks.smollm2 import SmolLM2, answer

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arc", default=str(REPO.parent / "shared" / "data" / "arc"))
    parser.add_argument("--limit", type=int, help="only the first N questions of each split")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    net = SmolLM2()
    task = ArcTask({}, net=net)         # the CTC condition's scoring: loglik
    for split in ("challenge", "easy"):
        lines = [line for _, line in read_arc_lines(Path(args.arc) / f"arc_{split}_test.jsonl")[:args.limit]]
        questions = [parse_question(line) for line in lines]
        start = time.perf_counter()
        letters = loglik = 0
        for question, line in zip(questions, lines):
            ids = net.tokenizer(prompt(question), return_tensors="pt").input_ids
            with torch.no_grad():
                letters += question.labels[answer(net.back(net.front(ids))[0], question, net.tokenizer)] == question.answer
            loglik += task.back(*task.front(line))["correct"]
        chance = np.mean([1 / len(q.labels) for q in questions])
        print(f"ARC-{split.capitalize()}, {len(questions)} questions ({time.perf_counter() - start:.0f} s): "
              f"letters {letters} correct ({100 * letters / len(questions):.1f} %), "
              f"loglik {loglik} ({100 * loglik / len(questions):.1f} %); chance {100 * chance:.1f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
