"""Shell completion for sessionc: `sessionc completion bash|zsh` and `__complete KIND`.

Theory of operation. The scripts are generated from sessionc's own tables,
commands.COMMANDS and commands.GLOBAL_OPTIONS, so a command or an option added there
completes without a change here. `params()` reads one command's argparse specs
into `Param`s: its flags, whether it takes a value, its choices, and what
completes that value (a `Source`). What the table cannot say (that `--template`
names a template, that `agent ACTION NAME` names an agent or `all`) is said once, in
SOURCES. From the params, `bash_script()` writes tables (bash associative
arrays) read by one generic function, and `zsh_script()` writes one
`_arguments` call per command, which gives zsh users each option's help too;
the shell code around them is in shell_templates.py.

Names that only the daemon knows are asked for at TAB time, through the hidden
command `sessionc [--socket PATH] __complete KIND`, which prints one name a
line, and nothing, with status 0, when the daemon is down, slow (HELPER_TIMEOUT)
or refuses. The scripts pass on a `--socket` given earlier on the line, and run
the sessionc that is being completed (`~/bin/sessionc st<TAB>` asks that one).

Templates are the configured ones, which `session.status` lists in its `daemon`
object; sessions are the recent ones of `session.history`, and the live session
is the one `session.status` names: `stop`, `join`, `pause` and `resume` act on
it alone, so it is all they offer.

This module is imported only by these two commands, never by `sessionc status`.
"""

from __future__ import annotations

import enum

from sessiond.cli.shell_templates import BASH, ZSH

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import Any

    from sessiond.cli.client import Client
    from sessiond.cli.commands import ArgSpec, Command

HELPER = "__complete"
HELPER_TIMEOUT = 1.0  # seconds a TAB may wait for the daemon
HISTORY_LIMIT = 200  # past sessions searched for session names
FLAG_ACTIONS = {"store_true", "store_false", "store_const", "count", "help", "version"}
HELP_FLAGS = ("-h", "--help")


class Source(enum.Enum):
    """What completes an argument's value besides its choices."""

    NOTHING = ""
    FILES = "files"
    COMMAND_LINE = "commands"  # a command, then its arguments (files)
    TEMPLATES = "templates"  # from the daemon, like the three below
    AGENTS = "agents"
    AGENT_OR_ALL = "agents-or-all"  # `agent ACTION all` acts on every agent
    LABELS = "labels"  # the live session's agents'
    SESSIONS = "sessions"
    LIVE = "live"  # the live session's name


ASKED = (Source.TEMPLATES, Source.AGENTS, Source.AGENT_OR_ALL, Source.LABELS, Source.SESSIONS,
         Source.LIVE)  # fmt: skip
# What zsh shows above the names asked for
ASKED_WHAT = {Source.TEMPLATES: "template", Source.AGENTS: "agent",
              Source.AGENT_OR_ALL: "agent, or all", Source.LABELS: "label",
              Source.SESSIONS: "session", Source.LIVE: "live session"}  # fmt: skip
# (command, dest) → Source; command "*" for a global option. A positional `name`
# of any other command names the live session (sessionc(1): "Where a command takes
# [NAME], it acts on the live session").
SOURCES = {
    ("*", "socket"): Source.FILES,
    ("start", "name"): Source.SESSIONS,  # a new one; a closed session's name may be reused
    ("start", "template"): Source.TEMPLATES,
    ("start", "from_"): Source.SESSIONS,
    ("health", "name"): Source.SESSIONS,
    ("show", "name"): Source.SESSIONS,
    ("export", "name"): Source.SESSIONS,
    ("agent", "name"): Source.AGENT_OR_ALL,
    ("agent", "label"): Source.LABELS,
    ("logs", "agents"): Source.AGENTS,
    ("logs", "agent"): Source.AGENTS,
    ("logs", "label"): Source.LABELS,
    ("run", "cmdline"): Source.COMMAND_LINE,
    ("export", "output"): Source.FILES,
    ("report", "checkpoint"): Source.FILES,
}


