"""Building blocks the pages are made of: the neuron view, example grids, charts."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from .common import UnitView, command, example_image, fmt, link, placeholder

VIS_TITLES = {"positive": "Channel", "neuron": "Neuron", "negative": "Negative"}
VIS_FLAGS = {"neuron": "--neuron", "negative": "--negative", "diversity": "--diversity 1000"}
MODES = {"crop": "Crop", "full": "Full image", "overlay": "Heatmap"}


def visualizations(run: str, view: UnitView, model: str | None, kinds=("positive", "neuron", "negative")) -> None:
    """The unit's visualizations side by side, then its diversity set; placeholders for gaps."""
    by_kind: dict[str, list] = {}
    for v in view.vis:
        by_kind.setdefault(v.kind, []).append(v)
    present = [k for k in kinds if k in by_kind]
    if not present and "diversity" not in by_kind:
        placeholder(f"No feature visualization of {view.unit.id} yet.",
                    command("visualization", run, view.unit, model))
        return
    cols = st.columns(max(len(present), 1) + (1 if "diversity" in by_kind else 0))
    for col, kind in zip(cols, present):
        v = by_kind[kind][0]
        title = "Feature" if kind == "positive" and view.unit.kind == "feature" else VIS_TITLES[kind]
        col.image(str(v.path), caption=f"{title} · objective {fmt(v.objective)}", width="stretch")
    if "diversity" in by_kind:
        with cols[-1]:
            st.caption("Diversity")
            sub = st.columns(len(by_kind["diversity"]))
            for c, v in zip(sub, by_kind["diversity"]):
                c.image(str(v.path), width="stretch")
    if view.unit.kind == "channel":
        missing = [k for k in ("neuron", "negative", "diversity") if k not in by_kind]
        if missing:
            base = command("visualization", run, view.unit, model)
            st.caption(f"Not rendered yet: {', '.join(missing)}. Add them with:")
            st.code("\n".join(f"{base} {VIS_FLAGS[k]}" for k in missing), language="bash")


def example_grid(run: str, examples, mode: str, per_row: int = 8, classes=None, limit: int | None = None) -> None:
    """Examples as images with their value and label, ``per_row`` to a row."""
    examples = list(examples)[:limit]
    for start in range(0, len(examples), per_row):
        cols = st.columns(per_row)
        for col, e in zip(cols, examples[start:start + per_row]):
            label = classes[e.label] if classes and 0 <= e.label < len(classes) else None
            caption = f"{e.value:.3g}" + (f" · {label}" if label else "")
            path = example_image(run, e, mode)
            if path:
                col.image(path, caption=caption, width="stretch")
            else:
                col.caption(f"{e.image_id}: source image unavailable")


def top_examples(run: str, view: UnitView, model: str | None, key: str, limit: int | None = None,
                 per_row: int = 8) -> None:
    if not view.examples:
        placeholder(f"No dataset examples of {view.unit.id} yet.", command("examples", run, view.unit, model))
        return
    mode = st.segmented_control("Show", list(MODES), format_func=MODES.get, default="crop", key=key) or "crop"
    example_grid(run, view.examples, mode, per_row=per_row, classes=view.classes, limit=limit)


def statistics(run: str, view: UnitView, model: str | None) -> None:
    """Histogram, quantile-binned examples, and the top-k label distribution."""
    s = view.stats
    if s is None:
        placeholder(f"No activation statistics of {view.unit.id} yet.", command("examples", run, view.unit, model))
        return
    cols = st.columns(4)
    cols[0].metric("max activation", fmt(s.max))
    cols[1].metric("mean", fmt(s.mean))
    cols[2].metric("firing frequency", fmt(s.frac_positive))
    cols[3].metric("polysemanticity", fmt(s.polysemanticity))
    left, right = st.columns(2)
    with left:
        st.markdown("**Activation histogram**")
        if s.hist_counts:
            centres = [f"{(a + b) / 2:.3g}" for a, b in zip(s.hist_edges, s.hist_edges[1:])]
            st.bar_chart(pd.DataFrame({"activation": centres, "count": s.hist_counts}), x="activation", y="count",
                         height=220, sort=False)
        else:
            st.caption("no histogram recorded")
    with right:
        st.markdown("**Labels of the top examples**")
        if s.label_counts:
            st.bar_chart(pd.DataFrame({"label": list(s.label_counts), "count": list(s.label_counts.values())}),
                         x="label", y="count", height=220, horizontal=True)
        else:
            st.caption("the dataset is unlabelled" if not view.classes else "no labels recorded")
        if s.scores:
            st.caption(" · ".join(f"{k} {fmt(v)}" for k, v in sorted(s.scores.items())))
    if view.quantiles:
        st.markdown("**Examples across the activation range** (one row per quantile bin)")
        bins: dict[int, list] = {}
        for q in view.quantiles:
            bins.setdefault(q.bin, []).append(q)
        for b in sorted(bins, reverse=True):
            st.caption(f"bin {b}")
            example_grid(run, bins[b], "crop", per_row=8, classes=view.classes)


def writers(run: str, view: UnitView, model: str | None) -> None:
    """Links to the SAE features that write into this channel, and to the side-by-side compare."""
    st.markdown("**SAE features writing into this channel**")
    if not view.writers:
        placeholder("No SAE features for this layer yet.", command("sae", run, view.unit, model))
        return
    if view.split:
        link("compare", f"Compare {view.unit.id} with its split into {len(view.split.features)} features",
             run, unit=view.unit.id, layer=view.unit.layer)
    cols = st.columns(min(4, len(view.writers)))
    for i, (f, weight) in enumerate(view.writers[:12]):
        with cols[i % len(cols)]:
            link("feature", f"{f.unit_id} (weight {weight:.2f})", run, unit=f.unit_id, layer=view.unit.layer)


def neuron_view(run: str, view: UnitView, model: str | None) -> None:
    """The full neuron view of one unit (channel or feature)."""
    visualizations(run, view, model)
    st.subheader("Top dataset examples")
    top_examples(run, view, model, key=f"mode-{view.unit.id}")
    st.subheader("Statistics")
    statistics(run, view, model)
