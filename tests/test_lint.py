"""Linters as tests: the tree stays formatted, lint-free and type-checked."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    found = shutil.which(name, path=str(BIN))
    if found is None:
        pytest.skip(f"{name} is not installed (pip install '.[test]')")
    return found


@pytest.mark.parametrize(
    "command",
    [
        ["ruff", "check", "sessiond", "tests", "bench"],
        ["ruff", "format", "--check", "sessiond", "tests", "bench"],
        ["mypy", "sessiond"],
    ],
    ids=["ruff-check", "ruff-format", "mypy"],
)
def test_linter(command):
    done = subprocess.run([tool(command[0]), *command[1:]], cwd=ROOT, capture_output=True,
                          text=True)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
