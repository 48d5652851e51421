"""The compiled token-wise level coder (common/tools/tokenwise/kernel.c), built by pip beside
its package; optional, so an install without a C compiler goes on and the numpy reference
codes everything. The rest of the project's metadata is in pyproject.toml."""

import hashlib
from pathlib import Path

from setuptools import Extension, setup

KERNEL = "common/tools/tokenwise/kernel.c"
# The build records which kernel.c it compiled; kernel.py uses a library only while they match.
SOURCE_DIGEST = hashlib.sha256((Path(__file__).parent / KERNEL).read_bytes()).hexdigest()[:16]

setup(ext_modules=[Extension(
    "common.tools.tokenwise._kernel", sources=[KERNEL, "common/tools/tokenwise/kernel_module.c"],
    define_macros=[("TW_SOURCE_DIGEST", f'"{SOURCE_DIGEST}"')],
    # IEEE double arithmetic as written (no fused multiply-add): the categorical model's
    # quantile starts are specified in it.
    extra_compile_args=["-O2", "-std=c99", "-ffp-contract=off"], libraries=["m"], optional=True)])
