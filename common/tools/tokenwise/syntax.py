"""Syntax of the token-wise tool: tokenwise_sq_params(), called from tensor_info() (common/
syntax_structures.py) and rendered into docs/bitstream.md from this file's text."""

QP_MIN, QP_MAX = -256, 511     # range of tsq_qp and of every token's step exponent e_t


def tokenwise_sq_params(rw, s):
    rw.se(s, "tsq_qp", lo=QP_MIN, hi=QP_MAX)
    rw.flag(s, "tsq_step_map_flag")
    rw.flag(s, "tsq_channel_offsets_flag")


SEMANTICS = {
    "tsq_qp": "Base step exponent of the tensor. The step of token t in channel c is "
              "Δ_t,c = 2^((e_t,c − 48) / 8) with e_t,c = tsq_qp + (step offset of t) + (step offset of c); "
              "+8 doubles the step.",
    "tsq_step_map_flag": "0: every token's step offset is 0. 1: a per-token step-offset map is coded in "
                         "the tensor's entropy payload, after the channel offsets.",
    "tsq_channel_offsets_flag": "0: every channel's step offset is 0. 1: a per-channel step-offset vector is "
                                "coded at the start of the tensor's entropy payload. Together with the token "
                                "map it makes a separable step map (token offset + channel offset).",
}
