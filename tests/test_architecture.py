"""The architecture as tests: read from the source by ast, without importing it.

docs/architecture.md draws the layers; these tests measure them. Each one
lists every offender (module, line, what and the rule), so that a failure
says what to move where. They read sessiond/ as text: a module that cannot
be imported is measured all the same.

  * the import graph has no circle;
  * layers: a module imports only its own rank or lower (RANKS); the cli
    stands apart and shares only CLI_SHARES; nobody imports the cli; the log
    keeper (a process of its own) imports nothing of sessiond;
  * sizes: modules up to MODULE_MAX lines, functions up to FUNCTION_MAX;
  * time: timers and tasks only through the daemon's clock (clock.py) and
    its TaskGroup (main.py); the shell reads no clock of its own;
  * event kinds and agent desired states are core enums, never strings.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "sessiond"

MODULE_MAX = 400  # lines of a module (STYLE.md 15)
FUNCTION_MAX = 40  # lines of a function or method, def to last line

# Rank by module name or package prefix: a module imports only its own rank or lower.
RANKS = {
    "sessiond.errors": 0,
    "sessiond.core": 1,
    "sessiond.config": 2,
    "sessiond.paths": 2,
    "sessiond.log": 2,
    "sessiond.terminal": 2,
    "sessiond.daemon": 3,
    "sessiond.wire": 4,
    "sessiond.main": 5,
    "sessiond.launch": 5,
    "sessiond.__main__": 5,
}
ANYONE = "sessiond"  # the package's __init__ (__version__): anybody may import it
CLI = "sessiond.cli"
CLI_SHARES = {"sessiond", "sessiond.errors", "sessiond.paths", "sessiond.terminal",
              "sessiond.core.settings", "sessiond.core.units"}  # fmt: skip
KEEPER = "sessiond.daemon.logkeeper"  # a separate stdlib-only process

TIMER_CALLS = {"call_later", "call_soon", "call_at", "create_task", "ensure_future"}
TIMER_HOMES = {"sessiond/daemon/clock.py", "sessiond/main.py", "sessiond/daemon/logkeeper.py"}
CLOCK_READS = {"time", "monotonic"}  # of the time module
CLOCK_HOMES = {"sessiond/daemon/clock.py", "sessiond/daemon/logkeeper.py",
               "sessiond/daemon/procs.py"}  # fmt: skip
SHELL = ("sessiond/daemon/", "sessiond/wire/")


# -- reading the tree ---------------------------------------------------------


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(SRC.rglob("*.py"))}


@cache
def tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def imports(name: str) -> Iterator[tuple[str, int]]:
    """Every sessiond module `name` imports, anywhere in it, with the line."""
    path = modules()[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree(path)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, *([base] if base else [])])
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                yield (sub if sub in modules() else base), node.lineno


@cache
def graph() -> dict[str, dict[str, int]]:
    """Module -> the sessiond modules it imports -> the first line that does."""
    edges: dict[str, dict[str, int]] = {}
    for name in modules():
        edges[name] = {}
        for target, line in imports(name):
            if (target == "sessiond" or target.startswith("sessiond.")) and target != name:
                edges[name].setdefault(target, line)
    return edges


def rank(name: str) -> int | None:
    for prefix, value in RANKS.items():
        if name == prefix or name.startswith(prefix + "."):
            return value
    return None


def in_cli(name: str) -> bool:
    return name == CLI or name.startswith(CLI + ".")


def functions(path: Path) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
    for node in ast.walk(tree(path)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node


def report(title: str, offenders: list[str]) -> str:
    """The failure message: the rule, then one offender a line, by file and line number."""
    ordered = sorted(offenders, key=lambda o: [int(p) if p.isdigit() else p
                                               for p in re.split(r"(\d+)", o)])  # fmt: skip
    return f"{title} ({len(offenders)}):\n  " + "\n  ".join(ordered)


# -- a. no import circle ------------------------------------------------------


def strongly_connected(edges: dict[str, dict[str, int]]) -> list[list[str]]:
    """Tarjan's components of the graph, each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in edges.get(node, {}):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component: list[str] = []
            while not component or component[-1] != node:
                component.append(stack.pop())
            found.append(sorted(component))

    for node in edges:
        if node not in index:
            visit(node)
    return found


