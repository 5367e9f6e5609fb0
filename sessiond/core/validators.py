"""Validators of the settings: a raw value in, a typed value out, or ValueError(rule).

A raw value is what a TOML file, an environment variable, `--set` or a JSON
param gives; the rule is the sentence a problem reports ("must be ...").
The key tables of settings.py pair each key with one of these.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Mapping
from typing import Any

from sessiond.core.units import (
    CLOCK_RULE,
    DURATION_RULE,
    ENDPOINT_RULE,
    MAX_SECONDS,
    NAME_RE,
    parse_clock,
    parse_duration,
    parse_endpoint,
)

Parser = Callable[[Any], Any]


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def duration(*, zero: bool = False, optional: bool = False, least: float = 0.0) -> Parser:
    low = f"at least {least:g}s" if least else "0s or more" if zero else "more than 0s"
    rule = f"{DURATION_RULE}, {low}, at most 3650d"
    rule += ', or "" for none' if optional else ""

    def parse(value: Any) -> float | None:
        if optional and _blank(value):
            return None
        try:
            seconds = parse_duration(value)
        except ValueError:
            raise ValueError(rule) from None
        if (seconds > 0 or zero) and least <= seconds <= MAX_SECONDS:
            return seconds
        raise ValueError(rule)

    return parse


def integer(low: int, high: int | None = None) -> Parser:
    rule = f"must be an integer from {low} to {high}" if high else f"must be an integer >= {low}"

    def parse(value: Any) -> int:
        if isinstance(value, str) and re.fullmatch(r"-?[0-9]{1,18}", value.strip()):
            value = int(value)
        if type(value) is int and low <= value and (high is None or value <= high):
            return value
        raise ValueError(rule)

    return parse


def choice(kind: type[enum.StrEnum]) -> Parser:
    values = [member.value for member in kind]
    rule = "must be one of " + ", ".join(f'"{value}"' for value in values)

    def parse(value: Any) -> enum.StrEnum:
        if isinstance(value, str) and value.strip() in values:
            return kind(value.strip())
        raise ValueError(rule)

    return parse


def text(pattern: str, rule: str, *, optional: bool = False) -> Parser:
    """A string matching `pattern`; with `optional`, "" means None (the default)."""
    rule += ', or "" for the default' if optional else ""

    def parse(value: Any) -> str | None:
        if optional and _blank(value):
            return None
        if isinstance(value, str) and re.fullmatch(pattern, value):
            return value
        raise ValueError(rule)

    return parse


def names(rule: str) -> Parser:
    def parse(value: Any) -> tuple[str, ...]:
        names = tuple(value) if isinstance(value, (list, tuple)) else (None,)
        valid = all(isinstance(name, str) and NAME_RE.fullmatch(name) for name in names)
        if valid and len(set(names)) == len(names):
            return names
        raise ValueError(rule)

    return parse


def endpoints(value: Any) -> tuple[str, ...]:
    rule = "must be a list of etcd endpoints, each " + ENDPOINT_RULE.removeprefix("must be ")
    if not isinstance(value, (list, tuple)):
        raise ValueError(rule)
    for endpoint in value:
        try:
            parse_endpoint(endpoint)
        except ValueError:
            raise ValueError(f"{rule}; not {endpoint!r}") from None
    return tuple(value)


def clock(value: Any) -> str | None:
    if _blank(value):
        return None
    try:
        hour, minute = parse_clock(value)
    except ValueError:
        raise ValueError(CLOCK_RULE + ', or "" for none') from None
    return f"{hour:02d}:{minute:02d}"


COMMAND_RULE = 'must be a non-empty list of strings like ["/usr/bin/python3", "-m", "scanner"]'
ENV_RULE = 'must be a table of NAME = "value" strings; no NAME has "=" or starts with SESSIOND_'
_ENV_NAME = re.compile(r"(?!SESSIOND_)[^=\0]+")  # the daemon sets SESSIOND_* itself


def command(value: Any) -> tuple[str, ...]:
    args = tuple(value) if isinstance(value, (list, tuple)) else ()
    if args and args[0] and all(isinstance(a, str) and "\0" not in a for a in args):
        return args
    shell = ": a list of strings, never a shell string" if isinstance(value, str) else ""
    raise ValueError(COMMAND_RULE + shell)


def environment(value: Any) -> tuple[tuple[str, str], ...]:
    pairs = tuple(value.items()) if isinstance(value, Mapping) else (("=", ""),)
    if all(_ENV_NAME.fullmatch(k) and isinstance(v, str) and "\0" not in v for k, v in pairs):
        return pairs
    raise ValueError(ENV_RULE)


def boolean(value: Any) -> bool:
    if value is True or value is False:
        return value
    raise ValueError("must be true or false")
