"""The manual pages: well-formed roff, and in step with the code they describe.

Each page states at its top the convention that makes it readable here:
sessionc(1) has one `.SS` per command under COMMANDS, with the command's
arguments and options as `.TP` entries; sessiond(8) has its options as `.TP`
entries of OPTIONS; sessiond.toml(5) has one `.SS` per TOML table, named as
its header, with a `.TP` entry per key whose tag reads "KEY = TYPE (default
LITERAL)". `read_page` turns a page into sections → parts → entries of plain
text, and the tests hold those against argparse, the settings tables, the
exit codes and the environment variables the code reads.
"""

from __future__ import annotations

import argparse
import inspect
import os
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import MISSING, dataclass, field
from pathlib import Path

import pytest

from sessiond import config, errors, paths
from sessiond.cli import main as cli
from sessiond.core import settings

REPO = Path(__file__).resolve().parents[1]
MAN = REPO / "man"
PAGES = ["sessionc.1", "sessiond.8", "sessiond.toml.5"]

# --- reading roff -----------------------------------------------------------

_ESCAPES = {  # to plain ASCII: the tests compare words, not typography
    r"\-": "-", r"\(dq": '"', r"\(aq": "'", r"\(em": "--", r"\(mu": "x", r"\(lq": '"',
    r"\(rq": '"', r"\(bu": "*", r"\e": "\\", r"\ ": " ", r"\&": "", r"\|": "", r"\%": "",
}  # fmt: skip
_ESCAPE = re.compile(r"\\f(?:\[[^]]*\]|\(..|.)|\\\(..|\\.")
# Font macros and how they join their arguments: the alternating ones without a space.
_FONT_MACROS = {"B": " ", "I": " ", "SM": " ", "SB": " ", "BI": "", "BR": "", "IB": "",
                "IR": "", "RB": "", "RI": ""}  # fmt: skip
_FLAG = re.compile(r"(?<![\w-])(--?[A-Za-z][\w-]*)")


def unescape(text: str) -> str:
    """Roff escapes to text; font changes vanish."""
    return _ESCAPE.sub(lambda m: _ESCAPES.get(m[0], "" if m[0][1] == "f" else m[0]), text)


def macro_args(text: str) -> list[str]:
    """A macro's arguments: blank-separated, "quoted" ones may hold blanks, "" is a quote."""
    args: list[str] = []
    current, quoted, started, i = "", False, False, 0
    while i < len(text):
        char = text[i]
        if char == "\\":
            current, started, i = current + text[i : i + 2], True, i + 2
        elif char == '"' and quoted and text[i + 1 : i + 2] == '"':
            current, i = current + '"', i + 2
        elif char == '"':
            quoted, started, i = not quoted, True, i + 1
        elif char == " " and not quoted:
            if started:
                args.append(current)
            current, started, i = "", False, i + 1
        else:
            current, started, i = current + char, True, i + 1
    return [*args, current] if started else args


def plain(line: str) -> str:
    """The text of one line: a font macro's arguments joined, other macros nothing."""
    if not line.startswith((".", "'")):
        return unescape(line)
    name, _, rest = line[1:].partition(" ")
    joiner = _FONT_MACROS.get(name)
    return "" if joiner is None else unescape(joiner.join(macro_args(rest)))


@dataclass
class Entry:
    """A .TP paragraph: its tag lines (.TP, then any .TQ) and its text."""

    tags: list[str] = field(default_factory=list)
    body: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return " ".join([*self.tags, *self.body])


@dataclass
class Part:
    """A .SS subsection (or a section's text before its first .SS)."""

    head: list[str] = field(default_factory=list)  # text before the first .PP or .TP
    lines: list[str] = field(default_factory=list)  # all its text, entries included
    entries: list[Entry] = field(default_factory=list)

    @property
    def text(self) -> str:
        return " ".join(self.lines)


@dataclass
class Page:
    title: list[str]  # the .TH arguments
    sections: dict[str, dict[str, Part]]  # .SH title → .SS title ("" first) → part
    source: str

    def part(self, section: str, sub: str = "") -> Part:
        return self.sections[section][sub]

    def entries(self, section: str, sub: str = "") -> list[Entry]:
        return self.part(section, sub).entries


