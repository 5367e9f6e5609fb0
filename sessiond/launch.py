"""The daemon's entry point (`sessiond`, `python -m sessiond`): load it, then run it.

Two things make loading the daemon cost more than its code:

  * The cyclic collector. Loading makes some 19,000 objects it tracks (classes,
    functions, the methods dataclasses compile), almost none of them garbage,
    and their allocation set it off ~55 times during the import. So it is off
    while the daemon loads, and what loading made is frozen (`gc.freeze`: moved
    where the collector never looks again) before it is back on: a long-lived
    daemon's code is never freed, and the passes it makes walk only the objects
    of its work. The ~560 objects the import did leave as garbage (~120 KB: the
    classes `dataclass(slots=True)` replaces, their functions) stay, frozen with
    the rest: a full collection to find them costs 10 ms more.
  * ssl. asyncio imports it, if it can, for TLS transports (ssl and _ssl with
    OpenSSL: ~5 ms), and sessiond opens none: its socket is a Unix socket, and
    the etcd client's TLS is grpc's own. So asyncio is imported as on a Python
    built without ssl; a later `import ssl` gets the real module, but asyncio's
    TLS (`ssl=` of create_connection, start_tls) stays off in this process and
    says "stdlib ssl module not available".
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable


def load() -> Callable[[list[str] | None], int]:
    """sessiond.main.main, imported with the collector off and asyncio without ssl."""
    gc.disable()
    hide_ssl = "ssl" not in sys.modules  # a host that has ssl loaded loses nothing by it
    if hide_ssl:
        sys.modules["ssl"] = None  # type: ignore[assignment]  # `import ssl` raises ImportError
    try:
        import asyncio  # noqa: F401, PLC0415 -- loaded here, without ssl

        from sessiond.main import main  # noqa: PLC0415 -- the import this module times
    finally:
        if hide_ssl:
            del sys.modules["ssl"]
        gc.freeze()
        gc.enable()
    return main


def main() -> int:
    return load()(None)
