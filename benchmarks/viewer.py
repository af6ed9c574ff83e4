"""How long the unit and compare pages take on the demo run, cold and warm.

Budgets (issue 12): a cold unit page under 1.5 s, a warm one under 0.5 s.

- *cold*: the first view in a freshly started viewer process (Streamlit's caches empty), with the
  example crops already drawn (``prerender``, as a study run leaves them);
- *first ever*: the same with an empty render cache too (every crop drawn on the spot);
- *warm*: a rerun of the page in the same process (median of 5);
- *CPU*: the CPU seconds of the thread that runs the page (less sensitive than wall time to a
  busy machine).

Each time is the page script, timed from inside the thread Streamlit's AppTest runs it on: what
a served viewer spends on one page view before the browser can draw (the browser's own drawing
comes on top). *AppTest cold* is the whole first ``AppTest.run()``: it adds the harness's own
start-up (scanning the installed packages for components, which a served viewer does once at
launch, not per page). Every cold figure comes from a new process.

    python benchmarks/viewer.py [--run runs/demo]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUDGET = {"cold": 1.5, "warm": 0.5}
PAGES = {"unit": "mixed3b:1", "compare": "mixed3b:1"}
# The viewer's entry point (apps/viewer.py), timed from inside its script thread.
TIMED_APP = """
import json, os, time
_t0, _c0 = time.perf_counter(), time.thread_time()
try:
    from circuitsviz.viewer.app import main
    main()
finally:
    with open(os.environ["CIRCUITSVIZ_BENCH_TIMES"], "a") as _f:
        _f.write(json.dumps([time.perf_counter() - _t0, time.thread_time() - _c0]) + "\\n")
"""


def measure(run: str, page: str, unit: str, warm_runs: int = 5) -> dict:
    """In this (fresh) process: the first run of ``page`` and the median of ``warm_runs`` reruns."""
    from streamlit.testing.v1 import AppTest

    os.environ["CIRCUITSVIZ_RUN"] = run
    # The viewer reads its run from ``streamlit run .../viewer.py -- RUN``'s argv before the
    # environment; this script is also called viewer.py, so its own argv must not look like that.
    sys.argv = [sys.argv[0]]
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "times.jsonl"
        os.environ["CIRCUITSVIZ_BENCH_TIMES"] = str(log)
        at = AppTest.from_string(TIMED_APP, default_timeout=300)
        at.query_params.update({"page": page, "unit": unit})
        t0 = time.perf_counter()
        at.run()
        harness = time.perf_counter() - t0
        check_shown(at, page, unit)
        for _ in range(warm_runs):
            at.run()
        check_shown(at, page, unit)
        times = [json.loads(line) for line in log.read_text().splitlines()]
    (cold, cold_cpu), warm = times[0], times[1:]
    return {"cold": cold, "cold_cpu": cold_cpu, "warm": statistics.median(w for w, _ in warm),
            "warm_cpu": statistics.median(c for _, c in warm), "apptest_cold": harness}


def check_shown(at, page: str, unit: str) -> None:
    """Time only a page that shows the unit: an error page is fast and would pass any budget."""
    if at.exception:
        raise RuntimeError(f"{page} raised: {at.exception[0].value}")
    if at.error or not any(unit in t.value for t in at.title):
        raise RuntimeError(f"{page} did not show {unit}: errors {[e.value for e in at.error]}, "
                           f"titles {[t.value for t in at.title]}")


def in_fresh_process(run: str, page: str, unit: str, cache: str) -> dict:
    env = {**os.environ, "CIRCUITSVIZ_CACHE": cache, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, __file__, "--one", page, unit, "--run", run], env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", default=str(ROOT / "runs" / "demo"), help="a demo run (make demo writes runs/demo)")
    p.add_argument("--one", nargs=2, metavar=("PAGE", "UNIT"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        import logging

        logging.disable(logging.WARNING)
        print(json.dumps(measure(args.run, *args.one)))
        return
    if not (Path(args.run) / "index.sqlite").is_file():
        sys.exit(f"no run at {args.run}: make one with `circuitsviz demo --no-serve --out {args.run}`")
    from circuitsviz.store import open_run
    from circuitsviz.store.render import prerender

    with tempfile.TemporaryDirectory() as empty, tempfile.TemporaryDirectory() as drawn:
        t0 = time.perf_counter()
        n = prerender(open_run(args.run), cache_dir=Path(drawn) / "renders")
        print(f"prerender: {n} example views drawn in {time.perf_counter() - t0:.1f} s")
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (wall times grow with it; CPU seconds less)")
        print(f"{'page':<9} {'first ever':>11} {'cold':>8} {'cold CPU':>9} {'warm':>8} {'warm CPU':>9} "
              f"{'AppTest cold':>13}   cold/{BUDGET['cold']} s  warm/{BUDGET['warm']} s")
        for page, unit in PAGES.items():
            first = in_fresh_process(args.run, page, unit, empty)  # fills `empty` as it goes
            t = in_fresh_process(args.run, page, unit, drawn)
            print(f"{page:<9} {first['cold']:>10.2f}s {t['cold']:>7.2f}s {t['cold_cpu']:>8.2f}s {t['warm']:>7.2f}s "
                  f"{t['warm_cpu']:>8.2f}s {t['apptest_cold']:>12.2f}s   {t['cold'] / BUDGET['cold']:>10.2f}  "
                  f"{t['warm'] / BUDGET['warm']:>10.2f}")


if __name__ == "__main__":
    main()
