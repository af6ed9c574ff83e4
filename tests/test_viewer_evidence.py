"""The Evidence page shows a run's evidence.json: known numbers in, the same numbers on the page."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from circuitsviz.evaluate import Evaluation, Evidence, Recovery, UnitScores
from circuitsviz.store.synthetic import write_synthetic_run
from circuitsviz.viewer.heldout import HOW_TO, evaluation_of

VIEWER = str(Path(__file__).resolve().parents[1] / "apps" / "viewer.py")
T1, T2 = 12.7062047, 4.3026527  # Student t 0.975 quantiles, 1 and 2 degrees of freedom (printed tables)
NAN = float("nan")


def scores(method, k, seed, concept_count, purity, fvu=NAN, l0=NAN, dead=NAN, fires=None):
    n = len(concept_count)
    return UnitScores(method, k, seed, 2, fires or [5] * n, concept_count, purity, [0] * n, fvu, l0, dead)


# Per seed (scored units only): mean concept count, one-concept share, FVU. Hand-picked so each
# group's mean and 95% interval over its two seeds is known: mean ± T1 * |a - b| / 2.
KNOWN = {
    ("SAE features", "1"): [scores("sae", 1, s, cc, [p] * 4, fvu, 1.0, 0.0) for s, cc, p, fvu in
                            [(0, [1, 1, 1, 2], 0.62, 0.10), (1, [1, 1, 2, 2], 0.66, 0.20)]],
    ("SAE features", "2"): [scores("sae", 2, s, cc, [0.7] * 4, fvu, 2.0, 0.0) for s, cc, fvu in
                            [(0, [1, 2, 2, 2], 0.05), (1, [1, 2, 2, 2], 0.07)]],
    ("k-means", "–"): [scores("kmeans", None, s, cc, [0.7] * 4, 0.3, 1.0, 0.0) for s, cc in
                       [(0, [1, 1, 1, 1]), (1, [1, 1, 1, 3])]],
    ("random TopK", "1"): [scores("random", 1, s, [2, 2, 2, 3], [0.6] * 4, fvu, 1.0, 0.0) for s, fvu in
                           [(0, 0.5), (1, 0.7)]],
    ("random TopK", "2"): [scores("random", 2, s, [3, 3, 3, 3], [0.6] * 4, 0.9, 2.0, 0.0) for s in (0, 1)],
}
CHANNELS = scores("channels", None, None, [3, 2, 4, 0], [0.5, 0.6, 0.7, NAN], fires=[5, 5, 5, 0])
RECOVERY = {0: [1, 1, 0, 0], 1: [1, 1, 1, 0], 2: [1, 0, 0, 0]}   # judge hits per feature, per SAE seed


def evidence() -> Evidence:
    ev = Evaluation("mixed4e", 4, 100, 50, 1600, 2, {}, {}, CHANNELS, [r for rs in KNOWN.values() for r in rs])
    rec = [Recovery(f"SAE features, seed {s}", {}, [{"unit": f"mixed4e/sae:{i}", "concept": 1, "judged": 1 if h else 2,
                                                       "confidence": 0.9, "hit": bool(h), "fires": 0.5}
                                                      for i, h in enumerate(hits)]).to_dict()
           for s, hits in RECOVERY.items()]
    rec.append(Recovery("class logits", {}, [{"unit": "logits:0", "concept": 0, "judged": 0, "confidence": 0.8,
                                              "hit": True, "fires": None}] * 2).to_dict())
    return Evidence({"data_seed": 1, "eval_seed": 2, "fv": {"steps": 512, "images": 4}}, ev.to_dict(), ev.table(), rec)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("evidence")
    bare = write_synthetic_run(base / "bare").path
    with_ev = base / "with"
    shutil.copytree(bare, with_ev)
    (with_ev / "evidence.json").write_text(json.dumps(evidence().to_dict()))
    return bare, with_ev


@pytest.fixture(autouse=True)
def render_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CIRCUITSVIZ_CACHE", str(tmp_path / "cache"))


def app(served, page: str = "evidence", **params) -> AppTest:
    os.environ["CIRCUITSVIZ_RUN"] = str(served)
    at = AppTest.from_file(VIEWER, default_timeout=60)
    at.query_params.update({"page": page, **params})
    return at.run()


def interval(cell: str, percent: bool = False) -> tuple[float, float]:
    """``'1.38 ± 1.59'`` or ``'62.5% ± 3.2%'`` -> (mean, half width)."""
    a, _, b = cell.partition("±")
    f = (lambda s: float(s.strip().rstrip("%")) / (100 if percent else 1))
    return f(a), f(b) if b else 0.0


def close(shown: tuple[float, float], mean: float, half: float, tol: float) -> bool:
    return abs(shown[0] - mean) <= tol and abs(shown[1] - half) <= tol


def seed_means(group):
    cc = [sum(r.concept_count) / 4 for r in group]
    mono = [sum(c == 1 for c in r.concept_count) / 4 for r in group]
    return cc, mono


def test_the_held_out_table_shows_each_rows_known_means_and_intervals(runs):
    at = app(runs[1])
    assert not at.exception and not at.error
    table = at.dataframe[0].value
    rows = {(r["units"], r["k"]): r for r in table.to_dict("records")}
    ch = rows[("channels", "–")]  # scored: the three channels firing on >= 2 images; one silent
    assert (ch["scored"], ch["concepts"], ch["mono"], ch["dead"]) == ("3/4", "3.00", "0.0%", "25.0%")
    for key, group in KNOWN.items():
        (c0, c1), (m0, m1) = seed_means(group)
        assert close(interval(rows[key]["concepts"]), (c0 + c1) / 2, T1 * abs(c0 - c1) / 2, 0.006), key
        assert close(interval(rows[key]["mono"], True), (m0 + m1) / 2, T1 * abs(m0 - m1) / 2, 0.0006), key
        f0, f1 = group[0].fvu, group[1].fvu
        assert close(interval(rows[key]["fvu"]), (f0 + f1) / 2, T1 * abs(f0 - f1) / 2, 0.0006), key
        assert rows[key]["seeds"] == "2" and rows[key]["scored"] == "4.0/4"
    # purity gain of the SAE at k=1: (0.62 + 0.66) / 2 - 0.6 (the channels' mean purity)
    assert close(interval(rows[("SAE features", "1")]["gain"]), 0.04, T1 * 0.02, 0.0006)
    text = " ".join(str(m.value) for m in at.markdown) + " ".join(str(c.value) for c in at.caption)
    # SAE k=1: 1.375 concepts <= 0.5 * 3.0 (met); 62.5% mono >= 60% (met); gain interval low 0.04 - 0.25 (missed)
    assert ":green[met]: concept count <= 0.5x the channels'" in text
    assert ":green[met]: >= 60% monosemantic" in text
    assert ":red[missed]: purity gain interval > 0.05" in text
    assert "fires on at least 2" in text and "fitted on 100 training images" in text
    assert "50 other images (data seed 1; scored on data seed 2)" in text


def test_the_trade_off_plot_has_one_point_per_dictionary_and_k(runs):
    at = app(runs[1])
    import pyarrow as pa  # Streamlit ships the chart's data beside its spec, as Arrow

    chart = at.get("vega_lite_chart")[0].proto
    points = pa.ipc.open_stream(chart.data.data).read_all().to_pylist()
    assert sorted((p["dictionary"], p["k"]) for p in points) == sorted(KNOWN)
    for p in points:
        (c0, c1), (m0, m1) = seed_means(KNOWN[(p["dictionary"], p["k"])])
        f0, f1 = (r.fvu for r in KNOWN[(p["dictionary"], p["k"])])
        assert math.isclose(p["mono"], (m0 + m1) / 2) and math.isclose(p["fvu"], (f0 + f1) / 2)
        assert math.isclose(p["fvu_high"] - p["fvu"], T1 * abs(f0 - f1) / 2, rel_tol=1e-4, abs_tol=1e-9)
        assert math.isclose(p["mono_high"] - p["mono"], T1 * abs(m0 - m1) / 2, rel_tol=1e-4, abs_tol=1e-9)


def test_fv_recovery_per_seed_and_its_mean_over_seeds(runs):
    at = app(runs[1])
    rows = {r["units"]: r for r in at.dataframe[1].value.to_dict("records")}
    for seed, hits in RECOVERY.items():
        r = rows[f"SAE features, seed {seed}"]
        assert (r["judged"], r["hits"], r["recovery"]) == (4, sum(hits), f"{sum(hits) / 4:.1%}")
        assert r["render fires the unit"] == "50%"
    assert (rows["class logits"]["hits"], rows["class logits"]["recovery"]) == (2, "100.0%")
    mean = next(str(m.value) for m in at.markdown if "mean over 3 SAE seeds" in str(m.value))
    # per seed 50%, 75%, 25%: mean 50%, sd 25%, half width T2 * 0.25 / sqrt(3)
    shown = interval(re.search(r"seeds: ([^*]+)\*\*", mean).group(1), percent=True)
    assert close(shown, 0.5, T2 * 0.25 / math.sqrt(3), 0.0006)
    captions = " ".join(str(c.value) for c in at.caption)
    assert "the render makes the unit fire in 50%" in captions and "Chance: 1/" in captions


def test_a_run_without_evidence_says_how_to_make_it(runs):
    at = app(runs[0])
    assert not at.exception and not at.error
    assert [str(i.value) for i in at.info] == [HOW_TO]
    assert "circuitsviz demo" in HOW_TO and "circuitsviz.evaluate.evidence(" in HOW_TO


def test_compare_links_to_the_evidence_page_only_when_the_run_has_it(runs):
    def evidence_links(at):
        return [e.proto.page for e in at.main.get("page_link") if e.proto.label.startswith("Held-out evidence")]

    assert len(evidence_links(app(runs[1], "compare"))) == 1
    assert evidence_links(app(runs[0], "compare")) == []
    side = {e.proto.label for e in app(runs[0], "compare").sidebar.get("page_link")}
    assert "Evidence" in side


def test_a_damaged_evidence_file_is_one_line_not_a_traceback(tmp_path, runs):
    run = tmp_path / "run"
    shutil.copytree(runs[0], run)
    (run / "evidence.json").write_text('{"settings": {}, "evaluation": {"layer": "x"}, "table": ""}')
    at = app(run)
    assert not at.exception
    assert len(at.error) == 1 and "evidence.json" in at.error[0].value


def test_the_page_rebuilds_the_evaluation_the_file_was_written_from():
    ev = evidence()
    rebuilt = evaluation_of(Evidence.from_dict(json.loads(json.dumps(ev.to_dict()))))
    assert rebuilt.table() == ev.table and rebuilt.to_dict() == ev.evaluation
