"""The viewer's pages under Streamlit's AppTest, on a small synthetic run."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from circuitsviz.errors import BadInputError, UnknownNameError
from circuitsviz.store import open_run
from circuitsviz.store.synthetic import write_synthetic_run
from circuitsviz.viewer import evidence
from circuitsviz.viewer.served import Served

VIEWER = str(Path(__file__).resolve().parents[1] / "apps" / "viewer.py")


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    return write_synthetic_run(tmp_path_factory.mktemp("viewer") / "run")


@pytest.fixture(autouse=True)
def render_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CIRCUITSVIZ_CACHE", str(tmp_path / "cache"))


def app(served, page: str, **params) -> AppTest:
    import os

    os.environ["CIRCUITSVIZ_RUN"] = str(served)  # what `circuitsviz serve RUN` passes on
    at = AppTest.from_file(VIEWER, default_timeout=60)
    at.query_params.update({"page": page, **params})
    return at.run()


def texts(at, kind: str) -> list[str]:
    return [str(e.value) for e in at.get(kind)]


def html_blocks(at) -> str:
    return "\n".join(str(e.proto.body) for e in at.get("html"))


def links(at) -> list[tuple[str, str]]:
    return [(e.proto.label, e.proto.query_string) for e in at.main.get("page_link")]


def sidebar_links(at) -> dict[str, dict]:
    return {e.proto.label: {k: v[0] for k, v in parse_qs(e.proto.query_string).items()}
            for e in at.sidebar.get("page_link")}


def hrefs(at) -> list[dict]:
    """The query parameters of every link drawn inside the HTML blocks (grids, cards)."""
    return [{"page": urlparse(h).path.strip("./"), **{k: v[0] for k, v in parse_qs(urlparse(h).query).items()}}
            for h in re.findall(r'href="(\./[^"]+)"', html_blocks(at).replace("&amp;", "&"))]


def attrs(at, name: str) -> list[str]:
    return re.findall(rf'{name}="([^"]*)"', html_blocks(at))


@pytest.mark.parametrize("page, title", [
    ("layer", "mixed3b · 12 channels"),        # the first layer by default
    ("unit", "mixed3b:0"),                     # the first channel
    ("feature", "mixed4e/sae:0"),              # the first feature of the first split
    ("compare", "mixed4e:0 and its SAE features"),  # the clearest (here: only) split
])
def test_every_page_renders_its_default_view_without_exceptions(fake, page, title):
    at = app(fake.path, page)
    assert not at.exception and not at.error
    assert [t.value for t in at.title] == [title]


@pytest.mark.parametrize("page, params, title", [
    ("layer", {"layer": "mixed4e"}, "mixed4e · 16 channels"),
    ("layer", {"layer": "mixed4e", "show": "features"}, "mixed4e · 8 SAE features"),
    ("unit", {"unit": "mixed4e:7"}, "mixed4e:7"),
    ("feature", {"unit": "mixed4e/sae:2"}, "mixed4e/sae:2"),
    ("compare", {"unit": "mixed3b:4"}, "mixed3b:4 and its SAE features"),
])
def test_query_params_select_the_unit_and_stay_in_the_url(fake, page, params, title):
    at = app(fake.path, page, **params)
    assert not at.exception and [t.value for t in at.title] == [title]
    for k, v in params.items():
        assert at.query_params[k] == [v] or at.query_params[k] == v


def test_unit_page_numbers_come_from_the_store_and_each_has_a_definition(fake):
    uid = "mixed4e:3"
    at = app(fake.path, "unit", unit=uid)
    run = open_run(fake.path)
    stats = run.stats(uid)
    metrics = {m.label: m for m in at.metric}
    assert metrics["max activation"].value == f"{stats.max:.3g}"
    assert metrics["concept count"].value == str(stats.scores["concept_count"])
    assert metrics["top-k purity"].value == f"{stats.scores['purity']:.3g}"
    assert all(m.proto.help for m in at.metric), [m.label for m in at.metric if not m.proto.help]
    branch = run.layer("mixed4e").branch_of(3)
    assert any(f"{branch} branch" in m for m in texts(at, "markdown"))


def test_unit_page_keeps_the_stated_order(fake):
    at = app(fake.path, "unit", unit="mixed4e:3")
    body = html_blocks(at)
    order = [body.index(marker) for marker in ('data-vis="positive"', 'class="cv-grid cv-top"', 'cv-concepts',
                                               'data-range=')]
    assert order == sorted(order)
    labels = [m for m in texts(at, "markdown") if m.startswith("**")]
    assert labels.index("**Activation per concept**: mean (bar) and max (pale)") < labels.index("**Activation density**") \
        < labels.index("**SAE features of this channel**")


def test_unit_page_shows_every_visualization_kind_at_true_size_or_double_with_click_to_enlarge(fake):
    uid = "mixed4e:3"
    at = app(fake.path, "unit", unit=uid)
    shown = re.findall(r'class="cv-cell" style="--w:(\d+)px" title="[^"]*" data-vis="(\w+)"><a href="([^"]+)" '
                       r'target="_blank"><img src="([^"]+)"', html_blocks(at))
    run = open_run(fake.path)
    stored = run.visualizations(uid) + run.visualizations(uid + "@4,4")
    assert sorted(k for _, k, _, _ in shown) == sorted(v.kind for v in stored)  # positive, negative, neuron, 3 diversity
    for width, kind, target, src in shown:
        assert int(width) == (2 if kind == "positive" else 1) * 64  # the renders are 64 px
        assert target == src  # a click opens the image itself, at full size
    assert not [e for e in at.expander if "Not rendered yet" in e.label]


def test_concept_chart_marks_the_concepts_at_half_the_best_mean(fake):
    uid = "mixed4e:3"
    at = app(fake.path, "unit", unit=uid)
    means = open_run(fake.path).stats(uid).scores["concept_means"]
    best = max(means.values())
    shown = dict(re.findall(r'data-concept="([^"]+)" data-mean="[^"]+" data-above="(\d)"', html_blocks(at)))
    assert set(shown) == set(means)
    assert {c for c, above in shown.items() if above == "1"} == {c for c, m in means.items() if m >= 0.5 * best}
    assert float(attrs(at, "data-threshold")[0]) == pytest.approx(0.5 * best, rel=1e-4)


@pytest.mark.parametrize("recorded", [True, False])
def test_concept_chart_shows_each_concepts_max_exact_where_the_top_examples_reach_it(tmp_path, recorded):
    """Known answer from mining a tiny model: mining records each concept's maximum, shown exactly.
    Without it (``recorded=False``: a run mined before maxima were recorded), a concept with an
    image among the top-k has its brute-force maximum shown exactly; any other concept gets a
    lower bound, marked, that the true maximum lies between it and the top-k cut-off."""
    from circuitsviz.mining import mine, write_to_run

    from .test_mining import BATCH, Images, brute_force, tiny_model

    class Labelled(Images):
        def label(self, i: int) -> int:
            return int(self.labels[i])

    model, data = tiny_model(), Labelled(n=30)
    run = open_run(tmp_path / "run", create=True)
    result = mine(model, data, "4", k=3, batch_size=BATCH, progress=False)
    if not recorded:
        result.layers["4"].label_max = None
    write_to_run(result, run, data, model=model)
    run.set_data_source({"kind": "test"}, classes=list(result.classes))  # the names examples' labels take
    run.close()
    _, peak, _, _ = brute_force(model, data, "4", 3)
    labels = data.labels.numpy()
    seen = {"exact": 0, "bound": 0}
    for u in range(peak.shape[1]):
        uid = f"4:{u}"
        at = app(tmp_path / "run", "unit", unit=uid)
        assert not at.exception
        shown = {c: (float(m), e == "1") for c, m, e in
                 re.findall(r'data-concept="([^"]+)" data-mean="[^"]+" data-above="\d" data-max="([^"]+)" '
                            r'data-exact="(\d)"', html_blocks(at))}
        cut = float(np.sort(peak[:, u])[-3])
        for c in range(3):
            true = float(peak[labels == c, u].max())
            value, exact = shown[f"c{c}"]
            if exact:
                assert value == pytest.approx(true, rel=1e-4)
            else:
                assert value <= true * (1 + 1e-4) and true <= cut * (1 + 1e-4)
            seen["exact" if exact else "bound"] += 1
    assert seen["exact"] and (seen["bound"] > 0) != recorded, seen  # both cases were exercised


def test_activation_range_rows_are_labelled_with_their_values_highest_first(fake):
    uid = "mixed4e:3"
    at = app(fake.path, "unit", unit=uid)
    q = open_run(fake.path).quantile_examples(uid)
    expected = []
    for b in sorted({e.bin for e in q}, reverse=True):
        vals = [e.value for e in q if e.bin == b]
        expected.append(f"{min(vals):.3g}–{max(vals):.3g}")
    assert attrs(at, "data-range") == expected


def test_histogram_is_log_scaled_and_marks_the_top_k_cut_off(fake):
    uid = "mixed4e:3"
    at = app(fake.path, "unit", unit=uid)
    run = open_run(fake.path)
    stats = run.stats(uid)
    last = max(i for i, c in enumerate(stats.hist_counts) if c > 0)
    assert [float(c) for c in attrs(at, "data-count")] == stats.hist_counts[:last + 1]  # stops where the data does
    heights = [float(h) for h in re.findall(r'class="cv-hbar"[^>]*style="height:([\d.]+)%"', html_blocks(at))]
    top = max(stats.hist_counts)
    assert heights == pytest.approx([100 * np.log10(c + 1) / np.log10(top + 1) for c in stats.hist_counts[:last + 1]],
                                    abs=0.06)
    cut = min(e.value for e in run.examples(uid))
    assert float(attrs(at, "data-cut")[0]) == pytest.approx(cut, rel=1e-5)
    zeros = 1 - stats.frac_positive
    caption = " ".join(texts(at, "caption"))
    assert f"top-{len(run.examples(uid))} cut-off {cut:.3g}" in caption and f"zero at {zeros:.1%}" in caption


def test_feature_page_names_its_channel_share_and_decoder_weights(fake):
    fid = fake.features[1]
    at = app(fake.path, "feature", unit=fid)
    run = open_run(fake.path)
    share = next(f.share for f in run.split(*fake.split_channel.split(":")).features if f.unit_id == fid)
    assert any(f"split from [{fake.split_channel}]" in m and f"share {share:.1%}" in m for m in texts(at, "markdown"))
    assert [int(c) for c in attrs(at, "data-channel")] == [c for c, _ in run.feature(fid).decoder_top]
    assert {"FVU", "L0", "dead", "dense"} <= {m.label for m in at.metric}


def test_channel_page_lists_its_split_features_with_links(fake):
    at = app(fake.path, "unit", unit=fake.split_channel)
    split = open_run(fake.path).split(*fake.split_channel.split(":"))
    assert attrs(at, "data-feature") == [f.unit_id for f in split.features]
    assert [h["unit"] for h in hrefs(at) if h["page"] == "feature"] == [f.unit_id for f in split.features]


def test_compare_shows_every_split_feature_and_a_share_bar_summing_to_one(fake):
    at = app(fake.path, "compare", unit=fake.split_channel)
    split = open_run(fake.path).split(*fake.split_channel.split(":"))
    assert not at.exception and not at.error
    cards = re.findall(r'class="cv-fcard" data-feature="([^"]+)"', html_blocks(at))
    assert cards == [f.unit_id for f in split.features]
    parts = dict(zip(attrs(at, "data-part"), map(float, attrs(at, "data-share"))))
    assert [p for p in parts if "/" in p] == [f.unit_id for f in split.features]
    assert sum(parts.values()) == pytest.approx(1.0, abs=1e-6)
    for f in split.features:
        assert parts[f.unit_id] == pytest.approx(f.share, abs=1e-6)
    run = open_run(fake.path)
    concepts = re.findall(r'class="cv-concept" data-concept="([^"]*)"', html_blocks(at))
    assert concepts == [evidence.dominant_concept(run.stats(f.unit_id)) or "" for f in split.features]


def test_share_bar_splits_the_rest_into_other_features_bias_and_error_when_recorded():
    from types import SimpleNamespace

    from circuitsviz.store import SplitFeature
    from circuitsviz.viewer.views import share_parts

    feats = [SplitFeature("l/s:3", 0.3, 0.9, 0.1), SplitFeature("l/s:1", 0.2, 0.8, 0.1)]
    parts = {label: share for label, share, _ in share_parts(SimpleNamespace(features=feats))}
    assert parts == pytest.approx({"l/s:3": 0.3, "l/s:1": 0.2, "rest, bias and error": 0.5})
    recorded = SimpleNamespace(features=feats, explained=0.8, bias_share=0.15)
    parts = {label: share for label, share, _ in share_parts(recorded)}
    assert parts == pytest.approx({"l/s:3": 0.3, "l/s:1": 0.2, "other features": 0.3, "bias": 0.15, "error": 0.05})


def test_share_bar_is_the_split_measured_independently_from_the_sae_on_the_data(tmp_path):
    """Known answer: where channel c fires, x_c = sum_f z_f * w_fc + b_c + error. Each part of the
    bar, measured here from the SAE's own encode/decode, is what the compare page draws."""
    import torch

    from circuitsviz.sae import TopKSAE, split_channel

    torch.manual_seed(0)
    d, n_latents, c, top = 6, 24, 2, 4
    x = torch.randn(600, d).relu() * (torch.rand(d) * 3 + 0.5)      # raw activations, about half zero
    sae = TopKSAE(d, n_latents, k=3, layer="mixed3b", name="s")
    with torch.no_grad():  # a bias and a scale, so neither part is trivially zero or one
        sae.b_pre.copy_(torch.randn(d) * 0.3)
        sae.b_enc.copy_(torch.randn(n_latents) * 0.1)
        sae.scale.fill_(1.7)
    run = open_run(tmp_path / "run", create=True)
    run.put_layer("mixed3b", d, 4, 4)
    run.add_units([f"mixed3b:{i}" for i in range(d)])
    run.add_split(split_channel(sae, c, data=x, top=top), sae=sae)
    run.close()

    on = x[:, c] > 0
    total = x[on, c].double().sum()
    with torch.no_grad():
        writes = (sae.encode(x[on]).double() * (sae.W_dec[:, c] / sae.scale).double()).sum(0) / total  # (F,)
        error = float((x[on, c].double() - sae.decode(sae.encode(x[on]))[:, c].double()).sum() / total)
        bias = float(sae.b_pre[c] / sae.scale) * int(on.sum()) / float(total)
    best = writes.argsort(descending=True)[:top].tolist()

    at = app(tmp_path / "run", "compare", unit=f"mixed3b:{c}")
    assert not at.exception and not at.error
    parts = dict(zip(attrs(at, "data-part"), map(float, attrs(at, "data-share"))))
    assert list(parts) == [f"mixed3b/s:{f}" for f in best] + ["other features", "bias", "error"]
    assert sum(parts.values()) == pytest.approx(1.0, abs=0.01)
    for f in best:
        assert parts[f"mixed3b/s:{f}"] == pytest.approx(float(writes[f]), abs=1e-5)
    assert parts["other features"] == pytest.approx(float(writes.sum()) - sum(float(writes[f]) for f in best), abs=1e-5)
    assert parts["bias"] == pytest.approx(bias, abs=1e-5) and abs(bias) > 0.01
    assert parts["error"] == pytest.approx(error, abs=1e-4) and abs(error) > 0.01


