"""Shared pytest configuration: hypothesis profiles and small fixtures."""

import os

import pytest
from hypothesis import HealthCheck, settings

# Small, fast examples by default; `HYPOTHESIS_PROFILE=thorough pytest` digs deeper.
settings.register_profile("default", max_examples=40, deadline=None, database=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=500, deadline=None, database=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(scope="session")
def streams():
    """The three small valid streams most tests start from (see tests/helpers.py)."""
    from tests.helpers import reference_streams
    return reference_streams()
