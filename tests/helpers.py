"""Small helpers shared by the test suites."""

from __future__ import annotations

import os

import pytest

E2E_REQUIRED_ENV = "HARDWAY_E2E_REQUIRED"
E2E_TIMEOUT = 2400  # seconds per e2e test that may build the mirror or bring clusters up


def require(condition: bool, reason: str) -> None:
    """Skip the test unless `condition` holds; with HARDWAY_E2E_REQUIRED=1, fail instead.

    Integration tests need real programs (etcd, openssl) that a developer's machine may lack;
    CI sets HARDWAY_E2E_REQUIRED=1 so that a missing prerequisite cannot pass as a skip.
    """
    if condition:
        return
    if os.environ.get(E2E_REQUIRED_ENV) == "1":
        pytest.fail(f"{reason} (required: {E2E_REQUIRED_ENV}=1)", pytrace=False)
    pytest.skip(reason)
