"""Compare page, the headline: a polysemantic channel beside every SAE feature that splits it.

The stacked bar says how much of the channel each feature writes; each feature card says what it
responds to (its dominant concept and concept count), shows its visualization and examples; and
the channel's own examples are tagged with the feature that explains them.
"""

from __future__ import annotations

import numpy as np
import streamlit as st

from . import evidence
from .circuit import circuit_link
from .common import (
    command, current_run, current_unit, esc, fmt, get_run, go, href, image_url, link, load_unit, pct, placeholder,
    revision, set_url, split_list,
)
from .heldout import evidence_path
from .views import (
    HELP, PALETTE, cell, concept_chart, default_mode, example_cells, grid, html, range_rows, share_bar, style,
    visualizations,
)


def default_channel(run: str) -> str | None:
    sp = evidence.clearest_split(get_run(run))
    if sp:
        return sp.channel_id
    units = get_run(run).units(kind="channel")
    return units[0].id if units else None


def picker(run: str, current: str) -> None:
    """Every channel of the layer, the split channels first (with their concepts)."""
    store = get_run(run)
    splits = split_list(run, revision(run))
    split_ids = [sp.channel_id for sp in splits]
    layer = current.split(":")[0].split("/")[0]
    others = [u.id for u in store.units(layer=layer, kind="channel") if u.id not in split_ids]
    options = split_ids + others
    if current not in options:
        options.insert(0, current)

    def label(uid: str) -> str:
        if uid in split_ids:
            return f"{uid} · split · {', '.join(evidence.concepts(store.stats(uid))) or '?'}"
        return uid

    chosen = st.selectbox("Channel", options, index=options.index(current), format_func=label,
                          label_visibility="collapsed",
                          help="Split channels first, then every other channel of the layer.")
    if chosen != current:
        go("compare", run, unit=chosen, layer=layer)


def tags_for(channel_view, feature_views: list, colours: dict[str, str]) -> dict:
    """For each of the channel's examples, the split feature that writes most into the channel at
    that image and position: ``(image_id, y, x) -> (feature id, colour)``. A feature's contribution
    is its activation there (from its recorded activation map on that image) times its decoder
    cosine with the channel; examples whose image no feature recorded stay untagged."""
    maps: dict[str, list[tuple[str, float, np.ndarray]]] = {}
    for fv, cosine in feature_views:
        for e in fv.examples:
            if e.actmap is not None:
                maps.setdefault(e.image_id, []).append((fv.unit.id, cosine or 0.0, e.actmap))
    tags = {}
    for e in list(channel_view.examples) + list(channel_view.quantiles):
        best = None
        for fid, cos, amap in maps.get(e.image_id, []):
            if 0 <= e.y < amap.shape[0] and 0 <= e.x < amap.shape[1]:
                c = float(amap[e.y, e.x]) * cos
                if c > 0 and (best is None or c > best[1]):
                    best = (fid, c)
        if best:
            tags[(e.image_id, e.y, e.x)] = (best[0], colours[best[0]])
    return tags


def feature_card(run: str, fv, f, colour: str, mode: str) -> None:
    cc = evidence.concept_count(fv.stats)
    concepts = evidence.concepts(fv.stats)
    thumb = next((v.path for v in fv.vis if v.kind == "positive"), None)
    vis = cell(image_url(thumb) if thumb else None, "visualization", f"{f.unit_id} visualization", width=64,
               missing="image missing" if thumb else "not rendered")
    head = (f'<div style="font-size:13px;margin-bottom:2px"><span class="cv-tag" style="background:{colour}"></span>'
            f'<a href="{esc(href("feature", run, unit=f.unit_id, layer=fv.unit.layer))}" target="_self">'
            f'<b>{esc(f.unit_id)}</b></a> · <span title="{esc(HELP["share"])}">share <b>{pct(f.share)}</b></span> · '
            f'<span class="cv-concept" data-concept="{esc(concepts[0] if concepts else "")}"><b>'
            f'{esc(", ".join(concepts) or "no concept")}</b></span> · '
            f'<span title="{esc(HELP["concepts"])}">{cc if cc is not None else "–"} concept{"s" if cc != 1 else ""}'
            f'</span> · <span title="{esc(HELP["cosine"])}">cosine {fmt(f.cosine)}</span></div>')
    examples = example_cells(run, fv.examples, mode, fv.classes, width=52, limit=7)
    html(f'<div class="cv-fcard" data-feature="{esc(f.unit_id)}" style="border-left:4px solid {colour};'
         f'padding:2px 8px;margin:4px 0">{head}'
         f'<div class="cv-grid">{vis}{"".join(examples) or "<i>no examples yet</i>"}</div></div>')


