"""Machine instructions per event of the core's replay loop, under valgrind (callgrind): deterministic, unlike
time on a shared machine (docs/decisions/0008-core-throughput.md, "How it was measured").

    python bench/callgrind_core.py [--matters 1000] [--pure]

Runs the same script twice under ``valgrind --tool=callgrind`` with ``PYTHONHASHSEED=0``: once up to the
measured loop (imports, the synthetic events parsed and sorted, one warm-up replay so that the engine's
caches are filled) and once with the measured loop as well: a fresh :class:`Replayer` on the same engine
fed every event, then run on 30 days past the last one, as ``bench_core.py`` does.  The difference of the
two instruction counts, divided by the number of events, is printed.  Both runs end with ``os._exit`` (no
teardown counted).  ``--pure`` sets ``WATERWATCH_PURE=1``.
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


def instructions(matters: int, measure: bool, pure: bool) -> tuple[int, int]:
    env = dict(os.environ, PYTHONHASHSEED="0")
    env.pop("WATERWATCH_PURE", None)
    if pure:
        env["WATERWATCH_PURE"] = "1"
    p = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, __file__, "--child",
         "--matters", str(matters), *(["--measure"] if measure else [])],
        capture_output=True, text=True, env=env, check=True,
    )  # fmt: skip
    m = re.search(r"Collected\s*:\s*(\d+)", p.stderr)
    n = re.search(r"events=(\d+)", p.stdout)
    assert m and n, p.stderr[-2000:]
    return int(m.group(1)), int(n.group(1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--matters", type=int, default=1000)
    ap.add_argument("--pure", action="store_true")
    ap.add_argument("--child", action="store_true")
    ap.add_argument("--measure", action="store_true")
    args = ap.parse_args()
    if args.child:
        child(args.matters, args.measure)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:  # the two runs side by side (counts do not depend on the load)
        b, f = (pool.submit(instructions, args.matters, m, args.pure) for m in (False, True))
        (base, events), (full, _) = b.result(), f.result()
    import waterwatch.core as core

    status = "pure Python (WATERWATCH_PURE=1)" if args.pure else core.native_status()
    print(f"{events} events, {args.matters} matters, core: {status}")
    print(f"instructions/event: {(full - base) / events:,.0f}  (run {full:,} - base {base:,})")


if __name__ == "__main__":
    main()