def test_share_bar_draws_a_negative_part_with_no_width_and_says_so(tmp_path):
    run = open_run(tmp_path / "run", create=True)
    run.put_layer("mixed3b", 2, 4, 4)
    run.add_units(["mixed3b:0"])
    run.put_split("mixed3b", 0, "s", [dict(unit_id="mixed3b/s:0", share=0.7), dict(unit_id="mixed3b/s:1", share=0.3)],
                  totals=dict(explained=1.05, bias_share=0.05))   # the SAE overshoots: error -10%
    run.close()
    at = app(tmp_path / "run", "compare", unit="mixed3b:0")
    body = html_blocks(at)
    widths = dict(re.findall(r'data-part="([^"]+)" data-share="[^"]+" title="[^"]*" style="width:([\d.]+)%', body))
    shares = dict(zip(attrs(at, "data-part"), map(float, attrs(at, "data-share"))))
    assert shares["error"] == pytest.approx(-0.10) and sum(shares.values()) == pytest.approx(1.0)
    assert float(widths["error"]) == 0 and sum(map(float, widths.values())) == pytest.approx(100, abs=0.01)
    assert float(widths["mixed3b/s:0"]) == pytest.approx(100 * 0.7 / 1.10, abs=0.01)  # in proportion to the positives
    assert "error -10.0% below zero" in body and "writes more into the channel than it holds" in body


