"""The compiled core (mypyc, setup.py) and its pure-Python fallback give the same results.

docs/decisions/0008-core-throughput.md, "Compiled core".  The compiled modules sit next to the .py
files; ``waterwatch.core`` imports the .py files instead when ``WATERWATCH_PURE=1`` or when the build is
stale (a source changed since).  Whichever runs, ``replay`` prints the same bytes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import waterwatch.core as core

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

from synth import city_year  # noqa: E402

COMPILED = core.native_state() == "compiled"


def _python(code: str, *, pure: bool, cwd: Path = REPO, path: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("WATERWATCH_PURE", "PYTHONPATH")}
    if pure:
        env["WATERWATCH_PURE"] = "1"
    if path is not None:
        env["PYTHONPATH"] = str(path)
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600, check=False)  # fmt: skip


def test_status_names_a_known_state() -> None:
    assert core.native_state() in core.STATES
    status = core.native_status()
    assert status.startswith("compiled (") if COMPILED else status.startswith("pure Python (")


def test_pure_switch_imports_the_python_modules() -> None:
    code = ("import waterwatch.core as c, waterwatch.core.engine as e, waterwatch.core.replay as r; "
            "print(c.native_state(), e.__file__.endswith('.py'), r.__file__.endswith('.py'))")  # fmt: skip
    out = _python(code, pure=True)
    assert out.returncode == 0, out.stderr
    state, engine_py, replay_py = out.stdout.split()
    assert (engine_py, replay_py) == ("True", "True")
    assert state == ("disabled" if COMPILED else core.native_state())


def test_a_stale_build_falls_back_to_the_sources(tmp_path: Path) -> None:
    """A compiled build whose recorded source digest no longer matches is not used (whether or not built)."""
    pkg = tmp_path / "waterwatch"
    shutil.copytree(REPO / "waterwatch", pkg, ignore=shutil.ignore_patterns("__pycache__"))
    manifest = pkg / "core" / "_native_build.json"
    info = json.loads(manifest.read_text()) if manifest.exists() else {}
    if not info.get("compiled"):
        info = {"compiled": True, "modules": ["engine", "replay", "calendar", "policy"],
                "group": "waterwatch.core._native", "python": sys.implementation.cache_tag, "mypy": "-",
                "sources": {}}  # fmt: skip
    info["sources"]["waterwatch/core/engine.py"] = "0" * 64  # as if engine.py changed after the build
    manifest.write_text(json.dumps(info))
    out = _python("import waterwatch.core as c, waterwatch.core.engine as e; print(c.native_state(), e.__file__)",
                  pure=False, cwd=tmp_path, path=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr
    state, engine_file = out.stdout.split()
    assert state == "stale" and engine_file == str(pkg / "core" / "engine.py")


@pytest.mark.parametrize("manifest", [None, {"compiled": False, "reason": "no C compiler"}])
def test_without_a_valid_build_record_leftover_extensions_are_not_used(manifest: dict[str, object] | None,
                                                                       tmp_path: Path) -> None:  # fmt: skip
    pkg = tmp_path / "waterwatch"
    shutil.copytree(REPO / "waterwatch", pkg, ignore=shutil.ignore_patterns("__pycache__"))
    record = pkg / "core" / "_native_build.json"
    record.unlink(missing_ok=True)
    if manifest is not None:
        record.write_text(json.dumps(manifest))
    out = _python("import waterwatch.core as c, waterwatch.core.engine as e; print(c.native_state(), e.__file__)",
                  pure=False, cwd=tmp_path, path=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["absent" if manifest is None else "failed", str(pkg / "core" / "engine.py")]


@pytest.mark.skipif(not COMPILED, reason=f"the core is not compiled here: {core.native_status()}")
@pytest.mark.parametrize("args", [
    ["replay", "examples/demo-events.jsonl"],
    ["replay", "examples/demo-events.jsonl", "--until", "2026-11-28T00:00:00+08:00"],
    ["replay", "{synth}"],
    ["replay", "{synth}", "--time-scale", "720"],
    ["report", "{synth}", "--month", "2026-05", "--format", "json"],
    ["explain", "T-7", "--events", "{synth}", "--format", "json"],
])  # fmt: skip
def test_compiled_and_pure_replay_print_the_same_bytes(args: list[str], tmp_path: Path) -> None:
    synth = tmp_path / "synth.jsonl"
    with synth.open("w", encoding="utf-8") as f:
        for e in city_year(600, seed=11):
            f.write(json.dumps(e, ensure_ascii=False) + "\n")
    argv = [a.replace("{synth}", str(synth)) for a in args]
    code = f"import sys; from waterwatch.cli import main; sys.argv = ['waterwatch', *{argv!r}]; main()"
    compiled, pure = _python(code, pure=False), _python(code, pure=True)
    assert (compiled.returncode, compiled.stdout, compiled.stderr) == (pure.returncode, pure.stdout, pure.stderr)
    assert compiled.returncode == 0 and compiled.stdout
