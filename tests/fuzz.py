"""Seeded mutation fuzzer of the decoder over the conformance streams of every tool.

Each case mutates one stream of bitstreams/ (a bit flip, a burst of flips, random bytes written
over a range, a truncation, inserted or deleted bytes, a unit repeated, or a shape inflated: one
shape field of one tensor (channels, height, width, tokens, an L-MSFC latent's height or width,
an anchor picture's width or height) raised within its syntax range, log-uniformly, the payloads
unchanged) and decodes it with the library (decode_stream, the default memory budget). Every
case must end as one of:

    error       a clean FcrsError (the app prints one line and exits 1)
    mismatch    decoded, and the integrity check says so (***ERROR***, exit 1)
    same        decoded, every hash OK, output identical to the stream's reference decode
    unchecked   decoded, but the mutation removed the hash unit (the decoder warns); the
                output is compared and counted, not failed: without a hash nothing can tell

Failures: a wrong pass (decoded, every hash OK, a different output), a crash (any other
exception), a case over MAX_CASE_SECONDS, or the process's peak RSS growing by more than
MAX_RSS_GROWTH_MB while the cases run (the peak before them, e.g. earlier tests in the same
process, is the baseline).

    python -m tests.fuzz --cases 20000 [--seed 0]      # `make fuzz`
"""

from __future__ import annotations

import argparse
import math
import random
import resource
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

from common.stream import STREAM_HEADER_BYTES, UNIT_HEADER_BYTES
from common.syntax import MAX_UE_VALUE, SyntaxReader, SyntaxStructure, SyntaxWriter
from common.syntax_structures import feature_parameter_set

REPO = Path(__file__).resolve().parents[1]
MAX_CASE_SECONDS = 2.0
MAX_RSS_GROWTH_MB = 1024   # the decoder's default memory budget (decoder.DEFAULT_MAX_MEMORY)
MUTATIONS = ("flip", "burst", "overwrite", "truncate", "insert", "delete", "repeat-unit", "inflate-shape")
# (syntax structure holding it, element): the shape fields inflate-shape raises
SHAPE_FIELDS = (("tensor", "ti_num_channels_minus1"), ("tensor", "ti_height_minus1"), ("tensor", "ti_width_minus1"),
                ("tensor", "ti_num_tokens_minus1"), ("ti_lmsfc_params", "lm_latent_height_minus1"),
                ("ti_lmsfc_params", "lm_latent_width_minus1"), ("ti_video_anchor_params", "va_picture_width_minus1"),
                ("ti_video_anchor_params", "va_picture_height_minus1"))


def streams():
    """{name: (stream bytes, reference {name: array})} of the conformance streams this machine
    can decode (the video-anchor ones need libde265-dec265)."""
    from decoder.decoder import decode_stream

    out = {}
    for path in sorted((REPO / "bitstreams").glob("*.bin")):
        if path.stem.startswith("video_anchor") and shutil.which("libde265-dec265") is None:
            continue
        data = path.read_bytes()
        out[path.stem] = (data, decode_stream(data).tensors)
    return out


def units_of(data):
    """[(start, end)] of every unit (header included) of a well-formed stream."""
    units, pos = [], STREAM_HEADER_BYTES
    while pos + UNIT_HEADER_BYTES <= len(data):
        size = int.from_bytes(data[pos + 1:pos + 5], "big")
        units.append((pos, pos + UNIT_HEADER_BYTES + size))
        pos += UNIT_HEADER_BYTES + size
    return units


class LenientWriter(SyntaxWriter):
    """A SyntaxWriter that writes any value within its element's range, whether or not the
    conformance constraints (rw.require) hold."""

    def require(self, condition, message):
        pass


class RangeProbe(LenientWriter):
    """Records each ue(v) element's upper bound as it is written."""

    def __init__(self):
        super().__init__()
        self.upper = {}

    def ue(self, s, name, lo=0, hi=MAX_UE_VALUE, idx=None):
        self.upper[(id(s), name)] = hi
        return super().ue(s, name, lo=lo, hi=hi, idx=idx)


def parameter_set(data):
    """The feature_parameter_set of a well-formed stream (its first unit), parsed."""
    start, end = units_of(data)[0]
    fps = SyntaxStructure()
    feature_parameter_set(SyntaxReader(data[start + UNIT_HEADER_BYTES:end]), fps)
    return fps


def inflated(data, rng):
    """The stream with one shape field of its feature_parameter_set raised within the field's
    syntax range (log-uniformly between its value + 1 and the range's end); None when no
    tensor has a shape field. Conformance constraints are not enforced in writing, so the
    decoder sees streams that break them too."""
    fps = parameter_set(data)
    start, end = units_of(data)[0]
    probe = RangeProbe()
    feature_parameter_set(probe, fps)
    candidates = []
    for tensor in fps.fps_tensors:
        for holder, name in SHAPE_FIELDS:
            structure = tensor if holder == "tensor" else getattr(tensor, holder, None)
            upper = probe.upper.get((id(structure), name))
            if structure is not None and hasattr(structure, name) and upper and getattr(structure, name) < upper:
                candidates.append((structure, name, upper))
    if not candidates:
        return None
    structure, name, upper = rng.choice(candidates)
    value = getattr(structure, name)
    setattr(structure, name, min(upper, value + int(2 ** rng.uniform(0, math.log2(upper - value + 1)))))
    rw = LenientWriter()
    feature_parameter_set(rw, fps)
    payload = rw.getvalue()
    header = data[start:start + 1] + len(payload).to_bytes(4, "big")
    return data[:start] + header + payload + data[end:]