def test_compare_picker_lists_split_channels_first(fake):
    at = app(fake.path, "compare", unit="mixed4e:5")
    options = at.selectbox[0].options
    assert options[0].startswith(fake.split_channel) and "split" in options[0]
    at.selectbox[0].set_value(options[0]).run()
    assert [t.value for t in at.title] == [f"{fake.split_channel} and its SAE features"]


def test_compare_tags_channel_examples_with_the_feature_that_writes_most_there(tmp_path):
    run = open_run(tmp_path / "run", create=True)
    run.set_info(model="demo", input_size=64)
    run.put_layer("mixed3b", 2, 4, 4, rf=(16.0, 16.0, 8.0))
    amap = lambda y, x, v: np.where((np.arange(16).reshape(4, 4) == y * 4 + x), v, 0.0).astype(np.float32)  # noqa: E731
    run.put_examples("mixed3b:0", [dict(rank=0, image_id="a", value=5.0, y=1, x=1, label=-1),
                                   dict(rank=1, image_id="b", value=4.0, y=2, x=2, label=-1),
                                   dict(rank=2, image_id="c", value=3.0, y=0, x=0, label=-1)])
    # feature 1 fires more on "a" but writes weakly (cosine 0.1): feature 0 explains "a"; only 1 saw "b"
    run.put_examples("mixed3b/s:0", [dict(rank=0, image_id="a", value=2.0, y=1, x=1, actmap=amap(1, 1, 2.0))])
    run.put_examples("mixed3b/s:1", [dict(rank=0, image_id="a", value=3.0, y=1, x=1, actmap=amap(1, 1, 3.0)),
                                     dict(rank=1, image_id="b", value=1.0, y=2, x=2, actmap=amap(2, 2, 1.0))])
    run.put_split("mixed3b", 0, "s", [dict(unit_id="mixed3b/s:0", share=0.4, cosine=0.9),
                                      dict(unit_id="mixed3b/s:1", share=0.1, cosine=0.1)])
    run.close()
    at = app(tmp_path / "run", "compare", unit="mixed3b:0")
    assert not at.exception
    tagged = dict(re.findall(r'data-example="([^"]+)" data-tag="([^"]+)"', html_blocks(at)))
    assert tagged == {"a": "mixed3b/s:0", "b": "mixed3b/s:1"}  # "c": no feature recorded it


