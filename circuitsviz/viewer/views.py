"""Building blocks the pages are made of: image strips and grids, the concept chart, the
activation-range rows, the histogram, the share bar.

Grids and bars are drawn as one HTML block each (square cells, labels that never wrap, lazy
images, click to enlarge): far cheaper for Streamlit than one element per image, and each part
carries ``data-*`` attributes that tests read.
"""

from __future__ import annotations

import streamlit as st

from . import evidence
from .common import UnitView, command, esc, example_png, fmt, image_url, placeholder, revision

VIS_TITLES = {"positive": "positive", "negative": "negative", "neuron": "neuron", "diversity": "diversity"}
VIS_FLAGS = {"neuron": "--neuron", "negative": "--negative", "diversity": "--diversity 1000"}
MODES = {"crop": "Crop", "full": "Full image", "overlay": "Heatmap"}
# One colour per split feature (rank order); the rest of the channel in greys.
PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
           "#9c755f", "#8cd17d", "#499894", "#d37295"]
REST, BIAS, ERROR = "#b8b8b8", "#8c8c8c", "#dcdcdc"

HELP = {
    "max": "Largest image-level activation seen in the data (the maximum over positions of one image), "
           "in the layer's activation units.",
    "freq": "Fraction of all spatial positions, over every image, where the unit's activation is above zero.",
    "concepts": "Concept count: how many labelled concepts have a mean image-level activation of at least half "
                "the best concept's (the dashed line in the concept chart). 1 means monosemantic on this data.",
    "purity": "Top-k purity: the share of the unit's top examples (those where it fires) that carry its most "
              "common label. 1.00 means every top example is one concept.",
    "share": "Share: the fraction of the channel's total activation (summed over the positions where it fires) "
             "that this feature writes through its decoder weight on the channel.",
    "cmax": "Max: the largest image-level activation among the concept's images (read off the top examples; "
            "a lower bound, marked ≥, for a concept with no image among them).",
    "bias": "Bias: the share the SAE's decoder bias writes into the channel (the same at every position).",
    "error": "Error: the share of the channel's activation the SAE does not reconstruct, 1 - all features - "
             "bias; negative when the SAE writes more than the channel holds.",
    "cosine": "Cosine between the feature's decoder direction and the channel's axis: 1 means the feature "
              "writes only into this channel.",
    "objective": "The objective value the visualization reached: the unit's mean activation on the "
                 "rendered image, in activation units.",
    "weight": "Decoder weight: how much one unit of the feature's activation adds to the channel.",
}


def html(block: str) -> None:
    st.html(block)


CSS = """<style>
[data-testid="stMainBlockContainer"]{padding-top:3.2rem;padding-bottom:2rem}
[data-testid="stMain"] h1{font-size:1.9rem;padding:0.2rem 0}
[data-testid="stMain"] h3{font-size:1.25rem;padding:0.3rem 0 0.1rem}
.cv-grid{display:flex;flex-wrap:wrap;gap:6px}
.cv-cell{width:var(--w);text-align:center;font-size:11px;line-height:1.25;color:#444}
.cv-cell img{width:var(--w);height:var(--w);object-fit:contain;background:#222;border-radius:3px;display:block}
.cv-cell .cv-cap{white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.cv-missing{width:var(--w);height:var(--w);background:repeating-linear-gradient(45deg,#eee,#eee 6px,#f8f8f8 6px,#f8f8f8 12px);
  border-radius:3px;display:flex;align-items:center;justify-content:center;font-size:10px;color:#888}
.cv-tag{display:inline-block;width:8px;height:8px;border-radius:2px;margin-right:3px}
.cv-row{display:flex;align-items:center;gap:8px;margin:2px 0}
.cv-row .cv-grid{flex-wrap:nowrap;overflow:hidden}
.cv-rowlabel{width:76px;font-size:12px;color:#555;text-align:right;flex:none}
.cv-bars{font-size:12px}
.cv-bar{display:flex;align-items:center;gap:6px;margin:1px 0}
.cv-bar .cv-name{width:90px;text-align:right;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.cv-bar .cv-track{position:relative;flex:1;height:13px;background:#f3f3f3}
.cv-bar .cv-fill{position:absolute;left:0;top:3px;height:7px}
.cv-bar .cv-maxfill{position:absolute;left:0;top:0;height:13px;background:#f3c2c3}
.cv-bar .cv-bound{background:linear-gradient(90deg,#f3c2c3 70%,transparent)}
.cv-bar .cv-val{width:104px;white-space:nowrap;font-variant-numeric:tabular-nums}
.cv-thresh{position:absolute;top:-2px;bottom:-2px;border-left:2px dashed #333}
.cv-share{display:flex;height:26px;border-radius:4px;overflow:hidden;border:1px solid #ccc}
.cv-share div{height:100%}
.cv-hplot{position:relative;display:flex;align-items:flex-end;gap:1px;height:140px;border-bottom:1px solid #999}
.cv-hbar{flex:1;background:#4e79a7;min-height:1px}
.cv-cut{position:absolute;top:0;bottom:0;border-left:2px dashed #e15759}
.cv-hticks{position:relative;height:14px;font-size:10px;color:#666}
.cv-hticks span{position:absolute;transform:translateX(-50%)}
.cv-haxis{font-size:11px;color:#666;text-align:center}
.cv-legend{display:flex;flex-wrap:wrap;gap:4px 14px;font-size:12px;margin-top:4px}
.cv-note{font-size:11px;color:#666;margin-top:2px}
</style>"""


