"""Video anchor (ti_tool_idc 2, Tool.VIDEO_ANCHOR), common part.

    syntax.py         video_anchor_params(), its semantics and tile-grid constraints; AnchorParams ↔ syntax
    format.py         AnchorParams, tile grid, levels ↔ picture, m + v·(M − m)/L (its docstring: spec section 8)
    inner_decoder.py  the external video decoders (libde265-dec265; VTM's DecoderAppStatic or VVdeC)
    decode.py         inner bitstream ─► picture (decoded once per picture) ─► levels ─► tensor: the
                      decoder's entry (TENSOR_DECODERS) and the shared-picture sources
"""
