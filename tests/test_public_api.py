import subprocess
import sys

import circuitsviz as cv


def test_every_advertised_name_resolves():
    assert [name for name in cv.__all__ if not hasattr(cv, name)] == []


def test_import_is_cheap_and_picks_no_device():
    code = "import sys, circuitsviz; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
    assert out.strip() == "False"  # nothing heavy, and so no device, at import time


def test_help_lists_every_capability():
    out = subprocess.run([sys.executable, "-m", "circuitsviz", "--help"], capture_output=True, text=True,
                         timeout=120).stdout
    for command in ("layers", "visualize", "mine", "merge", "fit-sae", "split", "serve", "data", "study", "demo"):
        assert f"    {command}" in out
