"""The repository's own docs are complete on their own, and docs/wire.md is in step with the code.

A clone has nothing beside it: README.md and docs/*.md link only to files in
the repository, each of which exists, and neither they nor the manuals point
anywhere outside. docs/wire.md's method table names every method of
`rpc.METHODS` with exactly its params (`name?` for an optional one), and its
error table every code of `errors.py` with its name and sessionc's exit status.
"""

from __future__ import annotations

import re
from pathlib import Path

from sessiond import errors
from sessiond.wire import methods as rpc

REPO = Path(__file__).resolve().parents[1]
MARKDOWN = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
MANUALS = sorted((REPO / "man").glob("*.[1-8]"))
WIRE = REPO / "docs" / "wire.md"

_FENCE = re.compile(r"^```.*?^```", re.S | re.M)
_CODE = re.compile(r"`[^`\n]*`")
_INLINE = re.compile(r"\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE = re.compile(r"^\s*\[[^\]\n]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.M)
_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)


def link_targets(path: Path) -> list[str]:
    """Every inline and reference link target of a Markdown file, outside code."""
    text = _CODE.sub("", _FENCE.sub("", path.read_text()))
    return _INLINE.findall(text) + _REFERENCE.findall(text)


def relative(target: str) -> str | None:
    """The file part of a link into the repository; None for a URL or an anchor alone."""
    if _SCHEME.match(target) or target.startswith("#"):
        return None
    return target.split("#", 1)[0].split("?", 1)[0]


def test_every_link_stays_in_the_repository_and_finds_its_file():
    assert "docs/wire.md" in link_targets(REPO / "README.md"), "is the link parser still right?"
    outside, missing = [], []
    for path in MARKDOWN:
        for target in link_targets(path):
            file = relative(target)
            if file is None:
                continue
            resolved = (path.parent / file).resolve()
            where = f"{path.relative_to(REPO)}: {target}"
            if file.startswith("/") or not resolved.is_relative_to(REPO):
                outside.append(where)
            elif not resolved.exists():
                missing.append(where)
    assert (outside, missing) == ([], [])


def test_nothing_refers_to_the_project_folder_beside_the_clone():
    """The contract is in the repository's own docs, not in a SPEC.md that a clone lacks."""
    referring = [
        str(path.relative_to(REPO))
        for path in MARKDOWN + MANUALS
        if re.search(r"\.\./shared|SPEC\.md|\bSPEC\b", path.read_text())
    ]
    assert referring == []


# -- docs/wire.md against the code -----------------------------------------------


def table_rows(heading: str) -> list[list[str]]:
    """The body rows of the first table under `## heading` in docs/wire.md, as cells."""
    section = WIRE.read_text().split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    cells = [[c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]] for line in lines]
    return cells[2:]  # after the header and its --- line


def without_parentheses(text: str) -> str:
    while True:
        shorter = re.sub(r"\([^()]*\)", "", text)
        if shorter == text:
            return text
        text = shorter


def documented_params(cell: str) -> dict[str, bool]:
    """`name?` -> optional, `name` -> required; what parentheses say about them is skipped."""
    names = re.findall(r"`([a-z_]+\??)`", without_parentheses(cell))
    return {name.rstrip("?"): not name.endswith("?") for name in names}


def test_the_method_table_has_every_method_with_its_params():
    documented: dict[str, dict[str, bool]] = {}
    for method_cell, params_cell, _result in table_rows("Methods"):
        for method in re.findall(r"`([a-z]+(?:\.[a-z]+)?)`", method_cell):
            documented[method] = documented_params(params_cell)
    actual = {
        name: {p.name: p.required for p in method.params} for name, method in rpc.METHODS.items()
    }
    assert documented == actual


def test_the_error_table_has_every_code_with_its_name_and_exit_status():
    domain = {
        cls.code: cls.name
        for cls in vars(errors).values()
        if isinstance(cls, type) and issubclass(cls, errors.DomainError)
        and cls is not errors.DomainError
    }  # fmt: skip
    standard = [errors.PARSE_ERROR, errors.INVALID_REQUEST, errors.METHOD_NOT_FOUND]
    rows = {int(row[0]): row for row in table_rows("Errors")}
    assert set(rows) == set(domain) | set(standard)
    for code, (_, name, meaning, status) in rows.items():
        if code in domain:
            assert name == f"`{domain[code]}`", code
        else:  # a standard error, described: "(parse error)"
            assert name.startswith("(") and name.endswith(")"), code
        assert meaning, code
        assert int(status) == errors.exit_code_for(code), (code, name)