def style() -> None:
    html(CSS)


# ---------------------------------------------------------------- images
def cell(url: str | None, caption: str, title: str = "", width: int = 96, link: str | None = None,
         tag: str | None = None, attrs: str = "", missing: str = "image missing") -> str:
    """One square image cell; a missing image becomes a placeholder of the same size."""
    tagged = f'<span class="cv-tag" style="background:{tag}"></span>' if tag else ""
    if url is None:
        img = f'<div class="cv-missing">{esc(missing)}</div>'
    else:
        img = f'<img src="{esc(url)}" loading="lazy" alt="{esc(title or caption)}">'
        img = f'<a href="{esc(link or url)}" target="{"_self" if link else "_blank"}">{img}</a>'
    return (f'<div class="cv-cell" style="--w:{width}px" title="{esc(title or caption)}" {attrs}>{img}'
            f'<div class="cv-cap">{tagged}{esc(caption)}</div></div>')


def grid(cells: list[str], cls: str = "") -> str:
    return f'<div class="cv-grid {cls}">{"".join(cells)}</div>'


def label_of(e, classes) -> str | None:
    return classes[e.label] if classes and 0 <= e.label < len(classes) else None


def default_mode(view: UnitView) -> str:
    from ..store.render import default_mode as mode_for

    return mode_for(view.layer.rf if view.layer else None, view.input_size)


def example_cells(run: str, examples, mode: str, classes, width: int = 96, tags: dict | None = None,
                  limit: int | None = None) -> list[str]:
    out = []
    rev = revision(run)
    for e in list(examples)[:limit]:
        label = label_of(e, classes)
        tag = (tags or {}).get((e.image_id, e.y, e.x))
        caption = f"{e.value:.3g}" + (f" {label}" if label else "")
        title = f"{e.image_id} at ({e.y}, {e.x}): activation {e.value:.4g}" + (f", label {label}" if label else "")
        if tag:
            title += f"; explained most by {tag[0]}"
        out.append(cell(image_url(example_png(run, e, mode, rev=rev), check=False), caption, title, width, tag=tag[1] if tag else None,
                        attrs=f'data-example="{esc(e.image_id)}"' + (f' data-tag="{esc(tag[0])}"' if tag else "")))
    return out


