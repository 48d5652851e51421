"""Stream-wide limits: what every syntax structure, tool parameters included, checks its
elements against (the spec's constants table). A tool's own limits live in its folder."""

MAX_TENSORS = 256
MAX_NAME_BYTES = 255
MAX_DIM = 1 << 24
# Decoder memory guard: a stream may declare at most this many feature points in
# total; the decoder's peak memory is about 40 bytes per declared point.
MAX_DECODED_ELEMENTS = 1 << 27
MAX_UNIT_PAYLOAD_SIZE = (1 << 32) - 1