class Param:
    """One argument of a command as the completion scripts see it."""

    __slots__ = ("choices", "dest", "flags", "help", "metavar", "nargs", "repeats", "source",
                 "switch")  # fmt: skip

    def __init__(self, command: str, flags: tuple[str, ...], options: dict[str, Any]) -> None:
        self.flags = flags if flags[0].startswith("-") else ()
        self.dest: str = options.get("dest") or flags[0].lstrip("-").replace("-", "_")
        self.help: str = options.get("help") or ""
        self.metavar: str = options.get("metavar") or self.dest
        self.choices: list[str] = list(options.get("choices") or [])
        self.nargs = options.get("nargs")
        self.switch = options.get("action") in FLAG_ACTIONS  # --json: never a value
        self.repeats = options.get("action") == "append" or self.nargs in ("*", "+")
        found = SOURCES.get((command, self.dest)) or SOURCES.get(("*", self.dest))
        if found is None and not self.flags and self.dest == "name":
            found = Source.LIVE
        self.source = found or Source.NOTHING

    @property
    def takes_value(self) -> bool:
        """An option that needs the next word (or `=value`), or a positional."""
        return not self.flags or not (self.switch or self.nargs == "?")


def params(command: str, specs: Iterable[ArgSpec]) -> list[Param]:
    return [Param(command, flags, options) for flags, options in specs]


def visible(commands: dict[str, Command]) -> dict[str, Command]:
    """The commands that `sessionc --help` lists: not the hidden helper."""
    return {name: command for name, command in commands.items() if command.help}


# ---------------------------------------------------------------- the helper


def _unique(items: Any, key: str) -> list[str]:
    """The distinct string `key`s of the dicts in `items`, in order."""
    found = (i.get(key) for i in items if isinstance(i, dict)) if isinstance(items, list) else ()
    return list(dict.fromkeys(name for name in found if isinstance(name, str) and name))


def _labels(agents: Any) -> list[str]:
    """The distinct labels of `agents`, in order; an odd reply raises, and names() offers none."""
    return list(dict.fromkeys(str(label) for agent in agents for label in agent["labels"]))


ASK: dict[str, Callable[[Client], list[str]]] = {
    Source.AGENTS.value: lambda client: _unique(client.call("agent.list"), "name"),
    Source.AGENT_OR_ALL.value: lambda client: ["all", *_unique(client.call("agent.list"), "name")],
    Source.LABELS.value: lambda client: _labels(client.call("agent.list")),
    Source.SESSIONS.value: lambda client: _unique(
        client.call("session.history", {"limit": HISTORY_LIMIT}), "name"
    ),
    Source.LIVE.value: lambda client: _unique(
        [client.call("session.status").get("session")], "name"
    ),
    Source.TEMPLATES.value: lambda client: [
        str(name) for name in client.call("session.status")["daemon"].get("templates", [])
    ],
}


def names(client: Client, kind: str) -> list[str]:
    """`sessionc __complete KIND`: names of KIND; none when the daemon cannot tell.

    Only well-formed names are passed on: bash's `compgen -W` expands what it
    is given, and a socket that is not sessiond's could answer `$(rm …)`.
    """
    from sessiond.core.units import NAME_RE  # noqa: PLC0415 -- the one heavy import, for a TAB

    client.timeout = HELPER_TIMEOUT
    try:
        found = ASK[kind](client)
    except Exception:  # noqa: BLE001 -- down, slow, refusing or odd: a TAB offers nothing, quietly
        return []
    return [name for name in found if NAME_RE.fullmatch(name)]


def script(shell: str, commands: dict[str, Command], global_options: Iterable[ArgSpec]) -> str:
    """`sessionc completion SHELL`: the script to source."""
    make = {"bash": bash_script, "zsh": zsh_script}[shell]
    return make(visible(commands), params("*", global_options))


# ---------------------------------------------------------------- bash


def sh_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def option_words(ps: Iterable[Param]) -> list[str]:
    return [flag for p in ps for flag in p.flags]


def bash_value(p: Param) -> str:
    """A value of _sessionc_values: its choices, or @SOURCE; '' for nothing to offer."""
    if p.choices:
        return " ".join(p.choices)
    return f"@{p.source.value}" if p.source is not Source.NOTHING else ""


