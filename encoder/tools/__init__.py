"""The coding tools' encoder parts, one sub-package per tool (analysis, decisions, networks,
and the coder encoder/encoder.py's TENSOR_CODERS names); see README.md."""
