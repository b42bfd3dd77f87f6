"""The project's lint, as detectron2 does it: black and isort formatting, flake8 (100 columns)."""

import subprocess
import sys

import pytest

from .conftest import ROOT

CHECKS = {
    "flake8": ["-m", "flake8", "."],
    "black": ["-m", "black", "--check", "--quiet", "."],
    "isort": ["-m", "isort", "--check-only", "--quiet", "."],
}


@pytest.mark.parametrize("tool", list(CHECKS))
def test_lint(tool):
    proc = subprocess.run(
        [sys.executable, *CHECKS[tool]], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert (
        proc.returncode == 0
    ), f"{tool} (fix with: black . && isort .):\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
