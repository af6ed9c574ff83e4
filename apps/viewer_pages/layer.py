"""Layer page: a grid of channel visualizations, sortable and filterable by branch."""

from __future__ import annotations

import numpy as np
import streamlit as st

from .common import command, current_run, fmt, get_run, go, jump_box, link, load_layer, placeholder, revision, set_url

SORTS = {
    "index": ("channel index", None),
    "max": ("max activation", lambda s: s.max),
    "freq": ("firing frequency", lambda s: s.frac_positive),
    "poly": ("polysemanticity", lambda s: s.polysemanticity),
}
PER_PAGE = 48
COLUMNS = 8


def sorted_channels(view, sort: str, branches: list[str]) -> list:
    units = [u for u in view.channels if not branches or view.layer.branch_of(u.index) in branches]
    key = SORTS[sort][1]
    if key is None:
        return units
    # units without the statistic go last, whatever the order
    def value(u):
        s = view.stats.get(u.id)
        v = key(s) if s else None
        return (v is None, -(v or 0.0))
    return sorted(units, key=value)


def render() -> None:
    run = current_run()
    store = get_run(run)
    layers = [r.name for r in store.layers()]
    if not layers:
        placeholder("This run records no layers yet.", command("examples", run))
        return
    asked = st.query_params.get("layer")
    if asked and asked not in layers:
        st.error(f"Unknown layer {asked!r} in this run; it has {', '.join(layers)}.")
        link("layer", f"Show {layers[0]}", run, layer=layers[0])
        st.stop()
    controls = st.columns([2, 2, 3])
    layer = controls[0].selectbox("Layer", layers, index=layers.index(asked) if asked else 0)
    sort = controls[1].selectbox("Sort by", list(SORTS), format_func=lambda k: SORTS[k][0])
    view = load_layer(run, revision(run), layer)
    branch_names = [b[0] for b in view.layer.branches]
    chosen = controls[2].multiselect("Branches", branch_names, disabled=not branch_names,
                                     placeholder="all branches" if branch_names else "no branches")
    set_url(run, layer=layer)
    st.title(f"{layer} · {view.layer.channels} channels")
    units = sorted_channels(view, sort, chosen)
    if not units:
        placeholder(f"No channel units of {layer} recorded yet.", command("examples", run))
        return

    nav = st.columns([1, 1, 1, 4], vertical_alignment="bottom")
    current = st.query_params.get("unit")
    ids = [u.id for u in units]
    i = ids.index(current) if current in ids else -1
    if nav[0].button("◀ prev", disabled=i <= 0):
        go("unit", run, unit=ids[i - 1], layer=layer)
    if nav[1].button("next ▶", disabled=i >= len(ids) - 1):
        go("unit", run, unit=ids[i + 1], layer=layer)
    if nav[2].button("random"):
        go("unit", run, unit=ids[int(np.random.default_rng().integers(len(ids)))], layer=layer)
    with nav[3]:
        jump_box(run, key="jump-layer")

    pages = max(1, -(-len(units) // PER_PAGE))
    page = st.number_input("Page", 1, pages, 1, help=f"{PER_PAGE} channels per page") if pages > 1 else 1
    shown = units[(page - 1) * PER_PAGE: page * PER_PAGE]
    if not view.vis:
        placeholder(f"No feature visualizations of {layer} yet.", command("visualization", run, units[0]).replace(
            f"--channels {units[0].index}", "--channels '*'"))
    metric = SORTS[sort][1]
    for start in range(0, len(shown), COLUMNS):
        cols = st.columns(COLUMNS)
        for col, u in zip(cols, shown[start:start + COLUMNS]):
            with col:
                if u.id in view.vis:
                    st.image(view.vis[u.id], width="stretch")
                else:
                    st.caption("no visualization")
                s = view.stats.get(u.id)
                extra = f" · {SORTS[sort][0]} {fmt(metric(s))}" if metric and s else ""
                link("unit", u.id, run, unit=u.id, layer=layer)
                st.caption(f"{view.layer.branch_of(u.index) or ''}{extra}")
