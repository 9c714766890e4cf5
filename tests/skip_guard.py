"""A pytest plugin that fails the session when any test was skipped under ``LIGHTNING_EXPLAIN_REQUIRE_ALL=1`` (or
``CI=true``), whatever skipped it: ``pytest.skip``, ``from pytest import skip``, ``unittest.SkipTest``,
``mark.skip(if)``, ``importorskip``, or a non-strict ``xfail`` that passed.

Structural, not a pattern over the sources: it counts the outcomes pytest reports. Tests deselected with ``-m``
(``-m "not slow"``) are not skips and do not count. ``tests/conftest.py`` loads it; ``xfail_strict = true`` in
``pyproject.toml`` makes an ``xfail`` that passes a failure anyway.

It holds no assertions (PYTEST_DONT_REWRITE): conftest imports it before pytest loads it as a plugin.
"""

from __future__ import annotations

import os

import pytest

#: Set (to anything but "" or "0") by ``.ci/run``: a missing test dependency or browser fails instead of skipping.
REQUIRE_ALL_ENV = "LIGHTNING_EXPLAIN_REQUIRE_ALL"

#: The outcomes that leave a test's assertions unchecked.
UNCHECKED = ("skipped", "xpassed")


def require_all() -> bool:
    """Whether every optional test dependency must be there: under ``LIGHTNING_EXPLAIN_REQUIRE_ALL=1`` (set by
    ``.ci/run``) or ``CI=true`` (set by CI services)."""
    return os.environ.get(REQUIRE_ALL_ENV, "") not in ("", "0") or os.environ.get("CI", "").lower() == "true"


def _unchecked(reporter: object) -> dict[str, int]:
    """``{outcome: count}`` of the :data:`UNCHECKED` outcomes the terminal reporter saw (collection skips too)."""
    stats: dict[str, list[object]] = getattr(reporter, "stats", {})
    return {outcome: len(stats[outcome]) for outcome in UNCHECKED if stats.get(outcome)}


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if require_all() and exitstatus == pytest.ExitCode.OK and _unchecked(reporter):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int) -> None:
    counts = _unchecked(terminalreporter) if require_all() else {}
    if counts:
        what = ", ".join(f"{n} {outcome}" for outcome, n in counts.items())
        terminalreporter.write_line(
            f"FAILED: {what} under {REQUIRE_ALL_ENV}=1 or CI=true: every test must run here (install what is "
            "missing; a skip through conftest.skip_or_fail fails here with its reason)",
            red=True,
            bold=True,
        )
