"""Units of the settings: durations, times of day and names, parsed and shown.

Pure functions; each raises ValueError whose message is the rule a user broke.
"""

from __future__ import annotations

import math
import re

DURATION_RULE = "must be a duration like 90s, 5m, 1h30m or plain seconds"
CLOCK_RULE = "must be a time of day HH:MM, 24-hour (00:00 to 23:59)"
NAME_RULE = "must be 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
HOST_RULE = NAME_RULE.replace("must be 1 to 64", "must be a host name: 1 to 253")
HOST_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,252}")
ENDPOINT_RULE = 'must be "http://HOST:PORT", "https://HOST:PORT" or "HOST:PORT", PORT 1 to 65535'
_HOST_OR_IP = r"(?:[A-Za-z0-9][A-Za-z0-9.-]*|\[[0-9A-Fa-f:.]+\])"  # IPv6 in brackets, as in URLs
_ENDPOINT_RE = re.compile(rf"(?:https?://)?{_HOST_OR_IP}:([0-9]{{1,5}})")
MAX_SECONDS = 3650 * 86400.0  # ten years: now + any duration stays inside datetime's range
_NUMBER = r"[0-9]+(?:\.[0-9]+)?"
_DURATION_RE = re.compile(r"\s*".join(rf"(?:({_NUMBER}){unit})?" for unit in "dhms"))
_UNITS = (86400, 3600, 60, 1)
_CLOCK_RE = re.compile(r"([01]?[0-9]|2[0-3]):([0-5][0-9])")


def parse_duration(value: str | float) -> float:
    """Seconds in "90s", "5m", "1h30m", "1d", "1.5s", "45" or 45; never negative."""
    seconds = math.nan
    if isinstance(value, str):
        seconds = _duration_text(value.strip())
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value) if abs(value) < 1e300 else math.inf  # no OverflowError
    if math.isfinite(seconds) and seconds >= 0:
        return abs(seconds)  # -0.0 → 0.0
    raise ValueError(DURATION_RULE)


def _duration_text(text: str) -> float:
    if re.fullmatch(_NUMBER, text):
        return float(text)
    match = _DURATION_RE.fullmatch(text)
    if not text or match is None:
        return math.nan
    return sum(
        float(part) * unit for part, unit in zip(match.groups(), _UNITS, strict=True) if part
    )


def format_duration(seconds: float) -> str:
    """The inverse of parse_duration, for display: 5400 → "1h30m", 125 → "2m5s", 0 → "0s"."""
    if not 0 <= seconds < math.inf:
        raise ValueError(f"must be a number of seconds, not negative (got {seconds!r})")
    seconds = round(seconds, 3)
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    parts = [f"{n}{unit}" for n, unit in ((days, "d"), (hours, "h"), (minutes, "m")) if n]
    rest = secs + seconds - int(seconds)
    if rest or not parts:
        parts.append(f"{rest:.3f}".rstrip("0").rstrip(".") + "s")
    return "".join(parts)


def parse_clock(value: str) -> tuple[int, int]:
    """(hour, minute) of a 24-hour "HH:MM" such as "16:00" or "7:05"."""
    match = _CLOCK_RE.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise ValueError(CLOCK_RULE)
    return int(match[1]), int(match[2])


def parse_endpoint(value: object) -> str:
    """An etcd member's client URL as written; a bare "HOST:PORT" has no scheme of its own."""
    match = _ENDPOINT_RE.fullmatch(value) if isinstance(value, str) else None
    if match and 0 < int(match[1]) < 65536:
        return match[0]
    raise ValueError(ENDPOINT_RULE)
