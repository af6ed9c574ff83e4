"""Unit page: the neuron view of one channel (or any unit), with prev / next / random."""

from __future__ import annotations

import numpy as np
import streamlit as st

from .common import current_run, current_unit, get_run, go, jump_box, link, load_layer, revision, set_url
from .views import neuron_view, writers


def default_unit(run: str) -> str | None:
    units = get_run(run).units(kind="channel") or get_run(run).units()
    return units[0].id if units else None


def neighbours(run: str, view) -> None:
    """Prev / next / random channel of the same layer."""
    layer = load_layer(run, revision(run), view.unit.layer) if view.layer else None
    ids = [u.id for u in layer.channels] if layer else []
    if view.unit.id not in ids:
        return
    i = ids.index(view.unit.id)
    cols = st.columns([1, 1, 1, 5])
    if cols[0].button("◀ prev", disabled=i == 0, key="prev"):
        go("unit", run, unit=ids[i - 1], layer=view.unit.layer)
    if cols[1].button("next ▶", disabled=i == len(ids) - 1, key="next"):
        go("unit", run, unit=ids[i + 1], layer=view.unit.layer)
    if cols[2].button("random", key="random"):
        go("unit", run, unit=ids[int(np.random.default_rng().integers(len(ids)))], layer=view.unit.layer)


def render() -> None:
    run = current_run()
    view = current_unit(run, default_unit(run), "unit")
    set_url(run, unit=view.unit.id, layer=view.unit.layer)
    model = get_run(run).info().model
    branch = view.layer.branch_of(view.unit.index) if view.layer and view.unit.kind != "feature" else None
    st.title(view.unit.id)
    st.caption(f"{view.unit.kind} {view.unit.index} of {view.unit.layer}" + (f" · {branch} branch" if branch else "")
               + f" · run {run}")
    link("layer", f"← all of {view.unit.layer}", run, layer=view.unit.layer)
    neighbours(run, view)
    jump_box(run, key="jump-unit")
    neuron_view(run, view, model)
    if view.unit.kind == "channel":
        writers(run, view, model)
