"""The suite's one way to skip: ``skip_or_fail`` / ``require_module`` skip locally but fail under CI, where
``.ci/run`` exports ``LIGHTNING_EXPLAIN_REQUIRE_ALL=1`` (and CI services set ``CI=true``)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
from conftest import REQUIRE_ALL_ENV, require_module, skip_or_fail

ROOT = Path(__file__).resolve().parents[1]
MISSING = "no_such_module_for_lightning_explain_tests"


@pytest.fixture
def local(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Neither variable set: a developer's machine."""
    monkeypatch.delenv(REQUIRE_ALL_ENV, raising=False)
    monkeypatch.delenv("CI", raising=False)
    return monkeypatch


def test_require_module_returns_an_installed_module(local):
    assert require_module("math") is math


def test_a_missing_module_skips_locally(local):
    with pytest.raises(pytest.skip.Exception, match=MISSING):
        require_module(MISSING)


@pytest.mark.parametrize(("name", "value"), [(REQUIRE_ALL_ENV, "1"), ("CI", "true"), ("CI", "TRUE")])
def test_a_missing_module_fails_instead_of_skipping_in_ci(local, name, value):
    local.setenv(name, value)
    with pytest.raises(pytest.fail.Exception, match=MISSING):
        require_module(MISSING)
    with pytest.raises(pytest.fail.Exception, match="no browser"):
        skip_or_fail("no browser")


@pytest.mark.parametrize("value", ["", "0"])
def test_the_variable_set_to_empty_or_zero_still_skips(local, value):
    local.setenv(REQUIRE_ALL_ENV, value)
    with pytest.raises(pytest.skip.Exception):
        skip_or_fail("no browser")


INNER = f"""
from conftest import require_module

require_module({MISSING!r})


def test_never_runs():
    pass
"""


def test_a_module_level_requirement_fails_the_whole_run_in_ci(local, pytester):
    pytester.makepyfile(test_inner=INNER)
    skipped = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    skipped.assert_outcomes(skipped=1)
    assert skipped.ret not in (pytest.ExitCode.TESTS_FAILED, pytest.ExitCode.INTERRUPTED)
    local.setenv(REQUIRE_ALL_ENV, "1")
    failed = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    failed.assert_outcomes(errors=1)
    assert failed.ret in (pytest.ExitCode.TESTS_FAILED, pytest.ExitCode.INTERRUPTED)
    failed.stdout.fnmatch_lines([f"*{MISSING}*"])


def test_no_test_file_skips_other_than_through_the_helpers():
    # Every skip goes through conftest's skip_or_fail, so that CI turns it into a failure.
    pattern = re.compile(r"pytest\.(importorskip|skip)\(|mark\.skip(if)?\b")
    offenders = [
        f"{path.name}:{n}"
        for path in sorted(Path(__file__).parent.rglob("*.py"))
        if path.name not in ("conftest.py", Path(__file__).name, "skip_guard.py", "test_skip_guard.py")
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert offenders == []


def test_ci_script_requires_every_test_dependency():
    assert re.search(rf"^export {REQUIRE_ALL_ENV}=1$", (ROOT / ".ci" / "run").read_text(), re.MULTILINE)
