"""What encoder/encoder.py and every tool's coder share: the TensorSpec of an input array and
the CodedTensor a coder hands back. A coder (one entry of TENSOR_CODERS) is
(tensors {name: array}, options, step offsets {name: StepOffsets or a token map}, step allocator)
-> [CodedTensor], one per tensor in input order."""

from dataclasses import dataclass

import numpy as np

from common.codepoints import DType, Layout, Tool
from common.features import TensorSpec

DTYPE_OF_NUMPY = {np.dtype(np.float16): DType.FLOAT16, np.dtype(np.float32): DType.FLOAT32,
                  np.dtype(np.float64): DType.FLOAT64}


@dataclass(frozen=True)
class StepOffsets:
    """A tensor's step offsets to QP for the token-wise tool: per token (an (H, W) map; (N,) for
    N×C tokens) and per channel ((C,)); either may be None (all 0). The step of token t in channel
    c is then 2^((QP + tokens[t] + channels[c] − 48) / 8)."""
    tokens: np.ndarray = None
    channels: np.ndarray = None


def tensor_spec(name, array, qp, step_map):
    batch_axis = array.ndim == 4
    shape = tuple(int(n) for n in (array.shape[1:] if batch_axis else array.shape))
    layout = Layout.CHW if len(shape) == 3 else Layout.TOKENS
    return TensorSpec(name=name, layout=layout, dtype=DTYPE_OF_NUMPY[array.dtype], shape=shape,
                      batch_axis=batch_axis, tool=Tool.TOKENWISE_SQ, qp=qp, step_map=step_map)


@dataclass
class CodedTensor:
    """What a tool's coder hands back for one tensor."""
    spec: TensorSpec
    payload: bytes                 # tdu_entropy_payload
    reconstruction: np.ndarray     # exactly what the decoder will output
    seconds: float                 # encoding wall time of this tensor
    ideal_bits: float = None
    step_map_bits: float = 0.0     # token-wise: −log2 P of the step offsets, map and channel vector (in ideal_bits)
    inner_codec: str = ""
    inner_seconds: float = 0.0