def render() -> None:
    run = current_run()
    view = current_unit(run, default_channel(run), "compare")
    set_url(run, unit=view.unit.id, layer=view.unit.layer)
    style()
    if view.unit.kind != "channel":
        st.error(f"{view.unit.id} is a {view.unit.kind}; the compare page shows a channel and its split.")
        link("unit", f"Open {view.unit.id}", run, unit=view.unit.id, layer=view.unit.layer)
        st.stop()
    model = get_run(run).info().model
    top = st.columns([3, 2], vertical_alignment="center")
    with top[0]:
        st.title(f"{view.unit.id} and its SAE features")
    with top[1]:
        picker(run, view.unit.id)
    if evidence_path(run).is_file():
        link("evidence", "Held-out evidence: baselines, seeds, sparsity sweep, FV recovery", run)
    concepts = evidence.concepts(view.stats)
    split = view.split
    if not split:
        st.caption(f"{view.unit.id} responds to: {', '.join(concepts) or '–'}")
        if view.writers:
            st.caption("No split recorded for this channel; its strongest writers:")
            for f, w in view.writers[:8]:
                link("feature", f"{f.unit_id} (decoder weight {w:.2f})", run, unit=f.unit_id, layer=view.unit.layer)
        placeholder(f"No split of {view.unit.id} yet.", command("split", run, view.unit, model))
        return

    fviews = [(load_unit(run, revision(run), f.unit_id), f) for f in split.features]
    colours = {f.unit_id: PALETTE[i % len(PALETTE)] for i, f in enumerate(split.features)}
    dominant = {f.unit_id: evidence.dominant_concept(fv.stats) or "" for fv, f in fviews}
    cc = evidence.concept_count(view.stats)
    st.markdown(f"**{view.unit.id}** responds to **{', '.join(concepts) or '–'}** "
                f"(concept count {cc if cc is not None else '–'}). SAE **{split.sae}** splits it into "
                f"{len(split.features)} features; the bar divides the channel's activation, where it fires, into "
                "what each of them writes, the SAE's other features, its bias and the reconstruction error.",
                help=HELP["share"] + " " + HELP["bias"] + " " + HELP["error"])
    share_bar(split, dominant)
    mode = default_mode(view)
    tags = tags_for(view, [(fv, f.cosine) for fv, f in fviews], colours)
    left, right = st.columns([2, 3], gap="large")
    with left:
        st.subheader(f"Channel {view.unit.id}")
        link("unit", "open its unit page", run, unit=view.unit.id, layer=view.unit.layer)
        circuit_link(st, run, view.unit.id)
        visualizations(run, view, model, scale=1, missing=False)
        concept_chart(view)
        st.markdown("**Top examples**, tagged with the feature that explains most of each",
                    help="The coloured square is the split feature whose activation times decoder cosine is largest "
                    "at the example's position (from the features' recorded activation maps); untagged: no feature "
                    "recorded that image.")
        html(grid(example_cells(run, view.examples, mode, view.classes, 64, tags, 16)))
        range_rows(run, view, tags=tags, per_row=5, width=56)
    with right:
        st.subheader(f"Its {len(split.features)} features")
        for fv, f in fviews:
            feature_card(run, fv, f, colours[f.unit_id], mode)
