"""jsonrpcserver, imported without what sessiond never uses (SPEC §8).

The dispatcher is imported before the daemon says READY=1, so the first
request costs what any other does. What jsonrpcserver loads at import time
for features sessiond does not use (a jsonschema validator, an HTTP server)
is replaced for that import by stand-ins that load the real module only if
they are ever called, or (its schema file) read it as plainly (`jsonrpcserver_lean`).
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import importlib.util
import os
import sys
import types
from collections.abc import Iterator
from typing import Any


class _DeferredValidator:
    """What jsonrpcserver.main gets for `jsonschema.validators.validator_for(schema)`: a
    validator class that loads the real one only if its `validate` is ever called."""

    def __init__(self, schema: Any) -> None:
        self.schema = schema

    @classmethod
    def check_schema(cls, schema: Any) -> None:
        pass  # jsonrpcserver's own schema, checked by the real class if it is ever used

    def validate(self, instance: Any) -> None:
        from jsonschema.validators import validator_for  # noqa: PLC0415 -- the deferred load

        validator_for(self.schema)(self.schema).validate(instance)


def _serve(*args: Any, **kwargs: Any) -> Any:
    """jsonrpcserver.serve (its HTTP server, which sessiond never runs), loaded if called."""
    from jsonrpcserver.server import serve  # noqa: PLC0415 -- the deferred load

    return serve(*args, **kwargs)


def _read_text(package: str, resource: str, encoding: str = "utf-8") -> str:
    """importlib.resources.read_text of a package installed as files, as pip installs
    jsonrpcserver: the file beside its __init__."""
    origin = sys.modules[package].__file__
    assert origin is not None
    with open(os.path.join(os.path.dirname(origin), resource), encoding=encoding) as file:
        return file.read()


def _stand_ins() -> dict[str, types.ModuleType]:
    """Modules jsonrpcserver imports at import time for what sessiond never uses.

    `jsonrpcserver.main` reads its request schema (importlib.resources, its readers,
    zipfile and tempfile: ~5 ms) and builds a jsonschema validator for its default
    `validator=`; the dispatch passes its own structural check to every call
    (jsonschema, referencing and attrs: ~50 ms). `jsonrpcserver.server` is an HTTP
    server (http.server, email, html: ~15 ms).
    """
    validators = types.ModuleType("jsonschema.validators")
    validators.__dict__["validator_for"] = lambda _schema, default=None: _DeferredValidator
    package = types.ModuleType("jsonschema")
    package.__dict__.update(__path__=[], validators=validators)  # a package of this one module
    resources = types.ModuleType("importlib.resources")
    resources.__dict__["read_text"] = _read_text
    http = types.ModuleType("jsonrpcserver.server")
    http.__dict__["serve"] = _serve
    return {"jsonschema": package, "jsonschema.validators": validators,
            "importlib.resources": resources, "jsonrpcserver.server": http}  # fmt: skip


def _oslash_lazy() -> None:
    """oslash, its package's own code run on first use of a name it defines.

    jsonrpcserver uses oslash.either alone, and `import oslash` loads every monad of the
    library and its version machinery (~8 ms before READY). This is the real package,
    from its spec, whose submodules (oslash.either and what it imports) load from their
    files as ever; the first name asked of it that they did not set (oslash.Maybe, say)
    runs its __init__ in it then, so a later user gets all of oslash, the same classes.
    """
    if "oslash" in sys.modules:
        return
    spec = importlib.machinery.PathFinder.find_spec("oslash")
    if spec is None or spec.loader is None:
        return
    package = importlib.util.module_from_spec(spec)

    def complete(name: str) -> Any:
        del package.__dict__["__getattr__"]
        spec.loader.exec_module(package)  # type: ignore[union-attr]
        return getattr(package, name)

    package.__dict__["__getattr__"] = complete
    sys.modules["oslash"] = package


@contextlib.contextmanager
def jsonrpcserver_lean() -> Iterator[None]:
    """Import jsonrpcserver with `_stand_ins()` in place of what it does not need loaded.

    Each stand-in loads the real module only if it is called; once jsonrpcserver is
    imported the stand-ins leave sys.modules, so any later import gets the real module.
    """
    # What a test or a tool has loaded already costs nothing more: the real module stays.
    stand_ins = {name: module for name, module in _stand_ins().items()
                 if name not in sys.modules}  # fmt: skip
    sys.modules |= stand_ins
    if "importlib.resources" in stand_ins:  # `import importlib.resources` reads it here
        importlib.resources = stand_ins["importlib.resources"]  # type: ignore[assignment]
    _oslash_lazy()
    try:
        yield
    finally:
        for name, stand_in in stand_ins.items():
            if sys.modules.get(name) is stand_in:
                del sys.modules[name]
        if getattr(importlib, "resources", None) is stand_ins.get("importlib.resources"):
            del importlib.resources
