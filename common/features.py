"""Plain description of the coded tensors, and its mapping to tensor_info().

The syntax layer speaks spec names (ti_num_channels_minus1 ...); the rest of
the code speaks `TensorSpec`.
"""

import math
from dataclasses import dataclass

import numpy as np

from common.codepoints import DType, Layout, NUMPY_DTYPE, Tool
from common.syntax import SyntaxStructure
from common.tools.lmsfc.syntax import LmsfcParams, from_lmsfc_params, to_lmsfc_params
from common.tools.video_anchor.format import AnchorParams
from common.tools.video_anchor.syntax import from_video_anchor_params, to_video_anchor_params


@dataclass(frozen=True)
class TensorSpec:
    name: str
    layout: Layout
    dtype: DType
    shape: tuple          # (C, H, W) for CHW, (N, C) for TOKENS; batch axis excluded
    batch_axis: bool      # decoded array gets a leading axis of 1
    tool: Tool
    qp: int = 0           # token-wise tool: base step exponent (tsq_qp)
    step_map: bool = False    # token-wise tool: per-token step offsets are coded
    channel_offsets: bool = False   # token-wise tool: per-channel step offsets are coded
    anchor: AnchorParams = None   # video anchor: its parameters
    lmsfc: LmsfcParams = None     # L-MSFC: its group parameters

    @property
    def grid(self):
        """(channels, height, width) the token-wise coder works on (its token grid)."""
        if self.layout == Layout.CHW:
            return self.shape
        num_tokens, channels = self.shape
        width = token_grid_width(num_tokens)
        return (channels, -(-num_tokens // width), width)

    @property
    def num_elements(self):
        """Feature points of the tensor (token-grid padding excluded)."""
        return math.prod(self.shape)

    @property
    def array_shape(self):
        return ((1,) if self.batch_axis else ()) + tuple(self.shape)

    @property
    def numpy_dtype(self):
        return NUMPY_DTYPE[self.dtype]


def to_tensor_info(spec):
    name = spec.name.encode("utf-8")
    s = SyntaxStructure(ti_name_length=len(name), ti_name=name, ti_layout_idc=spec.layout,
                        ti_dtype_idc=spec.dtype, ti_batch_dim_flag=int(spec.batch_axis),
                        ti_tool_idc=spec.tool)
    if spec.layout == Layout.CHW:
        c, h, w = spec.shape
        s.ti_num_channels_minus1, s.ti_height_minus1, s.ti_width_minus1 = c - 1, h - 1, w - 1
    else:
        n, c = spec.shape
        s.ti_num_tokens_minus1, s.ti_num_channels_minus1 = n - 1, c - 1
    if spec.tool == Tool.TOKENWISE_SQ:
        s.ti_tokenwise_sq_params = SyntaxStructure(tsq_qp=spec.qp, tsq_step_map_flag=int(spec.step_map),
                                                   tsq_channel_offsets_flag=int(spec.channel_offsets))
    elif spec.tool == Tool.VIDEO_ANCHOR:
        s.ti_video_anchor_params = to_video_anchor_params(spec.anchor)
    else:
        s.ti_lmsfc_params = to_lmsfc_params(spec.lmsfc)
    return s


def from_tensor_info(s):
    from common.errors import BitstreamError
    try:
        name = s.ti_name.decode("utf-8")
    except UnicodeDecodeError:
        raise BitstreamError("ti_name is not valid UTF-8") from None
    layout = Layout(s.ti_layout_idc)
    if layout == Layout.CHW:
        shape = (s.ti_num_channels_minus1 + 1, s.ti_height_minus1 + 1, s.ti_width_minus1 + 1)
    else:
        shape = (s.ti_num_tokens_minus1 + 1, s.ti_num_channels_minus1 + 1)
    fields = dict(name=name, layout=layout, dtype=DType(s.ti_dtype_idc), shape=shape,
                  batch_axis=bool(s.ti_batch_dim_flag), tool=Tool(s.ti_tool_idc))
    if fields["tool"] == Tool.TOKENWISE_SQ:
        params = s.ti_tokenwise_sq_params
        return TensorSpec(**fields, qp=params.tsq_qp, step_map=bool(params.tsq_step_map_flag),
                          channel_offsets=bool(params.tsq_channel_offsets_flag))
    if fields["tool"] == Tool.VIDEO_ANCHOR:
        return TensorSpec(**fields, anchor=from_video_anchor_params(s.ti_video_anchor_params))
    return TensorSpec(**fields, lmsfc=from_lmsfc_params(s.ti_lmsfc_params))


def token_grid_width(num_tokens):
    """Width W of the grid N tokens are coded on (fixed by the spec, not signalled, so
    that no stream can force a degenerate one-token-per-wave scan): near-square, the
    width in [s, min(N, 2s)], s = ceil(sqrt(N)), with the fewest padding positions,
    the smallest on ties."""
    side = math.isqrt(num_tokens - 1) + 1 if num_tokens > 1 else 1
    return min(range(side, min(num_tokens, 2 * side) + 1), key=lambda w: (-num_tokens % w, w))


def to_grid(spec, values):
    """The (C, H, W) coding grid of a tensor's values (batch axis removed); N×C tokens
    go to a C × ceil(N/W) × W grid, row by row, padded with zeros."""
    values = values.reshape(spec.shape)
    if spec.layout == Layout.CHW:
        return values
    channels, height, width = spec.grid
    grid = np.zeros((channels, height * width), dtype=values.dtype)
    grid[:, :spec.shape[0]] = values.T
    return grid.reshape(spec.grid)


def from_grid(spec, grid):
    """Inverse of to_grid: the tensor's values in its decoded shape (padding dropped)."""
    if spec.layout == Layout.TOKENS:
        grid = grid.reshape(grid.shape[0], -1)[:, :spec.shape[0]].T
    return grid.reshape(spec.array_shape)
