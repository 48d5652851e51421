"""Token-wise scalar quantisation, encoder part.

    quantiser.py  q = sign(f) · floor(|f| / Δ_t + offset), overflow-safe
    coder.py      per-token steps ─► quantise ─► entropy payload ─► reconstruct: the coder
                  TENSOR_CODERS names for Tool tokenwise

The per-token step offsets come from the caller or from a step allocator (encoder/featjnd/).
"""
