"""The pure SLA core: no I/O, no clock (see engine.py).

Four of its modules (engine, replay, calendar, policy) may be compiled by mypyc at install time
(setup.py; docs/decisions/0008-core-throughput.md, "Compiled core").  The compiled extension modules sit
next to the .py files and Python prefers them.  This package imports the .py files instead when

* ``WATERWATCH_PURE=1`` is set in the environment, or
* the build is stale: a source it was built from changed since (the SHA-256s in ``_native_build.json``),
  or that record or the shared library is missing or does not load.

Both ways give the same results; :func:`native_status` says which one is in use and why.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

_HERE = Path(__file__).resolve().parent
_ROOT = _HERE.parent.parent  # the directory holding the ``waterwatch`` package
_MANIFEST = "_native_build.json"
_NATIVE = ("engine", "replay", "calendar", "policy")
"""The modules setup.py compiles (its COMPILED); their .py files are imported whenever the build is not used."""


class _PureFinder(importlib.abc.MetaPathFinder):
    """Finds the .py file of the compiled modules, ahead of their extension modules."""

    def __init__(self, names: frozenset[str]) -> None:
        self.names = names

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self.names:
            return None
        return importlib.util.spec_from_file_location(fullname, _HERE / (fullname.rpartition(".")[2] + ".py"))


def _check() -> tuple[str, str, list[str]]:
    """(state, why, the compiled module names); state is one of :data:`STATES`."""
    try:
        info = json.loads((_HERE / _MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return "absent", "no compiled core installed", []
    except (OSError, ValueError) as exc:
        return "broken", f"unreadable {_MANIFEST}: {exc}", []
    if not info.get("compiled"):
        return "failed", f"the build did not compile it: {info.get('reason')}", []
    modules = [str(m) for m in info.get("modules", [])]
    if os.environ.get("WATERWATCH_PURE") == "1":
        return "disabled", "WATERWATCH_PURE=1", modules
    if info.get("python") != sys.implementation.cache_tag:
        return "broken", f"built for {info.get('python')}, this is {sys.implementation.cache_tag}", modules
    for rel, digest in dict(info.get("sources", {})).items():
        try:
            now = hashlib.sha256((_ROOT / rel).read_bytes()).hexdigest()
        except OSError:
            now = None
        if now != digest:
            return "stale", f"{rel} changed since the build; scripts/setup rebuilds it", modules
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    missing = [m for m in modules if not (_HERE / (m + suffix)).exists()]
    if missing:
        return "broken", f"no {', '.join(m + suffix for m in missing)}", modules
    try:
        importlib.import_module(f"{info.get('group')}__mypyc")
    except ImportError as exc:
        return "broken", f"the compiled library does not load: {exc}", modules
    return "compiled", f"mypyc {info.get('mypy')}", modules


STATES = ("compiled", "absent", "failed", "disabled", "stale", "broken")
"""compiled; else pure Python because: never built, the build failed, WATERWATCH_PURE=1, a source changed
since the build, or the build does not fit or load."""
_STATE, _WHY, _MODULES = _check()
if _STATE != "compiled":  # also when no record says what was built: leftover extension modules are not used
    sys.meta_path.insert(0, _PureFinder(frozenset(f"{__name__}.{m}" for m in (*_NATIVE, *_MODULES))))


def native_state() -> str:
    """One of :data:`STATES`: whether this process runs the compiled core, and if not, why not."""
    return _STATE


def native_status() -> str:
    """``compiled (…)`` or ``pure Python (why)``: how the core runs in this process."""
    if _STATE != "compiled":
        return f"pure Python ({_STATE}: {_WHY})"
    engine = importlib.import_module(f"{__name__}.engine")
    if str(engine.__file__).endswith(".py"):  # pragma: no cover - a module imported before this package
        return "pure Python (engine.py was imported from source)"
    return f"compiled ({_WHY}: {', '.join(_MODULES)})"
