"""./dev on a fresh clone: it installs once, and again only when what goes into the wheel changed.

One scratch clone for the module: the committed tree (`git archive HEAD`) with
the working tree's ./dev and pyproject.toml over it, and a .venv of its own
that the first test creates (from the package index pip is configured with,
as a user's first `./dev run` does). The tests run in file order on it.
`./dev run --version` stands for `./dev run`: the same setup, then sessiond
prints its version and exits instead of serving.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# A first run creates the venv and installs every dependency: allow for a slow index.
pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs git and a git checkout (the clone is made with git archive)")
    dest = tmp_path_factory.mktemp("clone")
    tree = subprocess.run(["git", "archive", "HEAD"], cwd=ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=tree.stdout, check=True)
    for name in ("dev", "pyproject.toml"):
        shutil.copy2(ROOT / name, dest / name)
    yield dest
    shutil.rmtree(dest, ignore_errors=True)


def dev(clone: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    t0 = time.monotonic()
    done = subprocess.run(["./dev", *args], cwd=clone, capture_output=True, text=True, timeout=540)
    elapsed = time.monotonic() - t0
    assert done.returncode == 0, f"./dev {' '.join(args)} exited {done.returncode}:\n{done.stderr}"
    return done, elapsed


def installed_at(clone: Path) -> int:
    """When pip last wrote the installed package (it rewrites every file when it installs)."""
    (init,) = clone.glob(".venv/lib/python3*/site-packages/sessiond/__init__.py")
    return init.stat().st_mtime_ns


def test_the_first_run_installs_without_a_deprecation_warning(clone):
    done, _ = dev(clone, "run", "--version")
    assert done.stdout.startswith("sessiond ")
    # The build backend's warnings (setuptools' on a license table, say), not pip's own
    # about this machine's index configuration.
    assert "Warning" not in done.stderr and "deprecated" not in done.stderr, done.stderr


def test_a_second_run_skips_the_install_unless_a_source_changed(clone):
    before = installed_at(clone)
    done, elapsed = dev(clone, "run", "--version")
    assert done.stdout.startswith("sessiond ")
    assert installed_at(clone) == before, "reinstalled with nothing changed"
    assert done.stderr == ""
    assert elapsed < 2.0
    # And a source changed is installed again.
    paths = clone / "sessiond" / "paths.py"
    paths.write_text(paths.read_text() + "# changed by tests/test_dev.py\n")
    dev(clone, "run", "--version")
    assert installed_at(clone) != before
    (copy,) = clone.glob(".venv/lib/python3*/site-packages/sessiond/paths.py")
    assert copy.read_text().endswith("# changed by tests/test_dev.py\n")


def test_test_installs_the_test_extra_once_and_then_run_and_test_skip_it(clone):
    before = installed_at(clone)
    dev(clone, "test", "--co", "-q", "tests/test_paths.py")  # the test extra: pytest & co
    assert installed_at(clone) != before
    after = installed_at(clone)
    done, _ = dev(clone, "test", "--co", "-q", "tests/test_paths.py")
    assert "collected" in done.stdout
    assert installed_at(clone) == after
    done, elapsed = dev(clone, "run", "--version")  # an install with the extra serves run
    assert installed_at(clone) == after
    assert (done.stderr, elapsed < 2.0) == ("", True)
