"""The opt-in allocator setting that the CLI applies: it must really stop the per-step page faults."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import resource, sys
import torch
from circuitsviz.models import load_model
from circuitsviz.runtime import retain_freed_memory
applied = retain_freed_memory() if sys.argv[1] == "1" else None
model = load_model("inceptionv1", pretrained=False)
x = torch.rand(8, 3, 140, 140, requires_grad=True)

def step():  # one optimisation step of a render: forward to mixed3a and back to the image
    model.activations(x, "mixed3a", grad=True, check=False)["mixed3a"].mean().backward()

with model.frozen():
    for _ in range(2):  # warm up
        step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(6):
        step()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(retain: bool) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", PROBE, "1" if retain else "0"], capture_output=True, text=True,
                         check=True).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc only")
def test_retaining_freed_memory_stops_page_faults_on_reused_buffers():
    _, default = _faults(False)
    applied, retained = _faults(True)
    assert applied == "True"
    # Each step maps tens of MB afresh by default (thousands of 4 kB faults); kept memory is reused.
    assert default > 6 * 2000
    assert retained < default / 5


def test_the_command_line_applies_it_and_importing_the_library_does_not(monkeypatch):
    import circuitsviz.cli as cli

    calls = []
    monkeypatch.setattr(cli, "retain_freed_memory", lambda: calls.append(1) or True)
    assert cli.main(["layers", "--model", "demo", "--no-pretrained"]) == 0
    assert calls == [1]
    # The library itself leaves the process allocator alone: nothing else calls it.
    import pathlib

    import circuitsviz
    root = pathlib.Path(circuitsviz.__file__).parent
    allowed = {root / "runtime.py", root / "cli" / "__init__.py"}
    callers = [p for p in root.rglob("*.py") if "retain_freed_memory()" in p.read_text() and p not in allowed]
    assert callers == [], callers
