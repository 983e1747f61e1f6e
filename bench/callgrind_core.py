"""Machine instructions per event of the core's replay loop, under valgrind (callgrind): deterministic, unlike
time on a shared machine (docs/decisions/0008-core-throughput.md, "How it was measured").

    python bench/callgrind_core.py [--matters 1000] [--pure] [--cache-sim] [--out DIR]

Runs the same script twice under ``valgrind --tool=callgrind`` with ``PYTHONHASHSEED=0``: once up to the
measured loop (imports, the synthetic events parsed and sorted, one warm-up replay so that the engine's
caches are filled) and once with the measured loop as well: a fresh :class:`Replayer` on the same engine
fed every event, then run on 30 days past the last one, as ``bench_core.py`` does.  The difference of the
two instruction counts, divided by the number of events, is printed.  Both runs end with ``os._exit`` (no
teardown counted).  ``--pure`` sets ``WATERWATCH_PURE=1``.

``--cache-sim`` also simulates the caches (``--cache-sim=yes``; this VM has no hardware counters): a 48 KiB
12-way L1d and, as the last level, a 2 MiB 16-way cache, this machine's L2 per core (its L3 is shared with the
other guests; at 20,000 matters and more the parsed events alone are over 100 MB, so what misses a 2 MiB
cache is what waits for the L3 or memory at 200,000 matters).  It prints data reads, L1d and last-level
misses per event.  ``--out DIR`` keeps the two callgrind files (``base.cg``, ``run.cg``): where the misses
are is ``callgrind_annotate --inclusive=yes`` of each, subtracted per function.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def child(matters: int, measure: bool) -> None:
    sys.path.insert(0, str(HERE))
    import gc
    import json

    from synth import city_year

    from waterwatch.core.config import load_config
    from waterwatch.core.replay import Replayer, gc_paused
    from waterwatch.events import parse_event

    events = [parse_event(json.dumps(e, separators=(",", ":")).encode()) for e in city_year(matters)]
    timed = sorted(((int(e.time.timestamp() // 1), e) for e in events), key=lambda p: p[0])
    engine = load_config().engine()
    last = timed[-1][0] + 30 * 86400

    def loop() -> Replayer:
        r = Replayer(engine)
        with gc_paused():
            for t, e in timed:
                r.feed(e, t=t)
            for _ in r.run_until(last, inclusive=True):
                pass
        return r

    keep = [loop()]  # warm-up: the engine's caches (offsets, ISO tables, peaks) are filled
    gc.collect()
    gc.disable()
    if measure:
        keep.append(loop())
    sys.stdout.write(f"events={len(timed)}\n")
    sys.stdout.flush()
    os._exit(0)


CACHES = ["--cache-sim=yes", "--D1=49152,12,64", "--LL=2097152,16,64"]
"""This machine's L1d and L2 per core (lscpu); see the module's docstring."""


def counts(matters: int, measure: bool, pure: bool, cache_sim: bool, out: Path | None) -> tuple[dict[str, int], int]:
    """``({event name: count}, events)`` of one run (``Ir`` alone without ``cache_sim``)."""
    env = dict(os.environ, PYTHONHASHSEED="0")
    env.pop("WATERWATCH_PURE", None)
    if pure:
        env["WATERWATCH_PURE"] = "1"
    dest = "/dev/null" if out is None else str(out / ("run.cg" if measure else "base.cg"))
    p = subprocess.run(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={dest}", *(CACHES if cache_sim else []),
         sys.executable, __file__, "--child", "--matters", str(matters), *(["--measure"] if measure else [])],
        capture_output=True, text=True, env=env, check=True,
    )  # fmt: skip
    names = re.search(r"Events\s*:\s*(.+)", p.stderr)
    m = re.search(r"Collected\s*:\s*([\d ]+)", p.stderr)
    n = re.search(r"events=(\d+)", p.stdout)
    assert names and m and n, p.stderr[-2000:]
    return dict(zip(names.group(1).split(), (int(x) for x in m.group(1).split()), strict=True)), int(n.group(1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--matters", type=int, default=1000)
    ap.add_argument("--pure", action="store_true")
    ap.add_argument("--cache-sim", action="store_true", help="simulate L1d and a 2 MiB last-level cache")
    ap.add_argument("--out", type=Path, help="keep the two callgrind output files in this directory")
    ap.add_argument("--child", action="store_true")
    ap.add_argument("--measure", action="store_true")
    args = ap.parse_args()
    if args.child:
        child(args.matters, args.measure)
        return
    from concurrent.futures import ThreadPoolExecutor

    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(2) as pool:  # the two runs side by side (counts do not depend on the load)
        b, f = (pool.submit(counts, args.matters, m, args.pure, args.cache_sim, args.out) for m in (False, True))
        (base, events), (full, _) = b.result(), f.result()
    import waterwatch.core as core

    status = "pure Python (WATERWATCH_PURE=1)" if args.pure else core.native_status()
    print(f"{events} events, {args.matters} matters, core: {status}")
    print(f"instructions/event: {(full['Ir'] - base['Ir']) / events:,.0f}  (run {full['Ir']:,} - base {base['Ir']:,})")
    if args.cache_sim:
        per = {k: (full[k] - base[k]) / events for k in full}
        print(f"data reads/event: {per['Dr']:,.0f}, writes/event: {per['Dw']:,.0f}")
        print(f"L1d misses/event: {per['D1mr'] + per['D1mw']:,.1f} (read {per['D1mr']:,.1f}, write {per['D1mw']:,.1f})")
        print(f"last-level (2 MiB) data misses/event: {per['DLmr'] + per['DLmw']:,.1f} "
              f"(read {per['DLmr']:,.1f}, write {per['DLmw']:,.1f}); instruction misses: L1i {per['I1mr']:,.1f}, "
              f"last level {per['ILmr']:,.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
