"""How long a unit page takes to render on a warm cache, for a run with 1,000 units.

Budget: one second (issue 6). Prints the cold and warm times of the Unit page under AppTest
(which includes Streamlit's own script overhead) and of the cached loader alone.

    python benchmarks/viewer.py
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from streamlit.testing.v1 import AppTest

from circuitsviz.store import open_run
from circuitsviz.store.synthetic import write_synthetic_run

VIEWER = str(Path(__file__).resolve().parents[1] / "apps" / "viewer.py")
BUDGET_S = 1.0


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        # 832 + 136 channels + 32 SAE features = 1,000 units (plus their spatial-neuron twins)
        fake = write_synthetic_run(Path(tmp) / "run", channels={"mixed4e": 832, "mixed3b": 136}, n_features=32,
                                   n_images=64)
        n = len(open_run(fake.path).units(kind="channel")) + len(fake.features)
        print(f"wrote a synthetic run with {n} units in {time.perf_counter() - t0:.1f} s")
        uid = "mixed4e:417"
        at = AppTest.from_file(VIEWER, default_timeout=120)
        at.query_params.update({"run": str(fake.path), "page": "unit", "unit": uid})
        t0 = time.perf_counter()
        at.run()
        cold = time.perf_counter() - t0
        assert not at.exception, at.exception
        warm = []
        for _ in range(5):
            t0 = time.perf_counter()
            at.run()
            warm.append(time.perf_counter() - t0)
        import sys

        sys.path.insert(0, str(Path(VIEWER).parent))
        from viewer_pages import common

        loader = []
        rev = common.revision(str(fake.path))
        for _ in range(20):
            t0 = time.perf_counter()
            common.load_unit(str(fake.path), rev, uid)
            loader.append(time.perf_counter() - t0)
        w = statistics.median(warm)
        print(f"unit page, cold cache (renders crops):  {cold:.3f} s")
        print(f"unit page, warm cache (median of 5):    {w:.3f} s   ratio to the {BUDGET_S:.0f} s budget: {w / BUDGET_S:.2f}")
        print(f"cached unit loader alone (median of 20): {statistics.median(loader) * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
