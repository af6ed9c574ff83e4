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


def test_type_checkers_see_every_lazy_name():
    """The ``TYPE_CHECKING`` imports (what IDEs read) name exactly the lazily exported names."""
    import ast
    from pathlib import Path

    tree = ast.parse(Path(cv.__file__).read_text())
    block = next(n for n in tree.body if isinstance(n, ast.If) and getattr(n.test, "id", "") == "TYPE_CHECKING")
    seen = {a.asname or a.name for imp in block.body for a in imp.names}
    assert seen == set(cv.__all__)