def mutate(data, rng):
    """(mutation kind, mutated bytes)."""
    kind = rng.choice(MUTATIONS)
    out = bytearray(data)
    if kind == "inflate-shape":
        stream = inflated(data, rng)
        if stream is not None:
            return kind, stream
        kind = "flip"
    if kind == "flip":
        bit = rng.randrange(8 * len(out))
        out[bit // 8] ^= 0x80 >> (bit % 8)
    elif kind == "burst":
        start = rng.randrange(8 * len(out))
        for bit in range(start, min(8 * len(out), start + rng.randint(2, 64))):
            if rng.random() < 0.5:
                out[bit // 8] ^= 0x80 >> (bit % 8)
    elif kind == "overwrite":
        start = rng.randrange(len(out))
        length = rng.randint(1, 16)
        out[start:start + length] = bytes(rng.randrange(256) for _ in range(length))
        out = out[:len(data)]
    elif kind == "truncate":
        out = out[:rng.randrange(len(out))]
    elif kind == "insert":
        position = rng.randrange(len(out) + 1)
        out[position:position] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    elif kind == "delete":
        start = rng.randrange(len(out))
        del out[start:start + rng.randint(1, 16)]
    else:                                  # repeat one unit in place
        start, end = rng.choice(units_of(data))
        out[end:end] = data[start:end]
    return kind, bytes(out)


def same_output(decoded, reference):
    if list(decoded) != list(reference):
        return False
    return all(decoded[n].dtype == reference[n].dtype and decoded[n].shape == reference[n].shape
               and decoded[n].tobytes() == reference[n].tobytes() for n in reference)


def run(cases, seed=0, log=print):
    """Run the fuzzer; returns (summary Counter of (outcome), failures list, table text)."""
    from common.errors import FcrsError
    from decoder.decoder import decode_stream

    inputs = streams()
    names = sorted(inputs)
    baseline_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rng = random.Random(seed)
    outcomes = Counter()
    by_stream = {name: Counter() for name in names}
    failures = []
    slowest = 0.0
    for case in range(cases):
        name = names[case % len(names)]
        data, reference = inputs[name]
        kind, mutated = mutate(data, rng)
        start = time.perf_counter()
        try:
            decoded = decode_stream(mutated)
        except FcrsError:
            outcome = "error"
        except Exception as exc:               # noqa: BLE001 - a crash is what we look for
            outcome = "crash"
            failures.append(f"case {case} ({name}, {kind}): crash {type(exc).__name__}: {exc}")
        else:
            if not decoded.hash_checks:
                outcome = "unchecked-same" if same_output(decoded.tensors, reference) else "unchecked-different"
            elif not all(check.ok for check in decoded.hash_checks):
                outcome = "mismatch"
            elif same_output(decoded.tensors, reference):
                outcome = "same"
            else:
                outcome = "WRONG PASS"
                failures.append(f"case {case} ({name}, {kind}): every hash OK but the output differs")
        seconds = time.perf_counter() - start
        slowest = max(slowest, seconds)
        if seconds > MAX_CASE_SECONDS:
            failures.append(f"case {case} ({name}, {kind}): {seconds:.1f} s")
        outcomes[outcome] += 1
        by_stream[name][outcome] += 1
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if peak_mb - baseline_mb > MAX_RSS_GROWTH_MB:
        failures.append(f"peak RSS grew by {peak_mb - baseline_mb:.0f} MB > {MAX_RSS_GROWTH_MB} MB")
    columns = ["error", "mismatch", "same", "unchecked-same", "unchecked-different", "WRONG PASS", "crash"]
    lines = [f"{cases} cases, seed {seed}, {len(names)} streams; slowest case {slowest:.2f} s "
             f"(limit {MAX_CASE_SECONDS:g} s); peak RSS {peak_mb:.0f} MB, {peak_mb - baseline_mb:.0f} MB over the "
             f"{baseline_mb:.0f} MB before the cases (limit {MAX_RSS_GROWTH_MB} MB)",
             "| stream | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name in names + ["all"]:
        counts = outcomes if name == "all" else by_stream[name]
        lines.append(f"| {name} | " + " | ".join(str(counts[c]) for c in columns) + " |")
    return outcomes, failures, "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    _, failures, table = run(args.cases, args.seed)
    print(table)
    print(f"{len(failures)} failures in {time.perf_counter() - start:.0f} s")
    for failure in failures[:20]:
        print("  " + failure)
    return 1 if failures else 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