def test_layer_grid_sorts_filters_and_keeps_both_in_the_url(fake):
    at = app(fake.path, "layer", layer="mixed4e", sort="max", branch="3x3")
    run = open_run(fake.path)
    shown = attrs(at, "data-unit")
    stats = run.layer_stats("mixed4e")
    layer = run.layer("mixed4e")
    assert shown and all(layer.branch_of(int(u.split(":")[1])) == "3x3" for u in shown)
    assert shown == sorted(shown, key=lambda u: (u not in stats, -(stats[u].max if u in stats else 0)))
    assert at.query_params["sort"] in (["max"], "max") and at.query_params["branch"] in (["3x3"], "3x3")
    at = app(fake.path, "layer", layer="mixed4e", split="1")
    assert attrs(at, "data-unit") == [fake.split_channel] and attrs(at, "data-split") == ["1"]


def test_layer_grid_of_features_marks_the_split_ones(fake):
    at = app(fake.path, "layer", layer="mixed4e", show="features")
    split = {f.unit_id for f in open_run(fake.path).split(*fake.split_channel.split(":")).features}
    marked = dict(zip(attrs(at, "data-unit"), attrs(at, "data-split")))
    assert set(marked) == set(fake.features)
    assert {u for u, s in marked.items() if s == "1"} == split
    assert [b.label for b in at.button] == ["Open"], "no prev / next / random buttons on the grid"


