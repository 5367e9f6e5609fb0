"""The core is pure: importing any of its modules loads no I/O machinery (issue 11)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sessiond.core.agent import AgentState
from sessiond.core.events import Kind
from sessiond.core.session import State

CORE = sorted(p.stem for p in (Path(__file__).parent.parent / "sessiond" / "core").glob("*.py")
              if p.stem != "__init__")  # fmt: skip
FORBIDDEN = {"asyncio", "sqlite3", "subprocess", "socket", "selectors", "psutil", "pyroute2"}


@pytest.mark.parametrize("module", CORE)
def test_a_core_module_loads_no_io(module):
    probe = f"import json, sys; import sessiond.core.{module}; print(json.dumps(list(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True, cwd=Path(__file__).parent.parent)  # fmt: skip
    loaded = set(json.loads(done.stdout))
    assert not loaded & FORBIDDEN, f"sessiond.core.{module} loads {sorted(loaded & FORBIDDEN)}"


def test_the_core_holds_the_pure_modules():
    assert {"session", "agent", "policy", "health", "revive", "records"} <= set(CORE)


def test_every_state_has_its_event_kind():
    assert {Kind.of_session(s) for s in State} <= set(Kind)
    assert {Kind.of_agent(s) for s in AgentState} <= set(Kind)
    assert all(k.value.split(".")[0] in ("session", "agent", "network") for k in Kind)
