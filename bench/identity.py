"""Byte-identity check of the core's CLI output (docs/decisions/0008-core-throughput.md).

    python bench/identity.py capture DIR INPUTS   # run every command, write stdout/stderr/exit code into DIR
    python bench/identity.py compare DIR1 DIR2    # list the commands whose output differs

INPUTS is a directory holding demo.jsonl, synth20k.jsonl (``synth.city_year(20000)``), chaos1.jsonl and
chaos2.jsonl (``bench/chaos.py 4000 1`` / ``4000 2``), and optionally rich1.jsonl / rich2.jsonl (other
chaotic files).  ``WATERWATCH_PURE=1`` in the environment selects the pure core, as everywhere.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def commands(inputs: Path) -> dict[str, list[str]]:
    demo, synth = str(inputs / "demo.jsonl"), str(inputs / "synth20k.jsonl")
    cmds: dict[str, list[str]] = {
        "replay-demo": ["replay", demo],
        "replay-demo-until1": ["replay", demo, "--until", "2026-11-28T00:00:00+08:00"],
        "replay-demo-until2": ["replay", demo, "--until", "2026-12-20T00:00:00+08:00"],
        "replay-synth": ["replay", synth],
        "replay-synth-scaled": ["replay", synth, "--time-scale", "720"],
        "report-synth-json": ["report", synth, "--month", "2026-05", "--format", "json"],
        "report-synth-csv": ["report", synth, "--month", "2026-05", "--format", "csv"],
        "report-synth-table": ["report", synth, "--month", "2026-11", "--format", "table"],
        "report-demo-json": ["report", demo, "--month", "2026-11", "--format", "json"],
    }
    for m in ("T-7", "T-3", "O-0", "L-23", "D-1", "M-166"):
        cmds[f"explain-synth-{m}"] = ["explain", m, "--events", synth, "--format", "json"]
    cmds["explain-synth-T-7-text"] = ["explain", "T-7", "--events", synth]
    cmds["explain-demo-text"] = ["explain", "H-12345-0001", "--events", demo]
    chaos = ["chaos1", "chaos2"] + [n for n in ("rich1", "rich2") if (inputs / f"{n}.jsonl").exists()]
    for name in chaos:
        f = str(inputs / f"{name}.jsonl")
        cmds[f"replay-{name}"] = ["replay", f]
        cmds[f"replay-{name}-scaled"] = ["replay", f, "--time-scale", "720"]
        cmds[f"replay-{name}-until"] = ["replay", f, "--until", "2026-07-01T00:00:00+08:00"]
        cmds[f"report-{name}-json"] = ["report", f, "--month", "2026-06", "--format", "json"]
        cmds[f"report-{name}-csv"] = ["report", f, "--month", "2026-03", "--format", "csv"]
    for m in ("T-x1145", "O-x1208", "M-x1635", "D-x666", "L-x1948", "O-x769"):
        cmds[f"explain-chaos1-{m}"] = ["explain", m, "--events", str(inputs / "chaos1.jsonl"), "--format", "json"]
        cmds[f"explain-chaos2-{m}"] = ["explain", m, "--events", str(inputs / "chaos2.jsonl")]
    return cmds


def run(name: str, argv: list[str], out: Path) -> str:
    p = subprocess.run([str(REPO / ".venv/bin/waterwatch"), *argv], capture_output=True, cwd=REPO, check=False)
    (out / f"{name}.out").write_bytes(p.stdout)
    (out / f"{name}.err").write_bytes(p.stderr)
    (out / f"{name}.rc").write_text(f"{p.returncode}\n")
    return f"{name}: rc={p.returncode} out={len(p.stdout)}B {hashlib.sha256(p.stdout).hexdigest()[:12]}"


def main() -> None:
    if sys.argv[1] == "capture":
        out, inputs = Path(sys.argv[2]), Path(sys.argv[3])
        out.mkdir(parents=True, exist_ok=True)
        with ThreadPoolExecutor(2) as pool:
            for line in pool.map(lambda kv: run(kv[0], kv[1], out), commands(inputs).items()):
                print(line, flush=True)
    else:
        a, b = Path(sys.argv[2]), Path(sys.argv[3])
        names = sorted({p.name for p in a.iterdir()} | {p.name for p in b.iterdir()})
        bad = [n for n in names if not (a / n).exists() or not (b / n).exists()
               or (a / n).read_bytes() != (b / n).read_bytes()]  # fmt: skip
        print(f"{len(names)} files compared, {len(bad)} differ" + (": " + " ".join(bad) if bad else ""))
        sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
