"""Compare page: a polysemantic channel beside the SAE features that split it (the headline)."""

from __future__ import annotations

import streamlit as st

from .common import (
    command, current_run, current_unit, fmt, get_run, link, load_unit, placeholder, revision, set_url,
)
from .views import example_grid, top_examples, visualizations


def default_channel(run: str) -> str | None:
    splits = get_run(run).splits()
    if splits:
        return splits[0].channel_id
    units = get_run(run).units(kind="channel")
    return units[0].id if units else None


def feature_card(run: str, uid: str, subtitle: str, classes) -> None:
    try:
        view = load_unit(run, revision(run), uid)
    except Exception as e:  # a split naming a feature that was never written: say so, keep going
        st.warning(f"{uid}: {e}")
        return
    with st.container(border=True):
        head = st.columns([3, 2])
        head[0].markdown(f"**{uid}**  \n{subtitle}")
        with head[1]:
            link("feature", "open feature", run, unit=uid, layer=view.unit.layer)
        cols = st.columns([1, 4])
        with cols[0]:
            vis = [v for v in view.vis if v.kind == "positive"]
            if vis:
                st.image(str(vis[0].path), caption="visualization", width="stretch")
            else:
                st.caption("no visualization yet")
        with cols[1]:
            if view.examples:
                example_grid(run, view.examples, "crop", per_row=6, classes=classes, limit=6)
            else:
                placeholder(f"No examples of {uid} yet.", command("split", run, view.unit))


def render() -> None:
    run = current_run()
    view = current_unit(run, default_channel(run), "compare")
    set_url(run, unit=view.unit.id, layer=view.unit.layer)
    st.title(f"{view.unit.id} and its SAE features")
    st.caption(f"run {run}")
    model = get_run(run).info().model
    left, right = st.columns([2, 3], gap="large")
    with left:
        st.subheader(f"Channel {view.unit.id}")
        link("unit", "open neuron view", run, unit=view.unit.id, layer=view.unit.layer)
        visualizations(run, view, model, kinds=("positive",))
        if view.stats:
            st.caption(f"max {fmt(view.stats.max)} · firing {fmt(view.stats.frac_positive)} · "
                       f"polysemanticity {fmt(view.stats.polysemanticity)}")
        top_examples(run, view, model, key="mode-compare", limit=12, per_row=4)
    with right:
        if view.split:
            st.subheader(f"Split by SAE {view.split.sae!r}")
            for f in view.split.features[:6]:
                feature_card(run, f.unit_id, f"share {fmt(f.share)} · cosine {fmt(f.cosine)} · "
                             f"freq {fmt(f.freq)}", view.classes)
        elif view.writers:
            st.subheader("SAE features writing into it")
            st.caption("No split recorded; showing the features with the largest decoder weight on this channel.")
            for f, w in view.writers[:6]:
                feature_card(run, f.unit_id, f"decoder weight {w:.3f}", view.classes)
        else:
            placeholder(f"No SAE features for {view.unit.id} yet.", command("split", run, view.unit, model))
