"""Token-wise scalar quantisation (ti_tool_idc 1, Tool.TOKENWISE_SQ), common part.

    syntax.py  tokenwise_sq_params() and its semantics; QP_MIN, QP_MAX
    sq.py      steps, dequantisation, the entropy payload (its docstring: spec section 7): the reference
    kernel.c   the payload's level coding compiled (pip builds it; kernel.py loads it with ctypes)
    decode.py  payload ─► levels, step offsets ─► q·Δ_t: the decoder's entry (TENSOR_DECODERS)
"""
