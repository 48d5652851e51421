"""The coding tools' common parts, one sub-package per tool (its syntax parameters and
decoder-side arithmetic); their encoder parts live in encoder/tools/ (see README.md)."""