def test_sidebar_links_keep_the_current_unit(fake):
    at = app(fake.path, "unit", unit="mixed4e:5")
    side = sidebar_links(at)
    assert side["Unit"]["unit"] == "mixed4e:5" and side["Compare"]["unit"] == "mixed4e:5"
    assert side["Layer"]["layer"] == "mixed4e"
    at = app(fake.path, "feature", unit="mixed4e/sae:1")
    side = sidebar_links(at)
    assert side["Feature"]["unit"] == "mixed4e/sae:1" and side["Compare"]["unit"] == fake.split_channel


def test_an_unknown_unit_id_suggests_the_three_nearest(fake):
    for page in ("unit", "feature", "compare"):
        at = app(fake.path, page, unit="mixed4e:99", layer="mixed4e")
        assert not at.exception
        assert any("Unknown unit id 'mixed4e:99'" in e and "mixed4e:15, mixed4e:14, mixed4e:13" in e
                   for e in texts(at, "error"))
        assert len([lab for lab, _ in links(at) if lab.startswith("Open mixed4e:1")]) == 3
        back = [q for label, q in links(at) if label == "Back to the layer overview"]
        assert len(back) == 1 and back[0].endswith("layer=mixed4e")


def test_missing_data_shows_placeholders_naming_the_cli_command(fake):
    at = app(fake.path, "unit", unit=fake.bare_channel)
    assert not at.exception and not at.error
    infos, code = " ".join(texts(at, "info")), " ".join(texts(at, "code"))
    assert "No feature visualization" in infos and "No dataset examples" in infos
    assert f"circuitsviz visualize --model demo --layer mixed4e --channels 15 --out {fake.path}" in code
    at = app(fake.path, "compare", unit="mixed3b:2")  # no SAE on mixed3b
    assert not at.exception and "circuitsviz split" in " ".join(texts(at, "code"))


