"""Syntax of the token-wise tool: tokenwise_sq_params(), called from tensor_info() (common/
syntax_structures.py) and rendered into docs/bitstream.md from this file's text."""

QP_MIN, QP_MAX = -256, 511     # range of tsq_qp and of every token's step exponent e_t


def tokenwise_sq_params(rw, s):
    rw.se(s, "tsq_qp", lo=QP_MIN, hi=QP_MAX)
    rw.flag(s, "tsq_step_map_flag")


SEMANTICS = {
    "tsq_qp": "Base step exponent of the tensor. The step of token t is "
              "Δ_t = 2^((e_t − 48) / 8) with e_t = tsq_qp + (step offset of t); +8 doubles the step.",
    "tsq_step_map_flag": "0: every token uses e_t = tsq_qp. 1: a per-token step-offset map is coded at "
                         "the start of the tensor's entropy payload.",
}
