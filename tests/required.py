"""Tests that need a tool from outside Python (Chromium, actionlint): skip with a reason, or fail.

On a developer's machine without the tool such a test is skipped with one line saying how to install
it. ``.ci/run`` sets ``LEAKLIB_REQUIRE_TOOLS=1`` (and installs the tools), which turns the skip into a
failure: in CI these tests always run.
"""

from __future__ import annotations

import os

import pytest

REQUIRE_ENV = "LEAKLIB_REQUIRE_TOOLS"


def tools_required() -> bool:
    """True where ``$LEAKLIB_REQUIRE_TOOLS`` is set to anything but empty or ``0``."""
    return os.environ.get(REQUIRE_ENV, "").strip() not in ("", "0")


def missing_tool(reason: str) -> None:
    """Skip the running test with ``reason``, or fail it when the tools are required."""
    if tools_required():
        pytest.fail(f"{reason} ({REQUIRE_ENV} is set, so this test may not be skipped)", pytrace=False)
    pytest.skip(reason)