def test_unit_page_names_the_visualization_kinds_still_missing(tmp_path):
    run = open_run(tmp_path / "run", create=True)
    run.set_info(model="demo", input_size=64)
    run.put_layer("mixed3b", 2, 8, 8)
    image = np.zeros((16, 16, 3), dtype=np.uint8)
    run.put_visualization("mixed3b:0", image, kind="positive")
    run.put_visualization("mixed3b:1", image, kind="positive")
    run.put_visualization("mixed3b:1", image, kind="negative")
    run.close()
    expected = {"mixed3b:0": {"--neuron", "--negative", "--diversity"}, "mixed3b:1": {"--neuron", "--diversity"}}
    for uid, flags in expected.items():
        at = app(tmp_path / "run", "unit", unit=uid)
        code = "\n".join(texts(at, "code"))
        assert {f for f in ("--neuron", "--negative", "--diversity") if f in code} == flags


def test_a_missing_png_blob_shows_a_placeholder_for_that_image_only(tmp_path):
    fake = write_synthetic_run(tmp_path / "run", channels={"mixed4e": 5}, n_features=2)
    run = open_run(fake.path)
    gone = run.visualizations("mixed4e:1", "negative")[0].path
    gone.unlink()
    at = app(fake.path, "unit", unit="mixed4e:1")
    assert not at.exception and not at.error
    body = html_blocks(at)
    assert body.count("image missing") == 1
    assert body.count('data-vis="diversity"') == 3 and 'data-vis="positive"' in body


def test_the_run_parameter_only_selects_among_served_runs(tmp_path):
    runs = tmp_path / "runs"
    a = write_synthetic_run(runs / "a", channels={"mixed4e": 5}, n_features=2)
    write_synthetic_run(runs / "b", channels={"mixed3b": 5}, n_features=2)
    secret = tmp_path / "elsewhere"
    write_synthetic_run(secret, channels={"mixed3b": 5}, n_features=2)
    at = app(runs, "layer", run="b")
    assert [t.value for t in at.title] == ["mixed3b · 5 channels"]
    for bad in (str(secret), "../elsewhere", "/etc", "a/../b"):
        at = app(runs, "layer", run=bad)
        assert not at.exception and not at.title
        assert any("does not serve that run" in e and "Valid runs: a, b" in e for e in texts(at, "error"))
    at = app(a.path, "layer", run=str(secret))  # a one-run viewer ignores a foreign ?run=
    assert [t.value for t in at.title] == ["mixed4e · 5 channels"]


