"""A pytest plugin that runs the collected tests in reverse order: `pytest -p tests.reverse_order tests/test_x.py`.

A test that passes only after another (data a module-scoped fixture's earlier test wrote, a cache it warmed) fails
here; run alone, a test must pass too."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    items.reverse()
