"""Build hook: compile the pure SLA core with mypyc when that works, else install it as plain Python.

Everything else is in pyproject.toml.  ``pip install .`` and ``pip install -e .`` (scripts/setup) run this;
mypy and pydantic come from ``[build-system] requires``.  Which modules are compiled, how the build falls
back and why: docs/decisions/0008-core-throughput.md ("Compiled core").

* ``WATERWATCH_PURE=1`` at build time: do not compile (also at run time: import the .py modules).
* Any failure (mypyc's type check, no C compiler, a compiler error) removes whatever part of the
  extension was built, installs the pure-Python core and records why in ``_native_build.json``;
  ``scripts/setup`` prints that reason in a banner (pip hides a build's output unless ``-v``).
* On success ``waterwatch/core/_native_build.json`` records the SHA-256 of every source the compiled code
  was built from; ``waterwatch.core`` imports the .py modules instead when one of them changed since.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import sys
import traceback
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent
CORE = "waterwatch/core"
COMPILED = ["engine", "replay", "calendar", "policy"]
"""The modules mypyc compiles (one shared library, ``waterwatch.core._native__mypyc``, plus a stub per module)."""
SOURCES = [f"{CORE}/{m}.py" for m in (*COMPILED, "errors", "units", "yamlconf")] + [
    "waterwatch/events.py", "waterwatch/codes.py",
]  # fmt: skip
"""What the compiled code was built from: the compiled modules and the repository modules they import
(mypyc bakes their types in).  If any of them changes, the build is stale."""
MANIFEST = "_native_build.json"
GROUP = "waterwatch.core._native"
BUILD_COMMANDS = {"build", "build_ext", "bdist_wheel", "editable_wheel", "install", "develop"}


def _say(lines: list[str]) -> None:
    bar = "!" * 78
    print("\n".join([bar, *(f"!! {line}" for line in lines), bar]), file=sys.stderr, flush=True)


def _digests() -> dict[str, str]:
    return {p: hashlib.sha256((HERE / p).read_bytes()).hexdigest() for p in SOURCES}


def _mypycify() -> tuple[list[Extension], str | None]:
    """The extensions to build, or ``([], why not)``."""
    if os.environ.get("WATERWATCH_PURE") == "1":
        return [], "WATERWATCH_PURE=1 at build time"
    try:
        from mypyc.build import mypycify
    except ImportError as exc:
        return [], f"mypyc is not installed in the build environment ({exc})"
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):  # mypyc prints its type errors there, then exits
            exts = mypycify([f"{CORE}/{m}.py" for m in COMPILED], opt_level="3", group_name=GROUP)
    except (Exception, SystemExit) as exc:
        print(out.getvalue(), end="")
        traceback.print_exc()
        errors = [line for line in out.getvalue().splitlines() if ": error:" in line]
        return [], f"mypyc could not compile the core ({type(exc).__name__}: {exc}) {' | '.join(errors[:3])}"
    print(out.getvalue(), end="")
    return list(exts), None


class OptionalBuildExt(build_ext):
    """build_ext that never fails the install: on any error it removes what it built and records why."""

    def _targets(self) -> list[Path]:
        """Where the manifest goes: the build tree, and the source tree when building in place (-e)."""
        out = [Path(self.build_lib) / CORE]
        if self.inplace or getattr(self, "editable_mode", False):
            out.append(HERE / CORE)
        return out

    def _write_manifest(self, info: dict[str, object]) -> None:
        for d in self._targets():
            d.mkdir(parents=True, exist_ok=True)
            (d / MANIFEST).write_text(json.dumps(info, indent=1, sort_keys=True) + "\n", encoding="utf-8")

    def _remove_built(self) -> None:
        build_py = self.get_finalized_command("build_py")
        for ext in self.extensions:
            fullname = self.get_ext_fullname(ext.name)
            filename = self.get_ext_filename(fullname)
            package_dir = Path(build_py.get_package_dir(".".join(fullname.split(".")[:-1])))
            for p in (Path(self.build_lib) / filename, HERE / package_dir / Path(filename).name):
                if p.exists():
                    p.unlink()

    def run(self) -> None:
        failure = NO_NATIVE
        if failure is None:
            for d in self._targets():  # a failed build must not leave an older manifest behind
                (d / MANIFEST).unlink(missing_ok=True)
            try:
                super().run()
            except Exception as exc:
                traceback.print_exc()
                self._remove_built()
                failure = f"compiling the core failed ({type(exc).__name__}: {exc})"
        if failure is not None:
            _say([
                "waterwatch: the SLA core is NOT compiled; it runs as pure Python (same results, slower).",
                f"Reason: {failure}",
                "See docs/decisions/0008-core-throughput.md (Compiled core).",
            ])  # fmt: skip
            self._write_manifest({"compiled": False, "reason": failure})
            return
        import mypy.version

        self._write_manifest({
            "compiled": True, "modules": COMPILED, "group": GROUP, "sources": _digests(),
            "python": sys.implementation.cache_tag, "mypy": mypy.version.__version__,
        })  # fmt: skip


ext_modules: list[Extension] = []
NO_NATIVE: str | None = None
if BUILD_COMMANDS & set(sys.argv[1:]):
    ext_modules, NO_NATIVE = _mypycify()
    if NO_NATIVE is not None:
        # keep one (never built) extension so that build_ext runs and records why the core is pure Python
        ext_modules = [Extension(f"{GROUP}__mypyc", sources=[])]

setup(ext_modules=ext_modules, cmdclass={"build_ext": OptionalBuildExt})