def test_served_refuses_paths_that_hold_no_runs(tmp_path):
    with pytest.raises(BadInputError, match="no circuitsviz run"):
        Served.at(tmp_path)
    fake = write_synthetic_run(tmp_path / "r" / "one", channels={"mixed3b": 5}, n_features=1)
    served = Served.at(tmp_path / "r")
    assert served.names == ["one"] and served.resolve("one") == fake.path.resolve()
    with pytest.raises(UnknownNameError):
        served.resolve("..")


def test_viewing_writes_nothing_into_the_run(tmp_path):
    fake = write_synthetic_run(tmp_path / "run", channels={"mixed4e": 5}, n_features=3)
    con = sqlite3.connect(fake.path / "index.sqlite")
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    before = {p: p.stat().st_mtime_ns for p in fake.path.rglob("*") if not p.name.startswith("index.sqlite-")}
    for page, params in [("layer", {}), ("unit", {"unit": "mixed4e:1"}), ("compare", {}),
                         ("feature", {"unit": fake.features[0]}), ("unit", {"unit": "mixed4e:1", "x": "1"})]:
        assert not app(fake.path, page, **params).exception
    after = {p: p.stat().st_mtime_ns for p in fake.path.rglob("*") if not p.name.startswith("index.sqlite-")}
    assert after == before
    assert not (fake.path / "cache").exists()


def test_clearest_split_follows_its_rule(tmp_path):
    run = open_run(tmp_path / "run", create=True)
    mono = lambda c: dict(concept_count=1, concept_means={c: 5.0, "other": 1.0})  # noqa: E731
    run.put_stats("l:0", scores=dict(concept_count=3, concept_means={"car": 5, "cat": 4, "star": 4, "dot": 0.1}))
    run.put_stats("l:1", scores=dict(concept_count=2, concept_means={"ring": 5, "wheel": 4, "dot": 0.1}))
    for f, c in enumerate(["car", "car", "dot", "ring", "wheel"]):  # l:0 covers {car}; l:1 covers {ring, wheel}
        run.put_stats(f"l/s:{f}", scores=mono(c))
    run.put_split("l", 0, "s", [dict(unit_id=f"l/s:{f}", share=0.3) for f in (0, 1, 2)])
    run.put_split("l", 1, "s", [dict(unit_id=f"l/s:{f}", share=0.2) for f in (3, 4)])
    assert evidence.clearest_split(run).channel_id == "l:1"
    assert evidence.split_summary(run).splitlines()[0] == "l:0 -> car, cat, star"
    assert "l:1 -> ring, wheel" in evidence.split_summary(run)


def test_mining_records_what_the_concept_chart_and_range_rows_show(tmp_path):
    """Per-concept means are each label's mean image-level maximum (brute force), and quantile
    examples carry their image's label."""
    from circuitsviz.mining import mine, write_to_run

    from .test_mining import BATCH, Images, brute_force, tiny_model

    class Labelled(Images):  # datasets say an image's label without loading it (ConceptDataset, folders)
        def label(self, i: int) -> int:
            return int(self.labels[i])

    model, data = tiny_model(), Labelled(n=30)
    result = mine(model, data, "4", k=3, batch_size=BATCH, progress=False)
    run = open_run(tmp_path / "run", create=True)
    write_to_run(result, run, data, model=model)
    _, peak, _, _ = brute_force(model, data, "4", 3)
    labels = data.labels.numpy()
    for u in range(peak.shape[1]):
        means = run.stats(f"4:{u}").scores["concept_means"]
        assert means == pytest.approx({f"c{c}": float(peak[labels == c, u].mean()) for c in range(3)}, rel=1e-5)
        for q in run.quantile_examples(f"4:{u}"):
            assert q.label == labels[int(q.image_id[3:])]


def test_the_demo_names_each_splits_concepts_and_points_at_the_clearest(fake, capsys):
    from circuitsviz.cli.study import print_evidence

    page = print_evidence(str(fake.path))
    out = capsys.readouterr().out
    run = open_run(fake.path)
    assert page == f"compare?unit={evidence.clearest_split(run).channel_id}"
    channel = run.stats(fake.split_channel)
    assert f"{fake.split_channel} -> {', '.join(evidence.concepts(channel))}" in out
    assert f"clearest split: {fake.split_channel}" in out
