"""The code is ruff-clean (the rules in pyproject.toml), checked by the README's test
command so CI runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_finds_nothing():
    pytest.importorskip("ruff", reason="ruff comes with the test extra")
    found = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache",
                            "cmkd_doctor", "tests", "benchmarks"],
                           cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert found.returncode == 0, found.stdout[-4000:] + found.stderr[-2000:]