def read_page(name: str) -> Page:
    source = (MAN / name).read_text(encoding="utf-8")
    title: list[str] = []
    sections: dict[str, dict[str, Part]] = {}
    part, entry, want_tag, in_head = Part(), None, False, True
    for line in source.splitlines():
        macro = line[1:].split(" ", 1)[0] if line.startswith(".") else None
        if line.startswith('.\\"'):
            continue
        if want_tag and entry is not None:
            entry.tags.append(plain(line))
            part.lines.append(entry.tags[-1])
            want_tag = False
        elif macro == "TH":
            title = macro_args(line[3:])
        elif macro in ("SH", "SS"):
            heading = unescape(" ".join(macro_args(line[3:])))
            if macro == "SH":
                sections[heading] = {}
            part = sections[list(sections)[-1]].setdefault("" if macro == "SH" else heading, Part())
            entry, in_head = None, True
        elif macro in ("TP", "TQ"):
            if macro == "TP":
                entry = Entry()
                part.entries.append(entry)
            want_tag, in_head = True, False
        elif macro in ("PP", "P", "LP", "IP"):
            entry, in_head = None, False
        elif text := plain(line):
            (entry.body if entry is not None else part.head if in_head else []).append(text)
            part.lines.append(text)
    return Page(title, sections, source)


def flags(text: str) -> set[str]:
    """The options named in a text: -n, --follow."""
    return set(_FLAG.findall(text))


def option_entries(entries: list[Entry]) -> dict[str, Entry]:
    """Each flag documented by an entry whose tag starts with an option."""
    found: dict[str, Entry] = {}
    for entry in entries:
        for tag in entry.tags:
            if tag.startswith("-"):
                found.update(dict.fromkeys(flags(tag), entry))
    return found


def positional_tags(entries: list[Entry]) -> set[str]:
    """The first word of each tag that is not an option: NAME, CMD, start."""
    return {tag.split()[0] for e in entries for tag in e.tags if tag and not tag.startswith("-")}


def examples(page: Page, section: str) -> list[str]:
    """The text of the .EX/.EE blocks in a section."""
    blocks, current, inside, here = [], [], False, False
    for line in page.source.splitlines():
        if line.startswith(".SH"):
            here = unescape(" ".join(macro_args(line[3:]))) == section
        elif line.startswith(".EX") and here:
            inside, current = True, []
        elif line.startswith(".EE") and inside:
            inside = False
            blocks.append("\n".join(current) + "\n")
        elif inside:
            current.append(unescape(line))
    return blocks


@pytest.fixture(scope="module")
def sessionc_page() -> Page:
    return read_page("sessionc.1")


@pytest.fixture(scope="module")
def sessiond_page() -> Page:
    return read_page("sessiond.8")


@pytest.fixture(scope="module")
def toml_page() -> Page:
    return read_page("sessiond.toml.5")


# --- roff itself ----------------------------------------------------------------


