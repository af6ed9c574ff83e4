"""The viewer's pages under Streamlit's AppTest, on a small synthetic run."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs

import pytest
from streamlit.testing.v1 import AppTest

from circuitsviz.store import open_run
from circuitsviz.store.synthetic import write_synthetic_run

VIEWER = str(Path(__file__).resolve().parents[1] / "apps" / "viewer.py")


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    return write_synthetic_run(tmp_path_factory.mktemp("viewer") / "run")


def app(run, page: str, **params) -> AppTest:
    at = AppTest.from_file(VIEWER, default_timeout=60)
    at.query_params.update({"run": str(run), "page": page, **params})
    return at.run()


def texts(at, kind: str) -> list[str]:
    return [str(e.value) for e in at.get(kind)]


def links(at) -> list[tuple[str, str]]:
    return [(e.proto.label, e.proto.query_string) for e in at.get("page_link")]


def linked_units(at, label: str | None = None) -> list[str]:
    """The unit ids that the page's links carry (optionally only links with this label)."""
    queries = [parse_qs(q) for lab, q in links(at) if label in (None, lab)]
    return [q["unit"][0] for q in queries if "unit" in q]


@pytest.mark.parametrize("page, title", [
    ("layer", "mixed3b · 12 channels"),        # the first layer by default
    ("unit", "mixed3b:0"),                     # the first channel
    ("feature", "mixed4e/sae:0"),              # the first feature
    ("compare", "mixed4e:0 and its SAE features"),  # the first split channel
])
def test_every_page_renders_its_default_view_without_exceptions(fake, page, title):
    at = app(fake.path, page)
    assert not at.exception and not at.error
    assert [t.value for t in at.title] == [title]


@pytest.mark.parametrize("page, params, title", [
    ("layer", {"layer": "mixed4e"}, "mixed4e · 16 channels"),
    ("unit", {"unit": "mixed4e:7"}, "mixed4e:7"),
    ("feature", {"unit": "mixed4e/sae:2"}, "mixed4e/sae:2"),
    ("compare", {"unit": "mixed3b:4"}, "mixed3b:4 and its SAE features"),
])
def test_query_params_select_the_unit_and_stay_in_the_url(fake, page, params, title):
    at = app(fake.path, page, **params)
    assert not at.exception and [t.value for t in at.title] == [title]
    for k, v in params.items():
        assert at.query_params[k] == v


def test_unit_page_shows_the_neuron_view_from_the_store(fake):
    uid = "mixed4e:3"
    at = app(fake.path, "unit", unit=uid)
    run = open_run(fake.path)
    stats = run.stats(uid)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["max activation"] == f"{stats.max:.3g}"
    assert metrics["polysemanticity"] == f"{stats.polysemanticity:.3g}"
    branch = run.layer("mixed4e").branch_of(3)
    assert any(f"{branch} branch" in c for c in texts(at, "caption"))
    writers = {f.unit_id for f, _ in run.features_of_channel("mixed4e", 3)}
    assert {u for u in linked_units(at) if "/" in u} == writers


def test_missing_data_shows_placeholders_naming_the_cli_command(fake):
    at = app(fake.path, "unit", unit=fake.bare_channel)
    assert not at.exception and not at.error
    infos, code = " ".join(texts(at, "info")), " ".join(texts(at, "code"))
    assert "No feature visualization" in infos and "No dataset examples" in infos
    assert f"circuitsviz visualize --model demo --layer mixed4e --channels 15 --out {fake.path}" in code
    assert "circuitsviz mine" in code

    at = app(fake.path, "compare", unit="mixed3b:2")  # no SAE on mixed3b
    assert not at.exception and "circuitsviz split" in " ".join(texts(at, "code"))

    at = app(fake.path, "feature", unit=fake.features[-1])  # a feature with no visualization or examples
    assert not at.exception and "circuitsviz split" in " ".join(texts(at, "code"))


def test_an_unknown_unit_id_shows_an_error_and_a_way_back(fake):
    for page in ("unit", "feature", "compare"):
        at = app(fake.path, page, unit="mixed4e:999", layer="mixed4e")
        assert not at.exception
        assert any("Unknown unit id 'mixed4e:999'" in e for e in texts(at, "error"))
        back = [q for label, q in links(at) if label == "Back to the layer overview"]
        assert len(back) == 1 and back[0].endswith("&layer=mixed4e")


def test_an_unparseable_unit_id_and_a_channel_on_the_feature_page_are_explained(fake):
    at = app(fake.path, "unit", unit="not a unit")
    assert not at.exception and any("cannot parse unit id" in e for e in texts(at, "error"))
    at = app(fake.path, "feature", unit="mixed4e:1")
    assert not at.exception and any("is a channel, not an SAE feature" in e for e in texts(at, "error"))


def test_a_bad_run_path_shows_a_clear_message(tmp_path):
    at = app(tmp_path / "missing", "unit")
    assert not at.exception and any("Cannot open run" in e and "no circuitsviz run" in e for e in texts(at, "error"))


def test_layer_grid_sorts_by_max_activation_and_filters_by_branch(fake):
    at = app(fake.path, "layer", layer="mixed4e")
    at.selectbox[1].set_value("max").run()
    run = open_run(fake.path)
    shown = [label for label, _ in links(at)]
    stats = run.layer_stats("mixed4e")
    with_stats = [u for u in shown if u in stats]
    assert with_stats == sorted(with_stats, key=lambda u: -stats[u].max)
    assert shown[-1] == fake.bare_channel  # no statistics: sorted last
    at.multiselect[0].set_value(["3x3"]).run()
    layer = run.layer("mixed4e")
    shown = [label for label, _ in links(at)]
    assert shown and all(layer.branch_of(int(u.split(":")[1])) == "3x3" for u in shown)
    assert len(shown) == sum(1 for c in range(layer.channels) if layer.branch_of(c) == "3x3")


def test_compare_shows_the_split_features_in_rank_order(fake):
    at = app(fake.path, "compare", unit=fake.split_channel)
    split = open_run(fake.path).split(*fake.split_channel.split(":"))
    assert linked_units(at, "open feature") == [f.unit_id for f in split.features]


def test_unit_page_names_the_visualization_kinds_still_missing(tmp_path):
    import numpy as np

    run = open_run(tmp_path / "run", create=True)
    run.set_info(model="demo", input_size=64)
    run.put_layer("mixed3b", 2, 8, 8)
    run.add_units(["mixed3b:0", "mixed3b:1"])
    image = np.zeros((16, 16, 3), dtype=np.uint8)
    run.put_visualization("mixed3b:0", image, kind="positive")
    run.put_visualization("mixed3b:1", image, kind="positive")
    run.put_visualization("mixed3b:1", image, kind="negative")
    expected = {"mixed3b:0": {"--neuron", "--negative", "--diversity"}, "mixed3b:1": {"--neuron", "--diversity"}}
    for uid, flags in expected.items():
        at = app(tmp_path / "run", "unit", unit=uid)
        assert not at.exception
        code = "\n".join(texts(at, "code"))
        assert {f for f in ("--neuron", "--negative", "--diversity") if f in code} == flags
        assert f"--channels {uid.split(':')[1]} " in code