def visualizations(run: str, view: UnitView, model: str | None, scale: int = 2, missing: bool = True,
                   others: int = 1) -> None:
    """The unit's renders, click to enlarge: the positive one at ×``scale``, the negative, neuron
    and diversity ones at ×``others`` (seven renders at ×2 would fill the first screen); the
    missing kinds in one line."""
    by_kind: dict[str, list] = {}
    for v in view.vis:
        by_kind.setdefault(v.kind, []).append(v)
    if not by_kind:
        placeholder(f"No feature visualization of {view.unit.id} yet.", command("visualization", run, view.unit, model))
        return
    cells = []
    for kind in ("positive", "negative", "neuron", "diversity"):
        for v in by_kind.get(kind, [])[:4]:
            cap = VIS_TITLES[kind] + (f" {fmt(v.objective)}" if v.objective is not None and kind != "diversity" else "")
            cells.append(cell(image_url(v.path), cap, f"{kind} visualization; objective {fmt(v.objective, 4)} "
                              "(the unit's mean activation on the image)",
                              width=min(v.width * (scale if kind == "positive" else others), 160),
                              attrs=f'data-vis="{kind}"'))
    html(grid(cells, "cv-vis"))
    absent = [k for k in ("neuron", "negative", "diversity") if k not in by_kind]
    if missing and view.unit.kind == "channel" and absent:
        with st.expander(f"Not rendered yet: {', '.join(absent)}"):
            base = command("visualization", run, view.unit, model)
            st.code("\n".join(f"{base} {VIS_FLAGS[k]}" for k in absent), language="bash")


def top_examples(run: str, view: UnitView, model: str | None, key: str, limit: int | None = None,
                 width: int = 80, tags: dict | None = None) -> None:
    if not view.examples:
        placeholder(f"No dataset examples of {view.unit.id} yet.", command("examples", run, view.unit, model))
        return
    mode = st.segmented_control("Show", list(MODES), format_func=MODES.get, default=default_mode(view), key=key,
                                label_visibility="collapsed") or default_mode(view)
    if mode != "crop":
        st.caption("Yellow box: the receptive field of the position where the unit peaks."
                   + (" Heat: the unit's activation, dark red to yellow, stretched to each image's own range."
                      if mode == "overlay" else ""))
    html(grid(example_cells(run, view.examples, mode, view.classes, width, tags, limit), "cv-top"))


# ---------------------------------------------------------------- charts
def concept_chart(view: UnitView) -> int:
    """Mean and max image-level activation per concept, with the half-of-best-mean threshold;
    returns how many concepts reach it. Both share one axis (0 to the largest value shown): the
    mean is the solid bar, the max the pale bar behind it (hatched at its end when it is only a
    lower bound; see :func:`evidence.concept_maxima`)."""
    means = evidence.concept_means(view.stats)
    st.markdown("**Activation per concept**: mean (bar) and max (pale)", help=HELP["concepts"] + " " + HELP["cmax"])
    if not means:
        st.caption("the dataset is unlabelled" if not view.classes else
                   "no per-concept means recorded (re-mine with this version to record them)")
        return 0
    maxima = evidence.concept_maxima(view.stats, view.examples, view.quantiles, view.classes)
    best = max(means.values())
    thresh = evidence.CONCEPT_RATIO * best
    scale = max([best, *(m.value for m in maxima.values())]) or 1.0
    rows = []
    above = 0
    for name, m in sorted(means.items(), key=lambda t: -t[1]):
        on = best > 0 and m >= thresh
        above += on
        mx = maxima.get(name)
        max_attrs, max_bar, max_text = "", "", "max –"
        if mx is not None:
            max_attrs = f' data-max="{mx.value:.6g}" data-exact="{int(mx.exact)}"'
            max_bar = (f'<div class="cv-maxfill{"" if mx.exact else " cv-bound"}" '
                       f'style="width:{100 * max(mx.value, 0) / scale:.1f}%"></div>')
            max_text = f"max {'' if mx.exact else '≥'}{mx.value:.3g}"
        tip = f"{name}: mean {m:.4g}, {max_text}" + ("" if mx is None or mx.exact else
                                                     f" (at most the top-k cut-off {mx.bound:.4g})")
        rows.append(f'<div class="cv-bar" data-concept="{esc(name)}" data-mean="{m:.6g}" data-above="{int(on)}"'
                    f'{max_attrs} title="{esc(tip)}"><span class="cv-name">{esc(name)}</span><span class="cv-track">'
                    f'{max_bar}<div class="cv-fill" style="width:{100 * max(m, 0) / scale:.1f}%;'
                    f'background:{"#e15759" if on else "#9a9a9a"}"></div>'
                    f'<div class="cv-thresh" style="left:{100 * thresh / scale:.1f}%"></div></span>'
                    f'<span class="cv-val">{m:.3g} · {esc(max_text)}</span></div>')
    html(f'<div class="cv-bars cv-concepts" data-threshold="{thresh:.6g}" data-reaching="{above}">{"".join(rows)}'
         f'<div style="font-size:11px;color:#666">dashed: half of the best concept\'s mean ({thresh:.3g}); '
         f'{above} concept{"s" if above != 1 else ""} reach it. ≥: a lower bound (no image of that concept '
         f'among the top examples)</div></div>')
    return above


