"""The compiled token-wise level coder (common/tools/tokenwise/kernel.c), built by pip beside
its package; optional, so an install without a C compiler goes on and the numpy reference
codes everything. The rest of the project's metadata is in pyproject.toml."""

from setuptools import Extension, setup

setup(ext_modules=[Extension(
    "common.tools.tokenwise._kernel",
    sources=["common/tools/tokenwise/kernel.c", "common/tools/tokenwise/kernel_module.c"],
    # IEEE double arithmetic as written (no fused multiply-add): the categorical model's
    # quantile starts are specified in it.
    extra_compile_args=["-O2", "-std=c99", "-ffp-contract=off"], libraries=["m"], optional=True)])
