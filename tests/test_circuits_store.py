"""Circuits in a run (store schema 3): round trip, settings keys, and the upgrade of a schema-2 run."""

from __future__ import annotations

import sqlite3

import pytest
import torch

from circuitsviz.circuits import Circuit, Connection, Faithfulness
from circuitsviz.store import SettingsChangedError, open_run, schema


def _circuit(unit="mixed3b:4", top=2) -> Circuit:
    k = torch.arange(9, dtype=torch.float64).reshape(3, 3) / 7
    pos = [Connection("mixed3a:43", 2.5, k, "1x1", ("conv",), True),
           Connection("mixed3a:7", 1.25, -k + 3, "3x3", ("reduce", "conv3"), False)][:top]
    neg = [Connection("mixed3a:9", -0.75, k.flip(0) - 1, None, (), False)]
    return Circuit(unit, "mixed3a", "inputs", pos, neg)


def _faithfulness(unit="mixed3b:4") -> Faithfulness:
    return Faithfulness(unit, "mixed3a", 5, "zero", "act_x_grad", ["mixed3a:43", "mixed3a:7"], 3.5, (3.0, 4.0),
                        torch.tensor([0.25, 0.75, 0.5], dtype=torch.float64), (0.26, 0.74), baseline=5.0)


def test_a_circuit_and_its_faithfulness_read_back_as_written(tmp_path):
    c, f = _circuit(), _faithfulness()
    with open_run(tmp_path / "r", create=True) as run:
        assert run.add_circuit(c) == 3
        run.add_faithfulness(f, data={"kind": "procedural", "seed": 10000, "n": 40}, examples=32)
    with open_run(tmp_path / "r") as run:  # a reader
        back = run.circuit("mixed3b:4", source="mixed3a")
        assert back.to_rows() == c.to_rows()
        assert back.positive[0].kernel.shape == (3, 3) and back.positive[0].direct
        assert run.circuit("mixed3b:4", target="mixed4a") is None
        assert run.circuits("mixed3b:4") == [("inputs", "mixed3a")]
        assert run.read_by("mixed3a:7") == [("mixed3b:4", 1.25)]
        [g] = run.faithfulness("mixed3b:4")
        assert (g.top_drop, g.top_interval, g.random_interval, g.draws, g.examples) == (3.5, (3.0, 4.0), (0.26, 0.74), 3, 32)
        assert g.random_drop == pytest.approx(0.5) and g.ratio == pytest.approx(7.0) and g.passes
        assert g.data["seed"] == 10000 and g.top_sources == ["mixed3a:43", "mixed3a:7"]
        assert {u.id for u in run.units(layer="mixed3a")} == {"mixed3a:43", "mixed3a:7", "mixed3a:9"}


def test_a_circuit_with_other_settings_is_refused_unless_overwritten(tmp_path):
    with open_run(tmp_path / "r", create=True) as run:
        run.add_circuit(_circuit(top=2))
        run.add_circuit(_circuit(top=2))  # the same settings: replaced in place
        with pytest.raises(SettingsChangedError, match="top=2 \\(now 1\\)"):
            run.add_circuit(_circuit(top=1))
        with pytest.raises(SettingsChangedError, match="hash"):
            run.add_circuit(_circuit(top=2), input_size=128)
        run.add_circuit(_circuit(top=1), overwrite=True)
        assert [c.other for c in run.circuit("mixed3b:4", source="mixed3a").positive] == ["mixed3a:43"]


def test_a_feature_circuit_needs_its_sae_in_the_run(tmp_path):
    with open_run(tmp_path / "r", create=True) as run, pytest.raises(Exception, match="SAE mixed3b/topk8x_k1"):
        run.add_circuit(_circuit(unit="mixed3b/topk8x_k1:35"))


def test_a_schema_2_run_is_upgraded_keeping_its_rows(tmp_path):
    path = tmp_path / "old"
    path.mkdir()
    conn = sqlite3.connect(path / "index.sqlite")
    # the previous version's schema is today's without the circuit tables
    conn.executescript(schema.SCHEMA.replace(schema.CIRCUIT_TABLES, "").replace(schema.SPLIT_TOTALS, "")
                       + "PRAGMA user_version = 2;")
    conn.execute("INSERT INTO units VALUES ('mixed3b:4', 'mixed3b', 4, 'channel', NULL, NULL, NULL)")
    conn.execute("INSERT INTO done VALUES ('mine', 'mixed3b', 1.0, '{\"k\": 8}', 1)")
    conn.commit()
    conn.close()
    with pytest.raises(schema.StoreVersionError, match="older store schema 2"):
        open_run(path)  # a reader never writes
    with open_run(path, writable=True) as run:
        assert [u.id for u in run.units()] == ["mixed3b:4"] and run.step("mine", "mixed3b").settings == {"k": 8}
        run.add_circuit(_circuit())
        run.add_faithfulness(_faithfulness())
    with open_run(path) as run:
        assert run._rows("PRAGMA user_version")[0][0] == schema.SCHEMA_VERSION == 5
        assert run.circuit("mixed3b:4", source="mixed3a").to_rows() == _circuit().to_rows()


def test_cli_writes_the_circuit_and_its_faithfulness_to_a_run(tmp_path, capsys):
    from circuitsviz.circuits import circuit
    from circuitsviz.cli import main
    from circuitsviz.models import load_model

    out = tmp_path / "r"
    assert main(["circuit", "--model", "demo", "--device", "cpu", "--unit", "mixed3b:4", "--source", "mixed3a",
                 "--top", "3", "--data", "procedural", "--images", "16", "--faithfulness", "--n", "2",
                 "--run", str(out)]) == 0
    assert f"to {out}" in capsys.readouterr().out
    expect = circuit(load_model("demo"), "mixed3b:4", source="mixed3a", top=3)
    with open_run(out) as run:
        got = run.circuit("mixed3b:4", source="mixed3a").to_rows()
        assert [(r["other"], r["sign"]) for r in got] == [(r["other"], r["sign"]) for r in expect.to_rows()]
        assert [r["total"] for r in got] == pytest.approx([r["total"] for r in expect.to_rows()], rel=1e-5)
        assert run.info().model == "demo"
        [f] = run.faithfulness("mixed3b:4")
        assert f.n == 2 and len(f.top_sources) == 2 and f.data["kind"] == "procedural" and f.data["limit"] == 16