def histogram(view: UnitView) -> None:
    """Image-level activations on a log count axis, the zero fraction stated, the top-k cut-off
    marked. Drawn as HTML: no chart library to load, and each bar says its range and count."""
    import math

    s = view.stats
    st.markdown("**Activation density**", help="Histogram of each image's maximum activation over positions, "
                "on a log count axis. The first bin also holds the images where the unit never fires.")
    if s is None or not s.hist_counts:
        st.caption("no histogram recorded")
        return
    edges, counts = s.hist_edges, s.hist_counts
    last = max((i for i, c in enumerate(counts) if c > 0), default=0)  # the axis ends where the data does
    lo, hi = edges[0], edges[last + 1]
    top = math.log10(max(counts[:last + 1]) + 1) or 1.0
    bars = []
    for i in range(last + 1):
        h = 100 * math.log10(counts[i] + 1) / top
        bars.append(f'<div class="cv-hbar" data-lo="{edges[i]:.6g}" data-hi="{edges[i + 1]:.6g}" '
                    f'data-count="{counts[i]:g}" title="{edges[i]:.3g}–{edges[i + 1]:.3g}: {counts[i]:g} images" '
                    f'style="height:{h:.1f}%"></div>')
    cut = min((e.value for e in view.examples), default=None)
    marker = ""
    if cut is not None and hi > lo:
        x = 100 * min(max((cut - lo) / (hi - lo), 0), 1)
        marker = (f'<div class="cv-cut" data-cut="{cut:.6g}" style="left:{x:.2f}%" '
                  f'title="top-{len(view.examples)} cut-off {cut:.3g}"></div>')
    ticks = "".join(f'<span style="left:{100 * k / 4:.0f}%">{lo + (hi - lo) * k / 4:.3g}</span>' for k in range(5))
    html(f'<div class="cv-hist" data-scale="log"><div class="cv-hplot">{"".join(bars)}{marker}</div>'
         f'<div class="cv-hticks">{ticks}</div><div class="cv-haxis">image-level activation · bar height: '
         f'log(1 + images), tallest {max(counts):g}</div></div>')
    zeros = None if s.frac_positive is None else 1 - s.frac_positive
    notes = [f"zero at {zeros:.1%} of positions" if zeros is not None else "zero fraction not recorded"]
    if cut is not None:
        notes.append(f"red dashed: top-{len(view.examples)} cut-off {cut:.3g}")
    st.caption(" · ".join(notes))


def range_rows(run: str, view: UnitView, tags: dict | None = None, per_row: int = 8, width: int = 64) -> None:
    """Examples across the activation range, highest first, each row labelled with its values."""
    if not view.quantiles:
        return
    st.markdown("**Examples across the activation range**",
                help="Images sampled from each tenth of the unit's activation distribution (by image-level "
                     "activation), highest first; the row label is the range of the values shown.")
    bins: dict[int, list] = {}
    for q in view.quantiles:
        bins.setdefault(q.bin, []).append(q)
    mode = default_mode(view)
    rows = []
    for b in sorted(bins, reverse=True):
        bins[b].sort(key=lambda q: -q.value)
        vals = [q.value for q in bins[b]]
        label = f"{min(vals):.3g}–{max(vals):.3g}"
        rows.append(f'<div class="cv-row" data-range="{esc(label)}"><div class="cv-rowlabel">{esc(label)}</div>'
                    + grid(example_cells(run, bins[b], mode, view.classes, width, tags, per_row)) + "</div>")
    html("".join(rows))


