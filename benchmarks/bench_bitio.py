"""Parse time of the conformance streams' syntax with the bit reader against an earlier one.

Every unit of every stream in bitstreams/ (stream and unit headers, feature parameter sets, data
unit headers, hashes) is parsed with common/syntax.py's SyntaxReader, once over today's
common/bitio.py and once over the bitio.py of a git revision (default: the hand-written reader
before the move to bitstring, commit fd512bd), alternately; the minimum over rounds of the
median of 9 timings of 20 passes each is reported, and the ratio.

    .venv/bin/python benchmarks/bench_bitio.py [--before REVISION]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
HAND_WRITTEN = "fd512bd"


def module_at(revision):
    """common/bitio.py as it was at `revision`, imported under another name."""
    source = subprocess.run(["git", "show", f"{revision}:common/bitio.py"], cwd=REPO, capture_output=True,
                            text=True, check=True).stdout
    path = Path(tempfile.mkdtemp()) / "bitio_before.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("bitio_before", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parse_all(streams):
    from common.codepoints import UnitType
    from common.stream import iter_units
    from common.syntax import SyntaxReader, SyntaxStructure
    from common.syntax_structures import decoded_feature_hash, feature_parameter_set, tensor_data_unit

    parsers = {UnitType.FEATURE_PARAMETER_SET: feature_parameter_set, UnitType.TENSOR_DATA: tensor_data_unit,
               UnitType.DECODED_FEATURE_HASH: decoded_feature_hash}
    for data in streams:
        for unit_type, payload in iter_units(data):
            if unit_type in parsers:
                parsers[unit_type](SyntaxReader(payload), SyntaxStructure())


def timed(reader_class, streams):
    import common.syntax

    common.syntax.BitReader = reader_class
    parse_all(streams)
    runs = []
    for _ in range(9):
        start = time.perf_counter()
        for _ in range(20):
            parse_all(streams)
        runs.append((time.perf_counter() - start) / 20)
    return statistics.median(runs)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default=HAND_WRITTEN, help="git revision whose common/bitio.py is compared")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    import common.bitio

    before = module_at(args.before)
    streams = [p.read_bytes() for p in sorted((REPO / "bitstreams").glob("*.bin"))]
    times = {"before": [], "now": []}
    for _ in range(args.rounds):
        times["before"].append(timed(before.BitReader, streams))
        times["now"].append(timed(common.bitio.BitReader, streams))
    then, now = min(times["before"]), min(times["now"])
    print(f"{len(streams)} conformance streams, every unit's syntax parsed: bitio.py at {args.before} "
          f"{1e3 * then:.2f} ms, today's {1e3 * now:.2f} ms, ratio {now / then:.2f}x (limit 2x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