def bash_values(name: str, ps: list[Param]) -> list[tuple[str, str]]:
    """("COMMAND OPTION" or "COMMAND N", value) for each option with a value and argument."""
    rows = [(f"{name} {flag}".lstrip("* "), bash_value(p))
            for p in ps if p.flags and p.takes_value for flag in p.flags]  # fmt: skip
    positionals = [p for p in ps if not p.flags]
    for n, p in enumerate(positionals, start=1):
        rows.append((f"{name} {n}", bash_value(p)))
        if p.repeats:
            rest = "@files" if p.source is Source.COMMAND_LINE else bash_value(p)
            rows.append((f"{name} *", rest))
    return rows


def bash_script(commands: dict[str, Command], global_params: list[Param]) -> str:
    top = [*option_words(global_params), "--version", *HELP_FLAGS]
    options, values = [], bash_values("*", global_params)
    for name, command in commands.items():
        ps = params(name, command.args)
        words = [*option_words(ps), *option_words(global_params), *HELP_FLAGS]
        options.append(f"    [{sh_quote(name)}]={sh_quote(' '.join(words))}")
        values += bash_values(name, ps)
    value_lines = [f"    [{sh_quote(key)}]={sh_quote(value)}" for key, value in values]
    return BASH.format(
        commands=sh_quote(" ".join(commands)),
        top=sh_quote(" ".join(top)),
        options="\n".join(options),
        values="\n".join(value_lines),
        helper=HELPER,
    )


# ---------------------------------------------------------------- zsh


def zsh_escape(text: str, chars: str) -> str:
    for char in "\\" + chars:
        text = text.replace(char, "\\" + char)
    return text


def zsh_action(p: Param) -> str:
    if p.choices:
        return "(" + " ".join(zsh_escape(c, " ()") for c in p.choices) + ")"
    return {
        Source.NOTHING: "",
        Source.FILES: "_files",
        Source.COMMAND_LINE: "_sessionc_command_line",
    }.get(p.source, f"_sessionc_names {p.source.value}")


def zsh_argument(p: Param) -> str:
    """The ':message:action' part: what the value is and what completes it."""
    message = ASKED_WHAT.get(p.source, p.metavar)
    return f":{zsh_escape(message, ':')}:{zsh_action(p)}"


def zsh_specs(p: Param) -> list[str]:
    """The _arguments specs of one argument, unquoted."""
    if not p.flags:
        if p.source is Source.COMMAND_LINE:
            return [f"*::command line:{zsh_action(p)}"]
        return [{"?": ":", "*": "*", "+": "*"}.get(p.nargs or "", "") + zsh_argument(p)]
    excluded = f"({' '.join(p.flags)})" if len(p.flags) > 1 and not p.repeats else ""
    described = f"[{zsh_escape(p.help, '[]')}]" if p.help else ""
    specs = []
    for flag in p.flags:
        form, argument = "", ""
        if p.takes_value:
            form, argument = ("=" if flag.startswith("--") else "+"), zsh_argument(p)
        elif not p.switch:  # --wait, or --wait=D
            form, argument = "=-", ":" + zsh_argument(p)
        specs.append(f"{'*' if p.repeats else ''}{excluded}{flag}{form}{described}{argument}")
    return specs


def zsh_words(specs: Iterable[str], indent: str) -> str:
    return "".join(f" \\\n{indent}{sh_quote(spec)}" for spec in specs)


def zsh_script(commands: dict[str, Command], global_params: list[Param]) -> str:
    cases = []
    for name, command in commands.items():
        specs = [spec for p in params(name, command.args) for spec in zsh_specs(p)]
        cases.append(f"    ({name})\n      _arguments -S : $global{zsh_words(specs, '        ')}")
    described = (f"{zsh_escape(name, ':')}:{command.help}" for name, command in commands.items())
    return ZSH.format(
        commands=zsh_words(described, "    "),
        global_specs=zsh_words((s for p in global_params for s in zsh_specs(p)), "    "),
        cases=" ;;\n".join(cases),
        helper=HELPER,
    )
