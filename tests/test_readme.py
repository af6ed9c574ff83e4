"""Every Python snippet of the README runs as written, in order, as a reader would paste them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.S | re.M)


def test_the_readme_has_python_snippets():
    assert len(python_blocks()) >= 3


@pytest.mark.slow  # renders, mines and fits an SAE on the demo model: ~1-2 min on a 2-core CPU
def test_every_readme_python_snippet_runs_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))  # the activation cache goes to ~/.cache: keep it here
    namespace: dict = {}
    for i, block in enumerate(python_blocks()):
        try:
            exec(compile(block, f"README.md python block {i + 1}", "exec"), namespace)
        except Exception as e:  # name the block, so a broken snippet is easy to find
            pytest.fail(f"README python block {i + 1} fails: {type(e).__name__}: {e}\n{block}")
    # The snippets did what they say: a table of the split was printed, and a run holds the results.
    assert "split by SAE 'topk8x_k1'" in capsys.readouterr().out
    run = namespace["cv"].open_run("runs/mine")
    assert len(run.units(layer="mixed3b", kind="channel")) == 8
    assert run.split("mixed3b:1") is not None and (tmp_path / "mixed3b_1.png").is_file()