def metrics(view: UnitView) -> None:
    """The unit's key numbers in one row, each with its definition on hover."""
    s = view.stats
    cols = st.columns(4)
    cols[0].metric("max activation", fmt(s.max if s else None), help=HELP["max"])
    cols[1].metric("firing frequency", fmt(s.frac_positive if s else None), help=HELP["freq"])
    cols[2].metric("concept count", fmt(evidence.concept_count(s)), help=HELP["concepts"])
    cols[3].metric("top-k purity", fmt((s.scores or {}).get("purity") if s else None), help=HELP["purity"])


# ---------------------------------------------------------------- the split
def share_parts(split) -> list[tuple[str, float, str]]:
    """The stacked bar's parts ``(label, share, colour)``: every listed feature, then the rest. When
    the split records the share of all features and of the bias (``explained``, ``bias_share``),
    the rest is split into the other features, the bias and the reconstruction error, and the
    parts add up to the channel's whole activation; otherwise the rest is one part."""
    parts = [(f.unit_id, f.share or 0.0, PALETTE[i % len(PALETTE)]) for i, f in enumerate(split.features)]
    top = sum(p[1] for p in parts)
    explained, bias = getattr(split, "explained", None), getattr(split, "bias_share", None)
    if explained is not None and bias is not None:
        parts += [("other features", explained - top, REST), ("bias", bias, BIAS),
                  ("error", 1.0 - explained - bias, ERROR)]
    else:
        parts.append(("rest, bias and error", 1.0 - top, REST))
    return parts


def share_bar(split, concepts_of: dict[str, str]) -> None:
    """How much of the channel's activation each feature writes, as one bar that sums to 100%.

    A part can be negative (a bias below zero, an SAE that writes more than the channel holds: a
    negative error). A bar cannot draw that, so such a part is drawn with no width, the positive
    parts fill the bar in proportion, and a note under it gives the signed values."""
    parts = share_parts(split)
    positive = sum(max(s, 0.0) for _, s, _ in parts) or 1.0
    segs, legend = [], []
    for label, share, colour in parts:
        concept = concepts_of.get(label)
        name = label.rsplit(":", 1)[-1] if "/" in label else label
        value = f"{share:+.1%}" if share < 0 else f"{share:.1%}"
        text = f"{'#' + name if '/' in label else name}{' ' + concept if concept else ''} {value}"
        segs.append(f'<div data-part="{esc(label)}" data-share="{share:.6f}" title="{esc(label)}: {share:.1%}'
                    f'{" · " + esc(concept) if concept else ""}" style="width:{100 * max(share, 0) / positive:.3f}%;'
                    f'background:{colour}"></div>')
        legend.append(f'<span><span class="cv-tag" style="background:{colour}"></span>{esc(text)}</span>')
    negative = [(label, s) for label, s, _ in parts if s < -5e-4]
    notes = []
    if negative:
        notes.append(f"{' and '.join(f'{label} {s:+.1%}' for label, s in negative)} below zero: drawn with no "
                     f"width, the other parts fill the bar in proportion (they add up to {positive:.1%})"
                     + (". A negative error: the SAE writes more into the channel than it holds"
                        if any(label == "error" for label, _ in negative) else ""))
    if getattr(split, "explained", None) is None:
        notes.append("this split did not record the share of all features and of the bias; split the channel "
                     "again to show them apart")
    note = "".join(f'<div class="cv-note">{esc(n)}.</div>' for n in notes)
    html(f'<div class="cv-sharebar" data-total="{sum(s for _, s, _ in parts):.6f}">'
         f'<div class="cv-share">{"".join(segs)}</div><div class="cv-legend">{"".join(legend)}</div>{note}</div>')
