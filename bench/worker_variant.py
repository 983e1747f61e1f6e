"""An EXPERIMENT, not a fix: run ``waterwatch worker`` with one cost taken out, to measure that cost.

    python bench/worker_variant.py [--no-alert-flush] [--linger SECONDS] -- worker --partitions 8 ...

The benchmarks start this instead of ``waterwatch`` when given ``--variant``.
The worker code is the project's own (streams/worker.py), patched in this
process only:

``--no-alert-flush``
    The agent does not wait for the acknowledgement of a batch's alerts and
    dead letters before it writes the batch's states (``Worker._await_sent``
    is a no-op); Faust's own flush before each offset commit still runs.  This
    breaks the worker's "alerts are out before the state says they fired"
    rule, so it only shows what that wait costs.
``--gc-log``
    Nothing changed; every cyclic-GC pass of 20 ms or more is logged (generation, duration, objects
    collected), and a summary of all passes every 10 s, to see GC pauses with large indexes.
``--linger SECONDS``
    Faust's ``producer_linger`` (aiokafka ``linger_ms``); the worker's default is
    ``WorkerSettings.producer_linger`` (5 ms; Faust's own default is 0, one
    request per changelog write).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    argv = sys.argv[1:]
    if "--" not in argv:
        raise SystemExit("usage: worker_variant.py [--no-alert-flush] [--linger S] -- worker ARGS")
    cut = argv.index("--")
    ap = argparse.ArgumentParser()
    ap.add_argument("--no-alert-flush", action="store_true")
    ap.add_argument("--linger", type=float, default=None)
    ap.add_argument("--gc-log", action="store_true")
    opts = ap.parse_args(argv[:cut])

    import faust

    import streams.worker as sw

    real_app = faust.App

    class VariantApp(real_app):  # type: ignore[misc,valid-type]
        def __init__(self, *args: Any, **kw: Any) -> None:
            if opts.linger is not None:
                kw["producer_linger"] = opts.linger
            super().__init__(*args, **kw)

    faust.App = VariantApp  # type: ignore[misc]  # streams.worker calls faust.App(...)

    if opts.no_alert_flush:

        async def no_wait(self: Any, sends: Any) -> None:
            return None

        sw.Worker._await_sent = no_wait  # type: ignore[method-assign]

    import logging

    if opts.gc_log:
        import gc
        import time

        glog = logging.getLogger("waterwatch.worker")
        started: list[float] = [0.0]
        totals = {0: [0, 0.0], 1: [0, 0.0], 2: [0, 0.0]}
        last_report = [time.monotonic()]

        def on_gc(phase: str, info: dict[str, Any]) -> None:
            if phase == "start":
                started[0] = time.perf_counter()
                return
            took = time.perf_counter() - started[0]
            gen = int(info.get("generation", -1))
            if gen in totals:
                totals[gen][0] += 1
                totals[gen][1] += took
            if took >= 0.02:
                glog.warning(
                    "GC pause: generation %d took %.0f ms (%d collected)", gen, took * 1e3, info.get("collected", 0)
                )
            now = time.monotonic()
            if now - last_report[0] >= 10:
                last_report[0] = now
                glog.warning("GC totals: %s", {g: f"{n} passes, {t:.2f} s" for g, (n, t) in totals.items()})

        gc.callbacks.append(on_gc)

    logging.getLogger("waterwatch.worker").warning(
        "EXPERIMENTAL VARIANT: no_alert_flush=%s linger=%s", opts.no_alert_flush, opts.linger
    )
    from waterwatch.cli import main as cli_main

    sys.argv = ["waterwatch", *argv[cut + 1 :]]
    cli_main()


if __name__ == "__main__":
    main()
