"""Video anchor, encoder part.

    coder.py          truncation, min-max levels, tile and picture layout (one picture per tensor or
                      one for all), the inner encoder, reconstruction by the decoder's code: the coder
                      TENSOR_CODERS names for Tool anchor (code_anchor_tensors)
    inner_encoder.py  the external video encoders (x265, VTM's EncoderAppStatic, VVenC's vvencFFapp)
"""
