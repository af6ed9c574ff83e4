"""What every viewer page shares: the cached loaders over the store, links, placeholders.

Pages never touch the store directly: they ask these loaders, which are cached per run
revision (so a job writing into the run shows up on the next rerun, and nothing else reloads).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import streamlit as st

from circuitsviz.errors import CircuitsvizError, UnknownNameError
from circuitsviz.store import (
    Example, Feature, LayerRecord, QuantileExample, Run, SAERecord, Split, Stats, UnitRecord, Visualization,
    open_run,
)
from circuitsviz.units import Unit

PAGE_NAMES = ("layer", "unit", "feature", "compare")


# ---------------------------------------------------------------- the run
def run_path_from_launch() -> str | None:
    """The run given at launch: ``streamlit run apps/viewer.py -- RUN`` or ``$CIRCUITSVIZ_RUN``."""
    if Path(sys.argv[0]).name == "viewer.py" and len(sys.argv) > 1:
        return sys.argv[1]
    return os.environ.get("CIRCUITSVIZ_RUN")


@st.cache_resource(show_spinner=False)
def get_run(path: str) -> Run:
    """One store handle per run path, shared by every session (``Run`` is thread-safe)."""
    return open_run(path)


@dataclass
class LayerView:
    layer: LayerRecord
    channels: list[UnitRecord]
    vis: dict[str, str]                       # unit id -> PNG path of its positive visualization
    stats: dict[str, Stats]


@dataclass
class UnitView:
    unit: UnitRecord
    layer: LayerRecord | None
    vis: list[Visualization]                  # this unit's, plus the neuron visualizations of a channel
    examples: list[Example]
    quantiles: list[QuantileExample]
    stats: Stats | None
    feature: Feature | None = None
    sae: SAERecord | None = None
    writers: list[tuple[Feature, float]] = field(default_factory=list)  # features writing into a channel
    split: Split | None = None
    classes: list[str] | None = None


@st.cache_data(show_spinner=False, max_entries=64)
def load_layer(path: str, revision: int, layer: str) -> LayerView:
    run = get_run(path)
    with run.snapshot():
        vis = run.layer_visualizations(layer)
        return LayerView(run.layer(layer), run.units(layer=layer, kind="channel"),
                         {uid: str(v.path) for uid, v in vis.items()}, run.layer_stats(layer))


@st.cache_data(show_spinner=False, max_entries=512)
def load_unit(path: str, revision: int, unit_id: str) -> UnitView:
    """Everything one unit page shows, read from one consistent state of the store."""
    run = get_run(path)
    with run.snapshot():
        unit = run.unit(unit_id)
        layers = {r.name: r for r in run.layers()}
        vis = run.visualizations(unit_id)
        if unit.kind == "channel":  # the channel's spatial neurons carry the "neuron" visualizations
            for n in run.units(layer=unit.layer, kind="neuron"):
                if n.index == unit.index:
                    vis += run.visualizations(n.id)
        view = UnitView(unit, layers.get(unit.layer), vis, run.examples(unit_id), run.quantile_examples(unit_id),
                        run.stats(unit_id), classes=run.info().classes)
        if unit.kind == "feature":
            view.feature = run.feature(unit_id)
            view.sae = next((s for s in run.saes() if s.name == unit.sae), None)
        else:
            view.writers = run.features_of_channel(unit.layer, unit.index)
            view.split = run.split(unit.layer, unit.index)
        return view


@st.cache_data(show_spinner=False, max_entries=4096)
def example_image(path: str, example: Example | QuantileExample, mode: str, size: int = 128) -> str | None:
    """The cached render of an example (``None`` when its source image cannot be read)."""
    try:
        return str(get_run(path).example_image(example, mode, size))
    except (CircuitsvizError, OSError, KeyError):
        return None


def revision(path: str) -> int:
    return get_run(path).revision()


# ---------------------------------------------------------------- navigation and links
def pages() -> dict:
    return st.session_state["_pages"]


def link(page: str, label: str, run: str, **params) -> None:
    """A link to ``page`` that carries the run and the given ids in its URL."""
    st.page_link(pages()[page], label=label, query_params={"run": run, **{k: str(v) for k, v in params.items()}})


def go(page: str, run: str, **params) -> None:
    st.switch_page(pages()[page], query_params={"run": run, **{k: str(v) for k, v in params.items()}})


def page_for(unit_id: str) -> str:
    try:
        return "feature" if Unit.parse(unit_id).sae else "unit"
    except CircuitsvizError:
        return "unit"


def set_url(run: str, **params) -> None:
    """Make the address bar reproduce the current view."""
    wanted = {"run": run, **{k: str(v) for k, v in params.items() if v is not None}}
    if {k: st.query_params.get(k) for k in wanted} != wanted:
        st.query_params.update(wanted)


def jump_box(run: str, key: str = "jump") -> None:
    """A text box that opens any unit id."""
    with st.form(key, border=False, clear_on_submit=True):
        cols = st.columns([4, 1], vertical_alignment="bottom")
        uid = cols[0].text_input("Jump to unit id", placeholder="mixed4e:55 or mixed4e/sae:17")
        if cols[1].form_submit_button("Open") and uid.strip():
            go(page_for(uid.strip()), run, unit=uid.strip())


# ---------------------------------------------------------------- missing data
def command(what: str, run: str, unit: UnitRecord | None = None, model: str | None = None) -> str:
    """The CLI command that produces ``what`` for ``unit`` in ``run``."""
    layer, index = (unit.layer, unit.index) if unit else ("LAYER", "CHANNELS")
    model = model or "MODEL"
    if unit is not None and unit.kind == "feature":
        return f"circuitsviz split --run {run} --layer {layer} --channel CHANNEL"
    return {
        "visualization": f"circuitsviz visualize --model {model} --layer {layer} --channels {index} --out {run}",
        "examples": f"circuitsviz mine --model {model} --data DATA --layers {layer} --out {run}",
        "sae": f"circuitsviz fit-sae --model {model} --data DATA --layer {layer} --out {run}",
        "split": f"circuitsviz split --run {run} --layer {layer} --channel {index}",
    }[what]


def placeholder(message: str, cmd: str) -> None:
    """Say what is missing and which command would produce it (never an exception)."""
    st.info(f"{message} Produce it with:", icon=":material/hourglass_empty:")
    st.code(cmd, language="bash")


def fmt(v, digits: int = 3) -> str:
    return "–" if v is None else f"{v:.{digits}g}"


# ---------------------------------------------------------------- what the URL asks for
def current_run() -> str:
    """The run path this view shows (URL ``run``, else the launch argument); stops with a clear
    message and a way back when there is none or it cannot be opened."""
    launched = run_path_from_launch()
    path = st.query_params.get("run") or launched
    if not path:
        st.error("No run to show. Start the viewer with `circuitsviz serve runs/NAME`, "
                 "or add `?run=runs/NAME` to the address.")
        st.stop()
    try:
        get_run(path)
    except CircuitsvizError as e:
        st.error(f"Cannot open run {path!r}: {e}")
        if launched and launched != path:
            link("layer", f"Back to {launched}", launched)
        st.stop()
    return path


def current_unit(run: str, default: str | None, page: str) -> UnitView:
    """The unit named by the URL (or ``default``); an unknown id stops with a message and links back."""
    uid = st.query_params.get("unit") or default
    if not uid:
        placeholder("This run has no units yet.", command("examples", run))
        st.stop()
    try:
        Unit.parse(uid)
        return load_unit(run, revision(run), uid)
    except CircuitsvizError as e:
        st.error(f"Unknown unit id {uid!r} in this run. {e}" if isinstance(e, UnknownNameError) else str(e))
        layer = st.query_params.get("layer")
        link("layer", "Back to the layer overview", run, **({"layer": layer} if layer else {}))
        st.stop()
