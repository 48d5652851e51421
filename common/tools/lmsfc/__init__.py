"""L-MSFC fusion coding (ti_tool_idc 3, Tool.LMSFC), common part: a group of pyramid levels
coded jointly by a learned codec whose decoder is integer arithmetic (ARCHITECTURE §4.3).

    graph.py       the networks (FENet, hyper-analysis/-synthesis, DRNet), declared once over `ops`
    arithmetic.py  the normative integer operations (its docstring: spec section "L-MSFC integer
                   arithmetic"); the encoder's float analysis operations
    entropy.py     scale ladder, frozen tables (tables.npz), the z and y sub-streams (its docstring:
                   spec section "L-MSFC entropy coding")
    models.py      model files, their content hash, finding one by hash
    syntax.py      lmsfc_params(), lmsfc_group_payload(), the group constraints, semantics
    codec.py       one group: payload ─► ẑ ─► μ, k ─► q ─► ŷ ─► DRNet (the encoder shares its pieces)
    decode.py      the decoder's entry: a group decoded once for all its members
"""
