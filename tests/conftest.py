"""Shared pytest set-up: the ``root`` marker skips cleanly where Mininet cannot run."""

from __future__ import annotations

import os
import shutil

import pytest


def _root_missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root (sudo make test)"
    if shutil.which("mn") is None or shutil.which("ovs-vsctl") is None:
        return "Mininet / Open vSwitch missing (sudo make setup)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = _root_missing()
    if reason is None:
        return
    skip = pytest.mark.skip(reason=reason)
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)