def describe_circle(component: list[str]) -> str:
    edges = graph()
    inside = [f"{a} -> {b} (line {edges[a][b]})" for a in component for b in edges[a]
              if b in component]  # fmt: skip
    return f"{{{', '.join(component)}}}: " + "; ".join(inside)


def test_no_import_circle():
    circles = [c for c in strongly_connected(graph()) if len(c) > 1]
    assert not circles, report(
        "modules that import each other, directly or round a circle; break each with a "
        "callback or a Protocol, or merge them",
        [describe_circle(c) for c in circles],
    )


# -- b. layers ----------------------------------------------------------------


def layer_offence(importer: str, target: str) -> str | None:
    """Why `importer` may not import `target`, or None."""
    if importer == KEEPER:
        return "the log keeper is a stdlib-only process of its own: it imports nothing of sessiond"
    if in_cli(importer):
        if in_cli(target) or target in CLI_SHARES:
            return None
        return f"the cli shares only {', '.join(sorted(CLI_SHARES))}"
    if in_cli(target):
        return "nothing outside the cli imports it"
    if target == ANYONE:
        return None
    mine, theirs = rank(importer), rank(target)
    if mine is None:
        return f"{importer} has no rank: give it one in RANKS"
    if theirs is None:
        return f"{target} has no rank (or does not exist)"
    if theirs > mine:
        return f"rank {mine} imports rank {theirs}: arrows point down only"
    return None


def test_layers():
    edges = graph()
    offenders = [
        f"{importer}:{line} imports {target}: {why}"
        for importer in sorted(edges)
        for target, line in sorted(edges[importer].items())
        if (why := layer_offence(importer, target)) is not None
    ]
    offenders += [f"{name} has no rank: give it one in RANKS" for name in sorted(modules())
                  if rank(name) is None and name != ANYONE and not in_cli(name)]  # fmt: skip
    assert not offenders, report(
        "imports against the layers (errors 0 < core 1 < config, paths, log 2 < daemon 3 "
        "< wire 4 < main 5; cli apart)",
        offenders,
    )


def test_cli_loads_only_what_it_shares():
    """What the cli imports, it loads with all their imports: the closure stays small."""
    edges = graph()
    reached: dict[str, str] = {}  # module -> the module that pulled it in
    todo = [name for name in edges if in_cli(name)]
    while todo:
        name = todo.pop()
        for target in edges[name]:
            if target not in reached and not in_cli(target):
                reached[target] = name
                todo.append(target)
    offenders = [f"{target}, imported by {by}" for target, by in sorted(reached.items())
                 if target not in CLI_SHARES]  # fmt: skip
    assert not offenders, report(
        f"modules the cli loads beyond {', '.join(sorted(CLI_SHARES))}", offenders
    )


# -- c. sizes -----------------------------------------------------------------


def test_module_sizes():
    offenders = [
        f"{rel(path)}: {n} lines"
        for path in modules().values()
        if (n := len(path.read_text().splitlines())) > MODULE_MAX
    ]
    assert not offenders, report(f"modules over {MODULE_MAX} lines; split them", offenders)


def test_function_sizes():
    offenders = [
        f"{rel(path)}:{fn.lineno} {fn.name}: {n} lines"
        for path in modules().values()
        for fn in functions(path)
        if (n := (fn.end_lineno or fn.lineno) - fn.lineno + 1) > FUNCTION_MAX
    ]
    assert not offenders, report(f"functions over {FUNCTION_MAX} lines; split them", offenders)


# -- d. timers, tasks and clocks ---------------------------------------------


def called_name(node: ast.Call) -> str | None:
    if isinstance(node.func, ast.Attribute):
        return node.func.attr
    if isinstance(node.func, ast.Name):
        return node.func.id
    return None


