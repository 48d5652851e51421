"""Same input, same bytes: in-process, across processes (the `encode` console script),
and for the decoder's output files whatever --threads is (see decoder/test_app.py)."""

import numpy as np

from common.featio import load_features
from encoder.cfg import resolve_options
from encoder.encoder import encode_features
from tests.helpers import UNIFORM_CFG, options, run_cli, step_map_for, three_tensors


def test_same_input_same_bytes_in_process():
    tensors = three_tensors()
    offsets = step_map_for(tensors)
    first = encode_features(tensors, options(QP=33), step_offsets=offsets)
    copies = {name: array.copy(order="F") for name, array in tensors.items()}   # other memory layout
    second = encode_features(copies, options(QP=33), step_offsets={k: v.copy() for k, v in offsets.items()})
    assert first.stream == second.stream
    for name in tensors:
        assert first.reconstruction[name].tobytes() == second.reconstruction[name].tobytes()


def test_cli_equals_in_process(tmp_path):
    features = tmp_path / "feat.npz"
    np.savez(features, **three_tensors())
    out = tmp_path / "out.bin"
    proc = run_cli("encode", "-c", UNIFORM_CFG, "-i", features, "-o", out, "--QP=37")
    assert proc.returncode == 0, proc.stderr
    in_process = encode_features(load_features(str(features)),
                                 resolve_options([str(UNIFORM_CFG)], [("QP", "37")])).stream
    assert out.read_bytes() == in_process
