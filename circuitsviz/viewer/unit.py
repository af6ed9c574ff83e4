"""Unit page: one channel or SAE feature, compactly, in the order a researcher reads it.

Header → visualizations → top examples → mean activation per concept → examples across the
activation range → activation density → SAE features of a channel / decoder weights of a feature.
"""

from __future__ import annotations

import streamlit as st

from . import evidence
from .circuit import circuit_link
from .common import (
    UnitView, command, current_run, current_unit, esc, fmt, get_run, href, image_url, jump_box, link, load_layer,
    pct, placeholder, revision, set_url, unit_brief,
)
from .views import (
    HELP, PALETTE, cell, concept_chart, grid, histogram, html, metrics, range_rows, style, top_examples,
    visualizations,
)


def default_unit(run: str) -> str | None:
    units = get_run(run).units(kind="channel") or get_run(run).units()
    return units[0].id if units else None


def default_feature(run: str) -> str | None:
    """The first feature of the first split (it has a visualization), else the first feature."""
    from .evidence import clearest_split

    sp = clearest_split(get_run(run))
    if sp and sp.features:
        return sp.features[0].unit_id
    units = get_run(run).units(kind="feature")
    return units[0].id if units else None


def header(run: str, view: UnitView) -> None:
    u = view.unit
    branch = view.layer.branch_of(u.index) if view.layer and u.kind != "feature" else None
    top = st.columns([5, 3], vertical_alignment="bottom")
    with top[0]:
        st.title(u.id)
    with top[1]:
        jump_box(run, key="jump-unit")
    bits = [f"{u.kind} {u.index} of {u.layer}" + (f" · {branch} branch" if branch else "")]
    for sp, share in view.split_from:
        bits.append(f"split from [{sp.channel_id}]({href('unit', run, unit=sp.channel_id, layer=u.layer)}), "
                    f"share {pct(share)}")
    found = evidence.concepts(view.stats)
    if found:
        bits.append(f"responds to **{', '.join(found)}**")
    st.markdown(" · ".join(bits), help=HELP["share"] if view.split_from else None)
    cols = st.columns([1, 1.3, 2], vertical_alignment="center")
    with cols[0]:
        link("layer", f"all of {u.layer}", run, layer=u.layer)
    with cols[1]:
        if view.split:
            link("compare", f"compare with its {len(view.split.features)} features", run, unit=u.id, layer=u.layer)
        elif view.split_from:
            sp = view.split_from[0][0]
            link("compare", f"compare with {sp.channel_id}", run, unit=sp.channel_id, layer=u.layer)
    circuit_link(cols[2], run, u.id)


def split_features(run: str, view: UnitView) -> None:
    """A channel's SAE features: the split (with shares) or the strongest writers, with thumbnails."""
    st.markdown("**SAE features of this channel**", help=HELP["share"])
    if view.split:
        cells = []
        for i, f in enumerate(view.split.features):
            thumb, stats = unit_brief(run, revision(run), f.unit_id)
            concept = evidence.dominant_concept(stats) or ""
            cap = f"#{f.unit_id.rsplit(':', 1)[-1]} {pct(f.share)} {concept}"
            cells.append(cell(image_url(thumb) if thumb else None, cap,
                              f"{f.unit_id}: share {pct(f.share)}, cosine {fmt(f.cosine)}, concept {concept or '–'}",
                              width=84, link=href("feature", run, unit=f.unit_id, layer=view.unit.layer),
                              tag=PALETTE[i % len(PALETTE)], attrs=f'data-feature="{esc(f.unit_id)}"',
                              missing="image missing" if thumb else "not rendered"))
        html(grid(cells))
    elif view.writers:
        st.caption("No split recorded; the features with the largest decoder weight on this channel:")
        for f, w in view.writers[:8]:
            link("feature", f"{f.unit_id} (weight {w:.2f})", run, help=HELP["weight"], unit=f.unit_id,
                 layer=view.unit.layer)
    else:
        placeholder("No SAE features for this layer yet.", command("sae", run, view.unit))


def decoder(run: str, view: UnitView) -> None:
    """A feature's strongest decoder weights on the channels, with the channels' thumbnails."""
    st.markdown("**Writes into channels**", help=HELP["weight"])
    f = view.feature
    if f is None or not f.decoder_top:
        placeholder(f"No decoder weights recorded for {view.unit.id}.", command("sae", run, view.unit))
        return
    lv = load_layer(run, revision(run), view.unit.layer)
    cells = []
    for c, w in f.decoder_top:
        uid = f"{view.unit.layer}:{c}"
        cells.append(cell(image_url(lv.vis.get(uid)) if uid in lv.vis else None, f"{c}  {w:+.2f}",
                          f"{uid}: decoder weight {w:+.3f}", width=64,
                          link=href("unit", run, unit=uid, layer=view.unit.layer), attrs=f'data-channel="{c}"'))
    html(grid(cells))


def sae_metrics(view: UnitView) -> None:
    if view.sae is None:
        return
    names = {"fvu": ("FVU", "Fraction of variance unexplained on held-out activations (0 is perfect)."),
             "l0": ("L0", "Mean number of features active per position."),
             "dead_fraction": ("dead", "Fraction of features that never fire on held-out data."),
             "dense_fraction": ("dense", "Fraction of features that fire on more than 10% of positions.")}
    shown = [(names[k], v) for k, v in view.sae.metrics.items() if k in names and isinstance(v, (int, float))]
    if shown:
        cols = st.columns(len(shown) + 1)
        cols[0].markdown(f"SAE **{view.sae.name}**")
        for col, ((label, help_), v) in zip(cols[1:], shown):
            col.metric(label, fmt(v), help=help_)


def render() -> None:
    run = current_run()
    page = "feature" if st.session_state.get("_page") == "feature" else "unit"
    view = current_unit(run, default_feature(run) if page == "feature" else default_unit(run), page)
    set_url(run, unit=view.unit.id, layer=view.unit.layer)
    if view.split_from:  # the sidebar's Compare link opens the channel this feature came from
        st.session_state["_last_channel"] = view.split_from[0][0].channel_id
    model = get_run(run).info().model
    style()
    header(run, view)
    metrics(view)
    left, right = st.columns([2, 5], gap="medium")
    with left:
        visualizations(run, view, model)
    with right:
        st.markdown("**Top dataset examples**", help="The images where the unit's activation is largest, with "
                    "the activation and the image's label.")
        top_examples(run, view, model, key=f"mode-{view.unit.id}", width=72)
    a, b = st.columns(2, gap="medium")
    with a:
        concept_chart(view)
    with b:
        histogram(view)
    range_rows(run, view)
    if view.unit.kind == "feature":
        decoder(run, view)
        sae_metrics(view)
    else:
        split_features(run, view)
