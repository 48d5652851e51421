"""Plain description of the coded tensors, and its mapping to tensor_info().

The syntax layer speaks spec names (ti_num_channels_minus1 ...); the rest of
the code speaks `TensorSpec`.
"""

from dataclasses import dataclass

from common.codepoints import DType, Layout, NUMPY_DTYPE, Tool
from common.syntax import SyntaxStructure


@dataclass(frozen=True)
class TensorSpec:
    name: str
    layout: Layout
    dtype: DType
    shape: tuple          # (C, H, W) for CHW, (N, C) for TOKENS; batch axis excluded
    batch_axis: bool      # decoded array gets a leading axis of 1
    tool: Tool
    qp: int
    step_map: bool        # per-token step offsets are coded

    @property
    def grid(self):
        """(channels, height, width) the token-wise coder works on."""
        if self.layout == Layout.CHW:
            return self.shape
        num_tokens, channels = self.shape
        return (channels, 1, num_tokens)

    @property
    def num_elements(self):
        c, h, w = self.grid
        return c * h * w

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
    s.ti_tokenwise_sq_params = SyntaxStructure(tsq_qp=spec.qp, tsq_step_map_flag=int(spec.step_map))
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
    params = s.ti_tokenwise_sq_params
    return TensorSpec(name=name, layout=layout, dtype=DType(s.ti_dtype_idc), shape=shape,
                      batch_axis=bool(s.ti_batch_dim_flag), tool=Tool(s.ti_tool_idc),
                      qp=params.tsq_qp, step_map=bool(params.tsq_step_map_flag))
