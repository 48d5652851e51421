"""Decode every conformance stream in bitstreams/ that needs no external program and compare the
decoded-feature MD5s with bitstreams/*.md5. Needs only the core dependencies (numpy, constriction,
safetensors), so it checks the decoder under any numpy: `make test-numpy2` runs it with numpy 2.

    python tests/decode_conformance.py
"""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from common.hashing import tensor_md5  # noqa: E402
from decoder.decoder import decode_stream  # noqa: E402


def main():
    failures = 0
    for path in sorted((REPO / "bitstreams").glob("*.bin")):
        if path.stem.startswith("video_anchor"):
            continue          # needs libde265-dec265: tests/test_conformance_streams.py covers it
        decoded = decode_stream(path.read_bytes())
        expected = [line.split()[0] for line in path.with_suffix(".md5").read_text().splitlines()]
        got = [tensor_md5(decoded.tensors[spec.name]).hex() for spec in decoded.specs]
        failures += got != expected
        print(f"{path.stem:<24} numpy {np.__version__}: {'OK' if got == expected else 'MISMATCH'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
