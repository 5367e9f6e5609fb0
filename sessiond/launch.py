"""The daemon's entry point (`sessiond`, `python -m sessiond`): load it, then run it.

Two things make loading the daemon cost more than its code:

  * The cyclic collector. Loading makes some 30,000 objects it tracks (classes,
    functions, the methods dataclasses compile), almost none of them garbage,
    and their allocation set it off ~45 times during the import. So it is off
    while the daemon loads, and what loading made is frozen (`gc.freeze`: moved
    where the collector never looks again) before it is back on: a long-lived
    daemon's code is never freed, and the passes it makes walk only the objects
    of its work. The ~400 to 500 objects the import did leave as garbage (~120 KB:
    the classes `dataclass(slots=True)` replaces, their functions) stay, frozen
    with the rest: a full collection to find them costs 8 to 10 ms more.
  * ssl. asyncio imports it, if it can, for TLS transports (ssl and _ssl, which
    maps OpenSSL's libraries: ~5 ms and ~4 MiB), and sessiond opens none: its
    socket is a Unix socket, and the etcd client's TLS is grpc's own. So asyncio
    alone is imported as on a Python built without ssl, and ssl is back before
    anything else loads: a later `import ssl` gets the real module, but asyncio's
    TLS (`ssl=` of create_connection, start_tls) raises RuntimeError in the
    daemon's process, and fails closed.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable


def _asyncio_without_ssl() -> None:
    if "asyncio" in sys.modules or "ssl" in sys.modules:
        return  # a host that has either loaded already loses nothing by it
    sys.modules["ssl"] = None  # type: ignore[assignment]  # `import ssl` raises ImportError
    try:
        import asyncio  # noqa: F401, PLC0415 -- loaded here, once, without ssl
    finally:
        if sys.modules.get("ssl", False) is None:
            del sys.modules["ssl"]


def load() -> Callable[[list[str] | None], int]:
    """sessiond.main.main, imported with the collector off and asyncio without ssl."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        _asyncio_without_ssl()
        from sessiond.main import main  # noqa: PLC0415 -- loaded with the collector off
    finally:
        gc.freeze()
        if collecting:
            gc.enable()
    return main


def main() -> int:
    return load()(None)
