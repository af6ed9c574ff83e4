"""Feature page: the neuron view of one SAE feature, its decoder weights and its SAE's metrics."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from .common import command, current_run, current_unit, fmt, get_run, jump_box, link, placeholder, set_url
from .views import neuron_view


def default_feature(run: str) -> str | None:
    units = get_run(run).units(kind="feature")
    return units[0].id if units else None


def decoder(run: str, view) -> None:
    st.subheader("Writes into channels")
    f = view.feature
    if f is None or not f.decoder_top:
        placeholder(f"No decoder weights recorded for {view.unit.id}.", command("sae", run, view.unit))
        return
    st.bar_chart(pd.DataFrame({"channel": [f"{view.unit.layer}:{c}" for c, _ in f.decoder_top],
                               "weight": [w for _, w in f.decoder_top]}), x="channel", y="weight", height=220,
                 sort=False)
    cols = st.columns(min(4, len(f.decoder_top)))
    for i, (c, w) in enumerate(f.decoder_top):
        with cols[i % len(cols)]:
            link("unit", f"{view.unit.layer}:{c} ({w:+.2f})", run, unit=f"{view.unit.layer}:{c}", layer=view.unit.layer)


def sae_metrics(run: str, view) -> None:
    st.subheader(f"SAE {view.unit.sae!r}")
    if view.sae is None:
        placeholder(f"The SAE {view.unit.sae!r} is not recorded in this run.", command("sae", run, view.unit))
        return
    metrics = {k: v for k, v in view.sae.metrics.items() if isinstance(v, (int, float))}
    cols = st.columns(max(1, len(metrics)))
    for col, (k, v) in zip(cols, metrics.items()):
        col.metric(k, fmt(v))
    if view.feature:
        st.caption(f"feature firing frequency {fmt(view.feature.freq)} · mean activation {fmt(view.feature.mean_act)}")
    with st.expander("SAE config"):
        st.json(view.sae.config)


def render() -> None:
    run = current_run()
    view = current_unit(run, default_feature(run), "feature")
    if view.unit.kind != "feature":
        st.error(f"{view.unit.id} is a {view.unit.kind}, not an SAE feature.")
        link("unit", f"Open {view.unit.id} on the unit page", run, unit=view.unit.id, layer=view.unit.layer)
        st.stop()
    set_url(run, unit=view.unit.id, layer=view.unit.layer)
    st.title(view.unit.id)
    st.caption(f"feature {view.unit.index} of SAE {view.unit.sae!r} on {view.unit.layer} · run {run}")
    jump_box(run, key="jump-feature")
    model = get_run(run).info().model
    decoder(run, view)
    neuron_view(run, view, model)
    sae_metrics(run, view)