@pytest.mark.parametrize("name", PAGES)
def test_groff_finds_nothing_to_warn_about(name: str) -> None:
    groff = shutil.which("groff")
    if groff is None:
        pytest.skip("groff is not installed (apt-get install groff-base): cannot check the roff")
    done = subprocess.run([groff, "-man", "-ww", "-z", str(MAN / name)], capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert (done.returncode, done.stderr) == (0, "")


@pytest.mark.parametrize("name", PAGES)
def test_title_names_the_file_and_pages_refer_to_each_other(name: str) -> None:
    page = read_page(name)
    assert f"{page.title[0].lower()}.{page.title[1]}" == name
    see_also = page.part("SEE ALSO").text
    for other in (p for p in PAGES if p != name):
        stem, _, section = other.rpartition(".")
        assert f"{stem}({section})" in see_also, f"{name}: SEE ALSO lacks {stem}({section})"


# --- sessionc(1) against argparse -----------------------------------------------


def help_commands() -> list[str]:
    """The commands `sessionc --help` lists, in its order."""
    env = {**os.environ, "COLUMNS": "200"}
    done = subprocess.run([sys.executable, "-m", "sessiond.cli", "--help"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    names = []
    for line in lines[lines.index("  COMMAND") + 1 :]:
        if not line.startswith("    "):
            break
        if line[4] != " ":  # a wrapped help line is indented further
            names.append(line.split()[0])
    return names


def subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


GLOBAL_FLAGS = {flag for names, _ in cli.GLOBAL_OPTIONS for flag in names} | {"-h", "--help"}


def test_every_command_is_documented_and_every_documented_one_exists(
    sessionc_page: Page,
) -> None:
    shown = help_commands()
    documented = [name for name in sessionc_page.sections["COMMANDS"] if name]
    assert not set(shown) - set(documented), "sessionc --help lists commands sessionc(1) lacks"
    assert not set(documented) - set(shown), "sessionc(1) documents commands sessionc lacks"


def test_global_options_match_the_parser(sessionc_page: Page) -> None:
    parser = cli.build_parser()
    expected = {flag for action in parser._actions for flag in action.option_strings}
    assert set(option_entries(sessionc_page.entries("OPTIONS"))) == expected


# A command without help is hidden from `sessionc --help` (`__complete`, for the
# completion scripts): not for people, so not in the manual either.
LISTED = [name for name, command in cli.COMMANDS.items() if command.help]


@pytest.mark.parametrize("command", LISTED)
def test_command_options_match_the_parser(sessionc_page: Page, command: str) -> None:
    part = sessionc_page.sections["COMMANDS"].get(command)
    assert part is not None, f"sessionc(1) has no '.SS {command}' under COMMANDS"
    parser = subparsers()[command]
    actions = [a for a in parser._actions if not set(a.option_strings) & GLOBAL_FLAGS]
    options = {flag for a in actions for flag in a.option_strings}
    documented = option_entries(part.entries)
    assert set(documented) == options, f"options of '{command}': page vs argparse"
    synopsis = flags(" ".join(part.head))
    assert synopsis <= options, f"the synopsis of '{command}' names unknown options"
    for a in (a for a in actions if a.option_strings):
        assert synopsis & set(a.option_strings), f"'{command}' synopsis: {a.option_strings}?"
    positionals = set()
    for a in (a for a in actions if not a.option_strings):
        positionals |= set(a.choices or [(a.metavar or a.dest.upper()).split()[0]])
    assert positional_tags(part.entries) == positionals, f"arguments of '{command}'"
    for a in (a for a in actions if a.option_strings and a.choices):
        text = documented[a.option_strings[0]].text
        assert all(str(choice) in text for choice in a.choices), (a.option_strings, a.choices)


def test_exit_statuses_match_the_code(sessionc_page: Page) -> None:
    statuses = {int(e.tags[0]): e.text for e in sessionc_page.entries("EXIT STATUS")}
    expected = {errors.EXIT_OK, errors.EXIT_FAILURE, errors.EXIT_USAGE, errors.EXIT_UNREACHABLE,
                *errors.EXIT_CODES.values(), cli.EXIT_NOT_FOUND, cli.EXIT_INTERRUPTED}  # fmt: skip
    assert set(statuses) == expected
    epilog = cli.EPILOG.partition("--json")[0]
    assert {int(n) for n in re.findall(r"\b(\d+) [a-z]", epilog)} == expected, "cli.EPILOG"
    pending = [errors.DomainError]
    while pending:
        for kind in pending.pop().__subclasses__():
            pending.append(kind)
            status = errors.exit_code_for(kind.code)
            assert kind.name in statuses[status], f"{kind.name} should be under exit {status}"


# --- sessiond(8) ----------------------------------------------------------------


def daemon_parser(monkeypatch: pytest.MonkeyPatch) -> argparse.ArgumentParser:
    """The parser sessiond.daemon.parse_args builds, caught as it parses."""
    from sessiond import main as daemon  # noqa: PLC0415 -- heavy: only the tests that need it

    made: list[argparse.ArgumentParser] = []

    def keep(self: argparse.ArgumentParser, *args: object, **kwargs: object) -> object:
        made.append(self)
        return argparse.Namespace()

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", keep)
    daemon.parse_args([])
    return made[0]


def test_daemon_options_match_the_parser(
    sessiond_page: Page, monkeypatch: pytest.MonkeyPatch
) -> None:
    parser = daemon_parser(monkeypatch)
    documented = option_entries(sessiond_page.entries("OPTIONS"))
    assert set(documented) == {flag for a in parser._actions for flag in a.option_strings}
    assert flags(" ".join(sessiond_page.part("SYNOPSIS").lines)) <= set(documented)
    for a in (a for a in parser._actions if a.choices):
        text = documented[a.option_strings[0]].text
        assert all(choice in text for choice in a.choices), (a.option_strings, a.choices)


_ENV_READ = re.compile(r"""environ(?:\.get\(|\[)\s*["']([A-Z][A-Z0-9_]*)["']""")


def variables_read(*sources: str) -> set[str]:
    return {name for source in sources for name in _ENV_READ.findall(source)}


def environment_tags(page: Page) -> set[str]:
    return {word for e in page.entries("ENVIRONMENT") for t in e.tags for word in t.split(", ")}


def test_daemon_environment_is_documented(sessiond_page: Page) -> None:
    from sessiond import main as daemon  # noqa: PLC0415

    cli = REPO / "sessiond" / "cli"
    modules = [
        p.read_text()
        for p in (REPO / "sessiond").rglob("*.py")
        if cli not in p.parents and p.name != "paths.py"
    ]
    functions = [paths.system_socket, paths.system_state_dir, paths.user_runtime_dir]
    read = variables_read(*modules, *map(inspect.getsource, functions))
    read |= {daemon.HANG_SWITCH, *settings.ENV_KEYS}
    assert read - environment_tags(sessiond_page) == set()


def test_sessionc_environment_is_documented(sessionc_page: Page) -> None:
    sources = [p.read_text() for p in (REPO / "sessiond" / "cli").glob("*.py")]
    functions = [paths.client_socket, paths.user_runtime_dir]
    read = variables_read(*sources, *map(inspect.getsource, functions))
    assert read - environment_tags(sessionc_page) == set()


def test_daemon_files_are_documented(sessiond_page: Page, tmp_path: Path) -> None:
    from sessiond import main as daemon  # noqa: PLC0415
    from sessiond.daemon import store  # noqa: PLC0415

    files = " ".join(e.text for e in sessiond_page.entries("FILES"))
    lock = daemon.InstanceLock(tmp_path).path.name
    for path in (paths.SYSTEM_SOCKET, paths.SYSTEM_STATE_DIR, store.DB_NAME, lock):
        assert path in files


# --- sessiond.toml(5) against the settings tables ------------------------------

HEADERS = {f"[{name}]": table for name, table in settings.SECTIONS.items()} | {
    f"[{name}.NAME]": table for name, table in settings.NAMED_SECTIONS.items()
}
_KEY_TAG = re.compile(r"(\w+) = (.+?) \((?:default (.+)|required)\)")


def documented_keys(toml_page: Page, header: str) -> dict[str, tuple[str, str]]:
    """key → (type, default literal or "required"), from a table's entries."""
    found = {}
    for entry in toml_page.sections["TABLES"][header].entries:
        match = _KEY_TAG.fullmatch(entry.tags[0])
        assert match, f"{header}: tag {entry.tags[0]!r} is not 'KEY = TYPE (default LITERAL)'"
        found[match[1]] = (match[2], match[3] or "required")
    return found


def reference_defaults() -> dict[str, dict[str, str]]:
    """header → key → the default as TOML, from config.reference()."""
    tables: dict[str, dict[str, str]] = {}
    current: dict[str, str] = {}
    for line in config.reference().splitlines():
        if line.startswith("["):
            current = tables.setdefault(line, {})
        elif match := re.match(r"(\w+) = (.*?)  # ", line):
            current[match[1]] = match[2]
    return tables


def own_keys(header: str) -> dict[str, settings.Setting]:
    """A table's own keys; a template's [session] keys are documented under [session]."""
    table = HEADERS[header]
    own = header != "[templates.NAME]"
    return {key: s for key, s in table.items() if own or key not in settings.SESSION_KEYS}


def test_every_table_is_documented(toml_page: Page) -> None:
    assert {name for name in toml_page.sections["TABLES"] if name} == set(HEADERS)


@pytest.mark.parametrize("header", list(HEADERS))
def test_keys_types_and_defaults_match_the_settings(toml_page: Page, header: str) -> None:
    keys = documented_keys(toml_page, header)
    settings = own_keys(header)
    reference = reference_defaults()[header]
    assert set(keys) == set(settings), f"keys of {header}: page vs config.py"
    expected = {k: reference[k] for k, s in settings.items() if s.default is not MISSING}
    expected |= {k: "required" for k, s in settings.items() if s.default is MISSING}
    assert {key: default for key, (_, default) in keys.items()} == expected
    durations = {key: "duration" in kind for key, (kind, _) in keys.items()}
    assert durations == {key: s.duration for key, s in settings.items()}, "duration types"


def test_templates_take_every_session_key(toml_page: Page) -> None:
    text = toml_page.sections["TABLES"]["[templates.NAME]"].text
    assert all(key in text for key in settings.SESSION_KEYS)


def test_environment_overrides_are_documented(toml_page: Page, sessiond_page: Page) -> None:
    assert set(settings.ENV_KEYS) <= environment_tags(toml_page)
    assert set(settings.ENV_KEYS) <= environment_tags(sessiond_page)


def test_example_file_is_valid_complete_and_shows_the_defaults(
    toml_page: Page, tmp_path: Path
) -> None:
    text = next(block for block in examples(toml_page, "EXAMPLES") if "[daemon]" in block)
    path = tmp_path / "sessiond.toml"
    path.write_text(text)
    loaded = config.load_config(path, {})
    assert (loaded.daemon, loaded.session) == (
        settings.DaemonSettings(),
        settings.SessionSettings(),
    )
    doc = tomllib.loads(text)
    for section, table in settings.SECTIONS.items():
        assert set(doc[section]) == set(table), f"[{section}] in the example"
    for section in settings.NAMED_SECTIONS:
        widest = max(doc[section].values(), key=len)
        assert set(own_keys(f"[{section}.NAME]")) <= set(widest), f"[{section}.*] in the example"
