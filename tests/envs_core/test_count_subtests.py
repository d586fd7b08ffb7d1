"""count_tests on real pytest output whose summary reports subtests ("1 passed, 3 subtests
passed"): the tests counted are the test functions pytest itself collects, not None and not
the subtests inside them."""

from __future__ import annotations

import subprocess
import sys

from jaxrepair.envs.reward import count_tests

TESTS = """import unittest


def test_loop(subtests):
    for i in range(3):
        with subtests.test(i=i):
            assert i < 3


def test_plain():
    assert True


class Case(unittest.TestCase):
    def test_sub(self):
        for i in range(2):
            with self.subTest(i=i):
                self.assertTrue(i < 2)
"""


def _pytest(tmp_path, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return proc.stdout + proc.stderr


def test_a_summary_with_subtests_counts_the_tests_pytest_collected(tmp_path):
    (tmp_path / "test_subtests.py").write_text(TESTS)
    out = _pytest(tmp_path, "test_subtests.py")
    assert "subtests passed" in out.splitlines()[-1]  # the summary this is about
    collected = [
        ln
        for ln in _pytest(tmp_path, "--collect-only", "test_subtests.py").splitlines()
        if "::" in ln
    ]
    assert len(collected) == 3
    assert count_tests(out) == len(collected)
