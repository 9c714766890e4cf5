"""The skip guard (``tests/skip_guard.py``) is structural: under ``LIGHTNING_EXPLAIN_REQUIRE_ALL=1`` any skip fails the
session, however it was written, while ``-m`` deselection does not; ``xfail_strict`` is on for the suite."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomllib
from skip_guard import REQUIRE_ALL_ENV

ROOT = Path(__file__).resolve().parents[1]

PASSING = "def test_runs():\n    assert True\n"

#: Each way a test can leave its assertions unchecked, none of them through conftest.skip_or_fail.
UNCHECKED = {
    "from_pytest_import_skip": "from pytest import skip\n\ndef test_skipped():\n    skip('no reason')\n",
    "unittest_skiptest": "import unittest\n\ndef test_skipped():\n    raise unittest.SkipTest('no reason')\n",
    "skip_marker": "import pytest\n\n@pytest.mark.skip(reason='no reason')\ndef test_skipped():\n    pass\n",
    "module_level_skip": "import pytest\n\npytest.skip('no reason', allow_module_level=True)\n",
    "importorskip": "import pytest\n\npytest.importorskip('no_such_module_for_lightning_explain')\n",
    "non_strict_xfail_that_passes": (
        "import pytest\n\n@pytest.mark.xfail(strict=False, reason='x')\ndef test_xpass():\n    pass\n"
    ),
}


@pytest.fixture
def inner(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.delenv(REQUIRE_ALL_ENV, raising=False)
    monkeypatch.delenv("CI", raising=False)
    return pytester


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_inprocess("-p", "no:cacheprovider", "-p", "skip_guard", *args)


@pytest.mark.parametrize("kind", sorted(UNCHECKED))
def test_any_skip_fails_the_session_only_under_require_all(inner, monkeypatch, kind):
    inner.makepyfile(test_other=PASSING, test_inner=UNCHECKED[kind])
    local = _run(inner)
    assert local.ret == pytest.ExitCode.OK, local.stdout.str()
    monkeypatch.setenv(REQUIRE_ALL_ENV, "1")
    required = _run(inner)
    assert required.ret == pytest.ExitCode.TESTS_FAILED, required.stdout.str()
    required.stdout.fnmatch_lines([f"FAILED: 1 * under {REQUIRE_ALL_ENV}=1*"])


def test_ci_true_counts_as_require_all(inner, monkeypatch):
    inner.makepyfile(test_inner=UNCHECKED["skip_marker"])
    monkeypatch.setenv("CI", "true")
    assert _run(inner).ret == pytest.ExitCode.TESTS_FAILED


def test_deselecting_slow_tests_is_not_a_skip(inner, monkeypatch):
    inner.makeini("[pytest]\nmarkers =\n    slow: long\n")
    inner.makepyfile(test_inner=PASSING + "\nimport pytest\n\n@pytest.mark.slow\ndef test_slow():\n    pass\n")
    monkeypatch.setenv(REQUIRE_ALL_ENV, "1")
    result = _run(inner, "-m", "not slow")
    result.assert_outcomes(passed=1, deselected=1)
    assert result.ret == pytest.ExitCode.OK


def test_a_run_without_skips_passes_under_require_all(inner, monkeypatch):
    inner.makepyfile(test_inner=PASSING)
    monkeypatch.setenv(REQUIRE_ALL_ENV, "1")
    assert _run(inner).ret == pytest.ExitCode.OK


def test_xfail_is_strict_for_the_suite(inner):
    options = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert options["xfail_strict"] is True
    inner.makepyfile(test_inner="import pytest\n\n@pytest.mark.xfail(reason='fixed')\ndef test_fixed():\n    pass\n")
    result = _run(inner, "-o", "xfail_strict=true")
    result.assert_outcomes(failed=1)


def test_make_test_deselects_nothing():
    # ``make test`` runs every test, slow ones included: a skip there is never a deselection in disguise.
    makefile = (ROOT / "Makefile").read_text()
    (line,) = [x for x in makefile.splitlines() if "-m pytest" in x and x.startswith("\t")][:1]
    assert " -m " not in line.split("pytest", 1)[1] and "-k" not in line
