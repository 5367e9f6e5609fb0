"""The daemon's entry point (`sessiond`, `python -m sessiond`): load it, then run it.

Loading the daemon makes some 19,000 objects the collector tracks (classes,
functions, the methods dataclasses compile), and almost none of them is garbage.
With the cyclic collector on, their allocation set it off some 60 times during
the import: 30 ms of a 140 ms import on a 2-core VM (alternating runs, p50). So
the collector is off while the daemon's modules load, and what they made is
frozen (`gc.freeze`: moved where the collector never looks again) before it is
back on: a long-lived daemon's code is never freed, and the passes it still
makes walk only the objects of its work. The ~560 objects the import did leave
as garbage (~120 KB: the classes `dataclass(slots=True)` replaces, their
functions) stay, frozen with the rest: a full collection to find them costs
10 ms more.
"""

from __future__ import annotations

import gc
from collections.abc import Callable


def load() -> Callable[[list[str] | None], int]:
    """sessiond.main.main, imported with the collector off; what the import made, frozen."""
    gc.disable()
    try:
        from sessiond.main import main  # noqa: PLC0415 -- the import this module times
    finally:
        gc.freeze()
        gc.enable()
    return main


def main() -> int:
    return load()(None)
