"""The house style is part of the test suite: ruff (lint + format) and mypy must be clean."""

from __future__ import annotations

import subprocess
import sys

from tests.support import REPO


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, timeout=300
    )


def test_ruff_lint() -> None:
    out = _run("ruff", "check", ".", "--output-format", "concise")
    assert out.returncode == 0, out.stdout + out.stderr


def test_ruff_format() -> None:
    out = _run("ruff", "format", "--check", ".")
    assert out.returncode == 0, out.stdout + out.stderr


def test_mypy() -> None:
    out = _run("mypy")
    assert out.returncode == 0, out.stdout + out.stderr
