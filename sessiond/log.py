"""Logging to stderr with `<N>` syslog priority prefixes, for journald.

journald reads a leading `<N>` on each stderr line as the priority of that
line (SyslogLevelPrefix=yes, the default), so `journalctl -p err` shows only
errors. Outside journald the prefix is harmless and still greppable.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from .core.events import CRASHES, WARNINGS

PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}
LEVELS = ("debug", "info", "notice", "warning", "error")
NOTICE = 25  # syslog's notice sits between info and warning
logging.addLevelName(NOTICE, "NOTICE")
PRIORITY[NOTICE] = 5


class JournalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{PRIORITY.get(record.levelno, 6)}>"
        text = super().format(record)
        # Every line of a traceback keeps the record's priority.
        return "\n".join(prefix + line for line in text.splitlines())


def setup(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JournalFormatter("%(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(NOTICE if level == "notice" else level.upper())


def priority(event: dict[str, Any]) -> int:
    """The journal level of an event: warnings for failures and unexpected exits."""
    kind, data = event["kind"], event.get("data") or {}
    crashed = kind in CRASHES and data.get("exit_code") not in (None, 0)
    return logging.WARNING if kind in WARNINGS or crashed else NOTICE