def test_timers_and_tasks_go_through_the_clock():
    offenders = [
        f"{rel(path)}:{node.lineno} {name}()"
        for path in modules().values()
        if rel(path) not in TIMER_HOMES and not in_cli(module_name(path))
        for node in ast.walk(tree(path))
        if isinstance(node, ast.Call) and (name := called_name(node)) in TIMER_CALLS
    ]
    assert not offenders, report(
        "timers or tasks outside the clock and the TaskGroup: use clock.later/at/soon, "
        "or a task of main's TaskGroup handed in",
        offenders,
    )


def clock_reads(path: Path) -> Iterator[tuple[int, str]]:
    """time.time / time.monotonic, called or not, and `from time import` of them."""
    for node in ast.walk(tree(path)):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "time"
            and node.attr in CLOCK_READS
        ):
            yield node.lineno, f"time.{node.attr}"
        elif isinstance(node, ast.ImportFrom) and node.module == "time":
            for alias in node.names:
                if alias.name in CLOCK_READS:
                    yield node.lineno, f"from time import {alias.name}"


def test_the_shell_reads_time_from_its_clock():
    offenders = [
        f"{rel(path)}:{line} {what}"
        for path in modules().values()
        if rel(path).startswith(SHELL) and rel(path) not in CLOCK_HOMES
        for line, what in clock_reads(path)
    ]
    assert not offenders, report(
        "daemon or wire code reading the machine's clock: use the injected clock's "
        "monotonic() or wall()",
        offenders,
    )


# -- e. kinds and desired states are enums ------------------------------------


def enum_values(path: Path, cls: str) -> set[str]:
    for node in ast.walk(tree(path)):
        if isinstance(node, ast.ClassDef) and node.name == cls:
            return {
                stmt.value.value
                for stmt in node.body
                if isinstance(stmt, ast.Assign)
                and isinstance(stmt.value, ast.Constant)
                and isinstance(stmt.value.value, str)
            }
    raise AssertionError(f"no class {cls} in {rel(path)}")


def test_event_kinds_are_the_enum():
    kinds = enum_values(SRC / "core" / "events.py", "Kind")
    assert kinds, "no values read from Kind in sessiond/core/events.py"
    offenders = [
        f"{rel(path)}:{node.lineno} {node.value!r}"
        for path in modules().values()
        if rel(path).startswith(SHELL)
        for node in ast.walk(tree(path))
        if isinstance(node, ast.Constant) and node.value in kinds
    ]
    assert not offenders, report(
        "event kinds spelt as strings in the shell: use sessiond.core.events.Kind", offenders
    )


def is_desired(node: ast.AST) -> bool:
    return (isinstance(node, ast.Name) and node.id == "desired") or (
        isinstance(node, ast.Attribute) and node.attr == "desired"
    )


def desired_strings(path: Path, values: set[str]) -> Iterator[tuple[int, str]]:
    """A `desired` compared with, assigned or passed a string that is a Desired value."""
    for node in ast.walk(tree(path)):
        pairs: list[tuple[ast.AST, ast.AST]] = []
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            pairs = [(a, b) for a in sides for b in sides if a is not b]
        elif isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            pairs = [(t, node.value) for t in targets]
        elif isinstance(node, ast.keyword) and node.arg == "desired":
            pairs = [(ast.Name("desired"), node.value)]
        for target, value in pairs:
            if is_desired(target) and isinstance(value, ast.Constant) and value.value in values:
                yield getattr(value, "lineno", 0), repr(value.value)


def test_desired_states_are_the_enum():
    values = enum_values(SRC / "core" / "agent.py", "Desired")
    offenders = [
        f"{rel(path)}:{line} desired {what}"
        for path in modules().values()
        if rel(path).startswith(SHELL)
        for line, what in desired_strings(path, values)
    ]
    assert not offenders, report(
        "agent desired states spelt as strings in the shell: use sessiond.core.agent.Desired",
        offenders,
    )
