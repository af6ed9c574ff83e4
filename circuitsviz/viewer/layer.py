"""Layer page: a grid of the layer's channels or of its SAE features, with split badges.

Sort, filter and what is shown live in the URL (``/layer?layer=mixed3b&show=features&sort=poly``),
so a view survives a reload and can be shared.
"""

from __future__ import annotations

import streamlit as st

from . import evidence
from .common import (
    command, current_run, esc, example_png, fmt, get_run, href, image_url, jump_box, link, load_layer, load_unit,
    placeholder, revision, set_url,
)
from .views import cell, grid, html, style

SORTS = {
    "index": ("index", None),
    "max": ("max activation", lambda s: s.max),
    "freq": ("firing frequency", lambda s: s.frac_positive),
    "poly": ("concept count", lambda s: evidence.concept_count(s)),
}
SHOW = {"channels": "Channels", "features": "SAE features"}
PER_PAGE = 96


def sorted_units(units, stats, sort: str) -> list:
    key = SORTS[sort][1]
    if key is None:
        return list(units)

    def value(u):  # units without the statistic go last, whatever the order
        s = stats.get(u.id)
        v = key(s) if s else None
        return (v is None, -(v or 0.0), u.index)
    return sorted(units, key=value)


def url_choice(name: str, options, default: str) -> str:
    v = st.query_params.get(name)
    return v if v in options else default


def thumb_of(run: str, view, u) -> str | None:
    """A unit's grid image: its visualization, else (a feature) its top example's heatmap."""
    if u.id in view.vis:
        return image_url(view.vis[u.id])
    if u.kind == "feature":
        fv = load_unit(run, revision(run), u.id)
        if fv.examples:
            return image_url(example_png(run, fv.examples[0], "overlay", 96))
    return None


def render() -> None:
    run = current_run()
    store = get_run(run)
    layers = [r.name for r in store.layers()]
    style()
    if not layers:
        placeholder("This run records no layers yet.", command("examples", run))
        return
    asked = st.query_params.get("layer")
    if asked and asked not in layers:
        st.error(f"Unknown layer {asked!r} in this run; it has {', '.join(layers)}.")
        link("layer", f"Show {layers[0]}", run, layer=layers[0])
        st.stop()
    controls = st.columns([2, 3, 2, 3, 2], vertical_alignment="bottom")
    layer = controls[0].selectbox("Layer", layers, index=layers.index(asked) if asked else 0)
    view = load_layer(run, revision(run), layer)
    show = controls[1].segmented_control("Show", list(SHOW), format_func=SHOW.get,
                                         default=url_choice("show", SHOW, "channels")) or "channels"
    sort = controls[2].selectbox("Sort by", list(SORTS), format_func=lambda k: SORTS[k][0],
                                 index=list(SORTS).index(url_choice("sort", SORTS, "index")))
    branch_names = [b[0] for b in view.layer.branches]
    asked_branches = [b for b in (st.query_params.get("branch") or "").split(",") if b in branch_names]
    if show == "channels":
        chosen = controls[3].multiselect("Branches", branch_names, default=asked_branches,
                                         disabled=not branch_names,
                                         placeholder="all branches" if branch_names else "no branches")
    else:
        chosen = []
    only_split = controls[3 if show == "features" else 4].toggle(
        "split only", value=st.query_params.get("split") == "1",
        help="Only split channels / only features of a split.")
    set_url(run, layer=layer, show=show, sort=sort, branch=",".join(chosen) or None, split="1" if only_split else None)
    for k, v in (("branch", chosen), ("split", only_split)):
        if not v and k in st.query_params:
            del st.query_params[k]

    if show == "channels":
        units = [u for u in view.channels if not chosen or view.layer.branch_of(u.index) in chosen]
        units = [u for u in units if not only_split or u.index in view.split_channels]
        st.title(f"{layer} · {view.layer.channels} channels")
        st.caption(f"{len(view.split_channels)} split into SAE features (badge ✦); click a channel for its page.")
    else:
        units = [u for u in view.features if not only_split or u.id in view.split_of]
        st.title(f"{layer} · {len(view.features)} SAE features")
        st.caption("Features of the layer's SAEs; ✦ marks a feature of a split, with the channel it came from.")
    jump_box(run, key="jump-layer")
    units = sorted_units(units, view.stats, sort)
    if not units:
        placeholder(f"No {SHOW[show].lower()} of {layer} recorded yet.",
                    command("examples" if show == "channels" else "sae", run))
        return
    if show == "channels" and not view.vis:
        placeholder(f"No feature visualizations of {layer} yet.",
                    command("visualization", run, units[0]).replace(f"--channels {units[0].index}", "--channels '*'"))
    pages = max(1, -(-len(units) // PER_PAGE))
    page = st.number_input("Page", 1, pages, 1, help=f"{PER_PAGE} per page") if pages > 1 else 1
    metric = SORTS[sort][1]
    cells = []
    for u in units[(page - 1) * PER_PAGE: page * PER_PAGE]:
        s = view.stats.get(u.id)
        concept = evidence.dominant_concept(s)
        split = u.index in view.split_channels if u.kind == "channel" else u.id in view.split_of
        name = (u.id if u.kind == "channel" else f"#{u.index}") + (f" {concept}" if concept else "")
        extra = f" {fmt(metric(s))}" if metric and s and metric(s) is not None else ""
        cap = f"{'✦ ' if split else ''}{name}{extra}"
        title = f"{u.id}" + (f" · {view.layer.branch_of(u.index)} branch" if u.kind == "channel" else "") + \
            (f" · {concept}" if concept else "") + (" · split" if split and u.kind == "channel" else "") + \
            (f" · from {view.split_of[u.id]}" if u.id in view.split_of else "")
        page_name = "unit" if u.kind == "channel" else "feature"
        cells.append(cell(thumb_of(run, view, u), cap, title, width=96,
                          link=href(page_name, run, unit=u.id, layer=layer),
                          attrs=f'data-unit="{esc(u.id)}" data-split="{int(split)}"'))
    html(grid(cells, "cv-layer"))
