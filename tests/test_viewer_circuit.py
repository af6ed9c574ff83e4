"""The viewer's circuit page under Streamlit's AppTest, on a small run written with the publishing API."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
import torch
from streamlit.testing.v1 import AppTest

from circuitsviz.circuits import Circuit, Connection, Faithfulness
from circuitsviz.store import open_run
from circuitsviz.store.synthetic import write_synthetic_run
from circuitsviz.viewer.circuit import colour

VIEWER = str(Path(__file__).resolve().parents[1] / "apps" / "viewer.py")
TARGET = "mixed4e:0"
K = torch.tensor([[3.0, 1.0, 0.0], [0.0, 0.5, 0.0], [0.0, 0.0, -0.25]], dtype=torch.float64)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    fake = write_synthetic_run(tmp_path_factory.mktemp("viewer") / "run")
    with open_run(fake.path, writable=True) as run:
        run.add_circuit(Circuit(TARGET, "mixed3b", "inputs",
                                [Connection("mixed3b:2", 4.25, K, "1x1", ("conv",), True),
                                 Connection("mixed3b:0", 1.0, K / 4, "3x3", ("reduce", "conv"))],
                                [Connection("mixed3b:5", -2.0, -K / 2, "3x3", ("reduce", "conv"))]))
        run.add_faithfulness(Faithfulness(TARGET, "mixed3b", 2, "zero", "act_x_grad", ["mixed3b:2", "mixed3b:0"],
                                          2.0, (1.5, 2.5), torch.tensor([0.1, 0.3]), (0.1, 0.3), baseline=3.0),
                             data={"kind": "procedural", "seed": 10000}, examples=32)
    return fake


@pytest.fixture(autouse=True)
def render_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CIRCUITSVIZ_CACHE", str(tmp_path / "cache"))


def app(fake, page: str, **params) -> AppTest:
    import os

    os.environ["CIRCUITSVIZ_RUN"] = str(fake.path)
    at = AppTest.from_file(VIEWER, default_timeout=60)
    at.query_params.update({"page": page, **params})
    return at.run()


def body(at) -> str:
    return "\n".join(str(e.proto.body) for e in at.get("html")).replace("&amp;", "&")


def circuit_links(at) -> list[str]:
    return [parse_qs(urlparse(h).query)["unit"][0] for h in re.findall(r'href="(\./circuit[^"]*)"', body(at))]


def test_circuit_page_shows_inputs_kernels_on_one_scale_and_the_faithfulness(served):
    at = app(served, "circuit", unit=TARGET)
    assert not at.exception and at.title[0].value == f"Circuit of {TARGET}"
    html = body(at)
    # the inputs in stored order (positive, then negative), each a link to its own circuit page
    assert re.findall(r'data-unit="([^"]+)"', html) == ["mixed3b:2", "mixed3b:0", "mixed3b:5"]
    assert circuit_links(at)[:3] == ["mixed3b:2", "mixed3b:0", "mixed3b:5"]
    assert re.findall(r'data-kernel="([^"]+)"', html) == ["3x3"] * 3
    # one colour scale for the page: the largest |weight| of any kernel (3.0) is the saturated red,
    # the same weight in the kernel scaled by 1/4 is a quarter as strong, the negative one blue
    assert re.findall(r'data-scale="([^"]+)"', html) == ["3"]
    assert colour(3.0, 3.0) == "#b2182b" and "background:#b2182b" in html
    assert f"background:{colour(0.75, 3.0)}" in html and f"background:{colour(-1.5, 3.0)}" in html
    assert colour(-1.5, 3.0) != colour(1.5, 3.0)
    # the faithfulness figure: 2.0 vs a random mean of 0.2 with disjoint intervals passes
    assert re.findall(r'data-faithfulness="([^"]+)" data-pass="(\d)"', html) == [("mixed3b", "1")]
    assert "ratio <b>10.00x</b>" in html


def test_walking_upstream_shows_the_target_downstream_and_pages_link_to_circuits(served):
    at = app(served, "circuit", unit="mixed3b:2")
    assert re.findall(r'data-downstream="([^"]+)"', body(at)) == [TARGET]
    assert TARGET in circuit_links(at)
    assert any(i.value for i in at.info)  # no inputs stored for mixed3b:2: says which command makes them
    for page in ("unit", "compare"):
        at = app(served, page, unit=served.split_channel)
        got = [parse_qs(e.proto.query_string) for e in at.main.get("page_link") if e.proto.label == "circuit"]
        assert [g["unit"] for g in got] == [[served.split_channel]], page
