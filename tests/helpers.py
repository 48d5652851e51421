"""Helpers shared by the test modules: sample features, reference streams,
stream surgery and running the console scripts."""

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.codepoints import UnitType
from common.features import from_tensor_info
from common.hashing import tensor_md5
from common.stream import STREAM_HEADER_BYTES, UNIT_HEADER_BYTES
from common.syntax import SyntaxReader, SyntaxStructure
from common.syntax_structures import feature_parameter_set, tensor_data_unit

REPO = Path(__file__).resolve().parents[1]
UNIFORM_CFG = REPO / "cfg" / "uniform.cfg"


def options(**overrides):
    from encoder.options import default_options
    result = default_options()
    result.update(overrides)
    return result


# -- sample features -----------------------------------------------------------------------------

def relu_like(rng, shape, dtype=np.float32, sparsity=0.6, scale=2.0):
    """Sparse, one-sided values like a ReLU backbone output, with a few negatives."""
    values = rng.standard_normal(shape) * scale
    values[rng.random(shape) < sparsity] = 0.0
    values[rng.random(shape) < 0.05] *= -1
    return values.astype(dtype)


def chw_map(seed=1):
    rng = np.random.default_rng(seed)
    return {"": relu_like(rng, (6, 5, 7))}


def token_matrix(seed=2):
    rng = np.random.default_rng(seed)
    return {"": (rng.standard_normal((9, 12)) * 3).astype(np.float16)}


def three_tensors(seed=3):
    rng = np.random.default_rng(seed)
    return {"p2": relu_like(rng, (4, 6, 6)),
            "tokens": rng.standard_normal((5, 8)),
            "p3": relu_like(rng, (1, 3, 4, 4), dtype=np.float16)}


def step_map_for(tensors, seed=4):
    """Random step-offset maps for every tensor of `tensors` (shape (H, W), tokens (1, N))."""
    rng = np.random.default_rng(seed)
    maps = {}
    for name, array in tensors.items():
        shape = array.shape[-2:] if array.ndim >= 3 else (1, array.shape[0])
        maps[name] = rng.integers(-12, 13, size=shape)
    return maps


@dataclass
class Reference:
    name: str
    tensors: dict
    stream: bytes
    reconstruction: dict

    @property
    def md5s(self):
        return [tensor_md5(a) for a in self.reconstruction.values()]


def reference_streams():
    """Three small valid streams: a C×H×W map (with a step map), an N×C float16 token
    matrix and a 3-tensor .npz-like dict."""
    from encoder.encoder import encode_features
    result = []
    for name, tensors, offsets in (("chw", chw_map(), step_map_for(chw_map())),
                                   ("tokens", token_matrix(), None),
                                   ("three", three_tensors(), {"tokens": step_map_for(three_tensors())["tokens"]})):
        encoded = encode_features(tensors, options(QP=36), step_offsets=offsets)
        result.append(Reference(name, tensors, encoded.stream, encoded.reconstruction))
    return result


# -- stream surgery ------------------------------------------------------------------------------

@dataclass
class Unit:
    start: int           # byte offset of the unit header
    unit_type: int
    payload: bytes

    @property
    def payload_start(self):
        return self.start + UNIT_HEADER_BYTES

    @property
    def end(self):
        return self.payload_start + len(self.payload)


def split_units(stream):
    """Every unit of a well-formed stream, END_OF_STREAM included, with its byte offset."""
    units, pos = [], STREAM_HEADER_BYTES
    while pos < len(stream):
        unit_type = stream[pos]
        size = int.from_bytes(stream[pos + 1:pos + 5], "big")
        units.append(Unit(pos, unit_type, bytes(stream[pos + 5:pos + 5 + size])))
        pos += UNIT_HEADER_BYTES + size
    assert pos == len(stream)
    return units


def join_units(header, units):
    """A stream from its 6 header bytes and (unit_type, payload) pairs, framed as the spec says."""
    out = bytearray(header)
    for unit_type, payload in units:
        out += bytes([unit_type]) + len(payload).to_bytes(4, "big") + payload
    return bytes(out)


def decode_levels(stream):
    """{name: (spec, levels (C, H, W), offsets (H, W))}: what the entropy payloads carry."""
    from common.tools.tokenwise.sq import TokenwiseEntropyCoder
    units = split_units(stream)
    fps = SyntaxStructure()
    feature_parameter_set(SyntaxReader(units[0].payload), fps)
    specs = [from_tensor_info(t) for t in fps.fps_tensors]
    payloads = []
    for unit in units:
        if unit.unit_type == UnitType.TENSOR_DATA:
            tdu = SyntaxStructure()
            tensor_data_unit(SyntaxReader(unit.payload), tdu)
            payloads.append(tdu.tdu_entropy_payload)
    result = {}
    for spec, payload in zip(specs, payloads):
        coder = TokenwiseEntropyCoder(payload)
        levels, offsets, _ = coder.code_tensor(None, None, spec.grid, spec.step_map)
        coder.finish()
        result[spec.name] = (spec, levels, offsets)
    return result


# -- console scripts -----------------------------------------------------------------------------

def cli(app):
    """Command line of the installed console script `encode` / `decode` (or `python -m`)."""
    script = Path(sys.executable).parent / app
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", {"encode": "encoder.app", "decode": "decoder.app"}[app]]


def run_cli(app, *args, cwd=None, timeout=60):
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run(cli(app) + [str(a) for a in args], cwd=cwd or REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def assert_clean_error(returncode, stdout, stderr, prog, output=None):
    """Non-zero exit, exactly one '<prog>: error:' line on stderr, no traceback, no output file."""
    assert returncode != 0, (stdout, stderr)
    assert "Traceback" not in stderr and "Traceback" not in stdout, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), stderr
    assert len(lines[0]) > len(f"{prog}: error: ") + 5, stderr
    if output is not None:
        output = Path(output)
        assert not output.exists(), f"{output} was written"
        if output.parent.is_dir():
            assert not [p for p in output.parent.iterdir() if p.name.startswith(".fcrs-")], "temporary file left"
