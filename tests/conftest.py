"""Shared test set-up: pytester runs get the same asyncio settings as this suite."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _pytester_ini(request: pytest.FixtureRequest) -> None:
    """Give every pytester run an ini so pytest-asyncio's scope warning stays out of its output."""
    if "pytester" in request.fixturenames:
        pytester: pytest.Pytester = request.getfixturevalue("pytester")
        pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
