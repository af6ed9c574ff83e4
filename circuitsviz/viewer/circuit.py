"""Circuit page, in the style of the Distill Circuits thread: how a unit is built from earlier units.

The unit sits in the middle. On the left, its strongest positive and negative inputs from the
layer before, each with its visualization and its kernel (the weights over source positions,
red positive, blue negative, one colour scale for the whole page with its legend); on the right,
the units it drives (the stored circuits that read it). Below, the faithfulness figure: the drop
from ablating its top-n attributed sources against n random ones, with 95% intervals. Every unit
is a link to its own circuit page, so the graph can be walked upstream and downstream.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import streamlit as st

from ..store.circuits import StoredCircuit, StoredFaithfulness
from ..units import Unit
from .common import (
    current_run, esc, fmt, get_run, href, image_url, jump_box, link_params, page_for, pages, revision, set_url,
    unit_brief,
)
from .views import cell, html, style

CSS = """<style>
.cv-circ{display:flex;gap:10px;align-items:center;margin:3px 0}
.cv-kernel{display:grid;gap:1px;background:#ddd;border:1px solid #ddd}
.cv-kernel div{width:var(--px);height:var(--px)}
.cv-scale{display:flex;align-items:center;gap:6px;font-size:11px;color:#555}
.cv-scale .cv-grad{width:160px;height:10px;border:1px solid #ccc}
.cv-faith{font-size:12px;margin:6px 0}
.cv-faith .cv-track{position:relative;height:16px;background:#f3f3f3;margin:2px 0 6px 0}
.cv-faith .cv-ci{position:absolute;top:3px;height:10px;opacity:0.45}
.cv-faith .cv-mean{position:absolute;top:0;height:16px;border-left:3px solid #222}
.cv-faith .cv-zero{position:absolute;top:-2px;bottom:-2px;border-left:1px dashed #888}
</style>"""
POS, NEG = (178, 24, 43), (33, 102, 172)  # red, blue (ColorBrewer RdBu ends)


@dataclass
class CircuitView:
    unit: str
    inputs: list[StoredCircuit] = field(default_factory=list)
    outputs: list[StoredCircuit] = field(default_factory=list)
    read_by: list[tuple[str, float]] = field(default_factory=list)
    faithfulness: list[StoredFaithfulness] = field(default_factory=list)

    def scale(self) -> float:
        """The page's one colour scale: the largest |weight| of any kernel it draws."""
        ks = [np.abs(c.kernel).max() for cs in self.inputs + self.outputs for c in cs.positive + cs.negative]
        return float(max(ks)) if ks else 1.0


@st.cache_data(show_spinner=False, max_entries=256)
def load_circuit(path: str, revision: int, unit_id: str) -> CircuitView:
    """Everything one circuit page shows, from one consistent state of the store."""
    run = get_run(path)
    with run.snapshot():
        view = CircuitView(unit_id, read_by=run.read_by(unit_id), faithfulness=run.faithfulness(unit_id))
        for direction, layer in run.circuits(unit_id):
            kw = {"source": layer} if direction == "inputs" else {"target": layer}
            (view.inputs if direction == "inputs" else view.outputs).append(run.circuit(unit_id, **kw))
        return view


def colour(w: float, vmax: float) -> str:
    """White at 0, red for positive, blue for negative, saturated at ``vmax``."""
    t = min(abs(w) / vmax, 1.0) if vmax > 0 else 0.0
    end = POS if w >= 0 else NEG
    return "#" + "".join(f"{round(255 + (e - 255) * t):02x}" for e in end)


def kernel_html(kernel: np.ndarray, vmax: float, size: int = 54) -> str:
    k = np.atleast_2d(kernel)
    px = max(3, size // max(k.shape))
    cells = "".join(f'<div style="background:{colour(w, vmax)}" title="{w:+.3g}"></div>' for w in k.flatten())
    return (f'<div class="cv-kernel" style="--px:{px}px;grid-template-columns:repeat({k.shape[1]},{px}px)" '
            f'data-kernel="{k.shape[0]}x{k.shape[1]}">{cells}</div>')


def legend(vmax: float) -> str:
    grad = f"linear-gradient(90deg,{colour(-vmax, vmax)},#ffffff,{colour(vmax, vmax)})"
    return (f'<div class="cv-scale" data-scale="{vmax:.6g}">kernel weight {-vmax:+.3g}'
            f'<div class="cv-grad" style="background:{grad}"></div>{vmax:+.3g} (one scale for the page)</div>')


def unit_cell(run: str, uid: str, caption: str, title: str, width: int = 64) -> str:
    thumb, _ = unit_brief(run, revision(run), uid)
    return cell(image_url(thumb) if thumb else None, caption, title, width=width,
                link=href("circuit", run, unit=uid), attrs=f'data-unit="{esc(uid)}"', missing=uid)


def connections(run: str, c: StoredCircuit, vmax: float, sign: str) -> None:
    conns = c.positive if sign == "+" else c.negative
    arrow = "from" if c.direction == "inputs" else "into"
    st.markdown(f"**{'Positive' if sign == '+' else 'Negative'} {c.direction} {arrow} {c.layer}**",
                help="Ranked by the kernel's total (its sum). Each kernel is drawn over the source positions, rows "
                     "top to bottom. Direct: one conv's weights; otherwise expanded weights (ReLUs as identity, max "
                     "pools as average pools).")
    if not conns:
        st.caption("none")
        return
    rows = []
    for con in conns:
        how = "direct" if con.direct else "expanded"
        title = f"{con.other}: total {con.total:+.4g}, {how}" + (f", {con.branch} branch" if con.branch else "")
        rows.append(f'<div class="cv-circ" data-sign="{sign}">{unit_cell(run, con.other, con.other, title)}'
                    f'{kernel_html(con.kernel, vmax)}<div>{con.total:+.3g}<br><small>{esc(how)}'
                    f'{" · " + esc(con.branch) if con.branch else ""}</small></div></div>')
    html("".join(rows))


def faithfulness_figure(f: StoredFaithfulness) -> str:
    """Two interval bars on one axis: the top-n ablation drop and the random-n drop."""
    lo = min(0.0, f.top_interval[0], f.random_interval[0])
    hi = max(f.baseline, f.top_interval[1], f.random_interval[1], 1e-9)

    def pos(v: float) -> float:
        return 100 * (v - lo) / (hi - lo)

    def bar(name: str, mean: float, ci: tuple[float, float], col: str) -> str:
        return (f'<div>{esc(name)}: <b>{mean:.3g}</b> [{ci[0]:.3g}, {ci[1]:.3g}]</div><div class="cv-track">'
                f'<div class="cv-zero" style="left:{pos(0):.1f}%"></div>'
                f'<div class="cv-ci" style="left:{pos(ci[0]):.1f}%;width:{pos(ci[1]) - pos(ci[0]):.1f}%;'
                f'background:{col}"></div><div class="cv-mean" style="left:{pos(mean):.1f}%"></div></div>')

    verdict = "passes" if f.passes else "does not pass"
    data = f.data or {}
    where = f"{data.get('kind', 'data')}" + (f" seed {data['seed']}" if "seed" in data else "")
    return (f'<div class="cv-faith" data-faithfulness="{esc(f.source)}" data-pass="{int(f.passes)}">'
            + bar(f"ablating the top {f.n} attributed sources ({f.mode})", f.top_drop, f.top_interval, "#b2182b")
            + bar(f"ablating {f.n} random sources (mean of {f.draws} draws, 2.5-97.5%)", f.random_drop,
                  f.random_interval, "#2166ac")
            + f'<div>ratio <b>{f.ratio:.2f}x</b>, intervals {"disjoint" if f.disjoint else "overlap"}: {verdict} '
            f'(target: at least 2x, disjoint). Mean activation {fmt(f.baseline)}; top sources: '
            + ", ".join(f'<a href="{esc(href("circuit", current_run(), unit=s))}" target="_self">{esc(s)}</a>'
                        for s in f.top_sources)
            + f"; measured on the unit's top {f.examples or 'all'} images of held-out {esc(where)}.</div></div>")


def circuit_link(container, run: str, unit_id: str) -> None:
    """The link other pages show to a unit's circuit page."""
    container.page_link(pages()["circuit"], label="circuit", icon=":material/account_tree:",
                        query_params={**link_params(run), "unit": unit_id})


def render() -> None:
    run = current_run()
    store = get_run(run)
    uid = st.query_params.get("unit") or next(iter(store.circuit_units()), None)
    top = st.columns([5, 3], vertical_alignment="bottom")
    with top[1]:
        jump_box(run, key="jump-circuit")
    if uid is None:
        top[0].title("Circuits")
        st.info("This run holds no circuits yet. Produce one with:", icon=":material/hourglass_empty:")
        st.code(f"circuitsviz circuit --model {store.info().model or 'MODEL'} --unit LAYER:CHANNEL "
                f"--source EARLIER_LAYER --run {run}", language="bash")
        return
    try:
        uid = Unit.parse(uid).id
    except Exception as e:  # noqa: BLE001 - a bad id in the URL: one line, not a traceback
        st.error(str(e))
        return
    set_url(run, unit=uid, layer=Unit.parse(uid).layer)
    view = load_circuit(run, revision(run), uid)
    top[0].title(f"Circuit of {uid}")
    style()
    html(CSS)
    vmax = view.scale()
    left, mid, right = st.columns([5, 2, 3], gap="medium")
    with mid:
        thumb, _ = unit_brief(run, revision(run), uid)
        html(cell(image_url(thumb) if thumb else None, uid, f"{uid}: open its {page_for(uid)} page", width=128,
                  link=href(page_for(uid), run, unit=uid, layer=Unit.parse(uid).layer),
                  attrs=f'data-target="{esc(uid)}"', missing="not rendered"))
        st.caption(f"[{page_for(uid)} page]({href(page_for(uid), run, unit=uid)})")
    with left:
        if not view.inputs:
            st.info(f"No inputs of {uid} stored. Produce them with:", icon=":material/hourglass_empty:")
            st.code(f"circuitsviz circuit --model {store.info().model or 'MODEL'} --unit {uid} --source "
                    f"EARLIER_LAYER --run {run}", language="bash")
        for c in view.inputs:
            connections(run, c, vmax, "+")
            connections(run, c, vmax, "-")
    with right:
        for c in view.outputs:
            connections(run, c, vmax, "+")
        st.markdown("**Read by** (units whose stored inputs include this one)",
                    help="Downstream: the units whose stored circuits list this unit among their inputs, by total.")
        if view.read_by:
            html("".join(f'<div class="cv-circ" data-downstream="{esc(r)}">'
                         f'{unit_cell(run, r, r, f"{r}: weight total {t:+.4g} from {uid}", width=48)}'
                         f"<div>{t:+.3g}</div></div>" for r, t in view.read_by))
        else:
            st.caption("no stored circuit reads this unit")
    if view.inputs or view.outputs:
        html(legend(vmax))
    st.markdown("**Faithfulness**", help="Ablate (zero) the unit's top-n sources, ranked by attribution on half of "
                "its top images, and measure the drop on the other half; against n random sources of the same layer.")
    if view.faithfulness:
        html("".join(faithfulness_figure(f) for f in view.faithfulness))
    else:
        st.caption(f"not measured; `circuitsviz circuit --unit {uid} --source LAYER --data DATA --faithfulness "
                   f"--run {run}` records it")
