"""What every viewer page shares: the served runs, the cached loaders over the store, links.

Pages never touch the store directly: they ask these loaders, which are cached per run
revision (so a job writing into the run shows up on the next rerun, and nothing else reloads).
The viewer only reads: runs are opened with ``open_run`` (never ``create``), and rendered
example crops are cached outside the run (see ``circuitsviz.store.render``).
"""

from __future__ import annotations

import base64
import functools
import html
from dataclasses import dataclass, field
from pathlib import Path

import streamlit as st

from ..errors import CircuitsvizError, UnknownNameError
from ..store import (
    Example, Feature, LayerRecord, QuantileExample, Run, SAERecord, Split, Stats, UnitRecord, Visualization,
    open_run,
)
from ..units import Unit
from .served import Served, launch_path

PAGE_NAMES = ("layer", "unit", "feature", "compare")


# ---------------------------------------------------------------- the runs this viewer serves
@st.cache_resource(show_spinner=False)
def served_at(path: str) -> Served:
    return Served.at(path)


def served() -> Served:
    """The run (or root of runs) named at launch; stops the page with a message when there is none."""
    path = launch_path()
    if not path:
        st.error("No run to show. Start the viewer with `circuitsviz serve runs/NAME` "
                 "(or `streamlit run apps/viewer.py -- runs/NAME`).")
        st.stop()
    try:
        return served_at(_resolved(path))
    except CircuitsvizError as e:
        st.error(f"Cannot serve {path!r}: {e}")
        st.stop()


@functools.lru_cache(maxsize=64)
def _resolved(path: str) -> str:
    """The absolute form of the launch path (asked for by every link a page draws)."""
    return str(Path(path).expanduser().resolve())


@st.cache_resource(show_spinner=False)
def get_run(path: str) -> Run:
    """One read-only store handle per run directory, shared by every session (``Run`` is thread-safe)."""
    return open_run(path)


def link_params(run: str) -> dict[str, str]:
    """The URL parameters that select ``run``: its name when several runs are served, else none."""
    s = served()
    return {} if s.single else {"run": Path(run).name}


# ---------------------------------------------------------------- loaders
@dataclass
class LayerView:
    layer: LayerRecord
    channels: list[UnitRecord]
    features: list[UnitRecord]
    vis: dict[str, str]                       # unit id -> PNG path of its positive visualization
    stats: dict[str, Stats]
    split_channels: dict[int, Split]          # channel index -> its split
    split_of: dict[str, str]                  # feature id -> the channel id it was split from


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
    split: Split | None = None                # a channel's split
    split_from: list[tuple[Split, float | None]] = field(default_factory=list)  # a feature's splits and share
    classes: list[str] | None = None
    input_size: int | None = None


@st.cache_data(show_spinner=False, max_entries=64)
def load_layer(path: str, revision: int, layer: str) -> LayerView:
    run = get_run(path)
    with run.snapshot():
        vis = run.layer_visualizations(layer)
        splits = run.splits(layer)
        split_of = {}
        for sp in splits:
            for f in sp.features:
                split_of.setdefault(f.unit_id, sp.channel_id)
        return LayerView(run.layer(layer), run.units(layer=layer, kind="channel"),
                         run.units(layer=layer, kind="feature"),
                         {uid: str(v.path) for uid, v in vis.items()}, run.layer_stats(layer),
                         {sp.channel: sp for sp in splits}, split_of)


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
                        run.stats(unit_id), classes=run.info().classes, input_size=run.info().input_size)
        if unit.kind == "feature":
            view.feature = run.feature(unit_id)
            view.sae = next((s for s in run.saes() if s.name == unit.sae), None)
            view.split_from = [(sp, f.share) for sp in run.splits(unit.layer) for f in sp.features
                               if f.unit_id == unit_id]
        else:
            view.writers = run.features_of_channel(unit.layer, unit.index)
            view.split = run.split(unit.layer, unit.index)
        return view


@st.cache_data(show_spinner=False, max_entries=256)
def unit_brief(path: str, revision: int, unit_id: str) -> tuple[str | None, Stats | None]:
    """A unit's positive visualization (PNG path) and statistics: what a thumbnail needs."""
    run = get_run(path)
    vis = run.visualizations(unit_id, "positive")
    return (str(vis[0].path) if vis else None), run.stats(unit_id)


@st.cache_data(show_spinner=False)
def unit_ids(path: str, revision: int) -> list[str]:
    return [u.id for u in get_run(path).units() if u.kind != "neuron"]


@st.cache_data(show_spinner=False)
def split_list(path: str, revision: int) -> list[Split]:
    return get_run(path).splits()


def revision(path: str) -> int:
    """The run's revision, read once per script run (every loader is keyed by it)."""
    revs = st.session_state.setdefault("_revisions", {})
    if path not in revs:
        revs[path] = get_run(path).revision()
    return revs[path]


# ---------------------------------------------------------------- images
# Example renders already found, and each run revision's render context, shared by every session
# of this process. Plain dicts, not ``st.cache_*``: a page asks for ~150 renders, and Streamlit's
# per-call argument hashing would cost more than the lookups it saves.
_RENDERED: dict[tuple, str | None] = {}
_CONTEXTS: dict[tuple[str, int], object] = {}


def render_context(path: str, revision: int):
    """What every render of the run needs from its index (data source, input size, receptive fields)."""
    ctx = _CONTEXTS.get((path, revision))
    if ctx is None:
        from ..store.render import RenderContext

        ctx = _CONTEXTS[(path, revision)] = RenderContext.of(get_run(path))
    return ctx


def example_png(path: str, example: Example | QuantileExample, mode: str, size: int = 128,
                rev: int | None = None) -> str | None:
    """The render of an example (``None`` when its source image cannot be read). ``rev``: the
    run's revision, when the caller has it at hand."""
    rev = revision(path) if rev is None else rev
    key = (path, rev, example.unit_id, type(example).__name__,
           getattr(example, "rank", getattr(example, "bin", 0)), example.image_id, example.y, example.x, mode, size)
    if key not in _RENDERED:
        from ..store.render import render_example

        if len(_RENDERED) > 200_000:  # a long-lived viewer of a run a job keeps writing: start afresh
            _RENDERED.clear()

        try:
            _RENDERED[key] = str(render_example(get_run(path), example, mode, size, context=render_context(path, rev)))
        except (CircuitsvizError, OSError, KeyError, ValueError):
            _RENDERED[key] = None
    return _RENDERED[key]


def image_url(png: str | Path | None, check: bool = True) -> str | None:
    """A URL the browser can fetch ``png`` from (Streamlit's media server; a data URI outside a
    server). ``None`` when the file is missing, so the caller shows a placeholder instead."""
    if png is None or (check and not Path(png).is_file()):
        return None
    try:
        from streamlit.runtime import get_instance

        return get_instance().media_file_mgr.add(str(png), "image/png", f"circuitsviz-{Path(png).stem}")
    except Exception:  # no runtime (bare script, some test harnesses): inline the bytes instead
        return "data:image/png;base64," + base64.b64encode(Path(png).read_bytes()).decode()


def esc(text) -> str:
    return html.escape(str(text), quote=True)


# ---------------------------------------------------------------- navigation and links
def pages() -> dict:
    return st.session_state["_pages"]


def href(page: str, run: str, **params) -> str:
    """A relative URL to ``page`` with the run and ``params`` (for links inside HTML blocks)."""
    from urllib.parse import urlencode

    query = {**link_params(run), **{k: str(v) for k, v in params.items() if v is not None}}
    return f"./{page}" + (f"?{urlencode(query)}" if query else "")


def link(page: str, label: str, run: str, help: str | None = None, **params) -> None:  # noqa: A002
    """A link to ``page`` that carries the run and the given ids in its URL."""
    st.page_link(pages()[page], label=label, help=help,
                 query_params={**link_params(run), **{k: str(v) for k, v in params.items()}})


def go(page: str, run: str, **params) -> None:
    st.switch_page(pages()[page], query_params={**link_params(run), **{k: str(v) for k, v in params.items()}})


def page_for(unit_id: str) -> str:
    try:
        return "feature" if Unit.parse(unit_id).sae else "unit"
    except CircuitsvizError:
        return "unit"


def set_url(run: str, **params) -> None:
    """Make the address bar reproduce the current view (and remember the unit for the sidebar)."""
    wanted = {**link_params(run), **{k: str(v) for k, v in params.items() if v is not None}}
    if {k: st.query_params.get(k) for k in wanted} != wanted:
        st.query_params.update(wanted)
    if params.get("unit"):
        st.session_state["_last_unit"] = str(params["unit"])
        if "/" not in str(params["unit"]):
            st.session_state["_last_channel"] = str(params["unit"])
        if params.get("layer"):
            st.session_state["_last_layer"] = str(params["layer"])


def jump_box(run: str, key: str = "jump") -> None:
    """A text box that opens any unit id."""
    with st.form(key, border=False, clear_on_submit=True):
        cols = st.columns([4, 1], vertical_alignment="bottom")
        uid = cols[0].text_input("Jump to unit id", placeholder="mixed3b:7 or mixed3b/topk8x_k1:17",
                                 label_visibility="collapsed")
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


def pct(v) -> str:
    return "–" if v is None else f"{v:.1%}"


# ---------------------------------------------------------------- what the URL asks for
def current_run() -> str:
    """The run directory this view shows: the served run, or the one the URL's ``run`` names among
    the served runs. Anything else stops with a message listing the runs served."""
    s = served()
    asked = st.query_params.get("run")
    if s.single and asked is not None and asked not in s.names:
        asked = None  # a stale or foreign ?run= on a one-run viewer: show the run it serves
    try:
        path = s.resolve(asked)
    except CircuitsvizError as e:
        st.error(f"This viewer does not serve that run. {e}")
        st.stop()
    try:
        st.session_state.setdefault("_revisions", {})[str(path)] = get_run(str(path)).revision()
    except CircuitsvizError as e:
        st.error(f"Cannot open run {path.name!r}: {e}")
        st.stop()
    except Exception as e:  # a damaged index: say so in one line instead of a traceback
        st.error(f"Cannot read run {path.name!r}: {type(e).__name__}: {e}. Check it with `circuitsviz verify`.")
        st.stop()
    return str(path)


def nearest_ids(uid: str, ids: list[str], n: int = 3) -> list[str]:
    """The ``n`` ids closest to ``uid``: same layer and kind first, then by index distance, then by spelling.

    >>> nearest_ids("mixed3b:99", ["mixed3a:9", "mixed3b:7", "mixed3b:11", "mixed3b:2"])
    ['mixed3b:11', 'mixed3b:7', 'mixed3b:2']
    """
    import difflib

    try:
        want = Unit.parse(uid)
    except CircuitsvizError:
        return difflib.get_close_matches(uid, ids, n=n, cutoff=0.0)

    def key(other: str):
        u = Unit.parse(other)
        same = (u.layer == want.layer, u.sae == want.sae)
        return (not all(same), not same[0], abs(u.index - want.index),
                -difflib.SequenceMatcher(None, uid, other).ratio())

    return sorted(ids, key=key)[:n]


def current_unit(run: str, default: str | None, page: str) -> UnitView:
    """The unit named by the URL (or ``default``); an unknown id stops with the 3 nearest ids."""
    uid = st.query_params.get("unit") or default
    if not uid:
        placeholder("This run has no units yet.", command("examples", run))
        st.stop()
    try:
        Unit.parse(uid)
        return load_unit(run, revision(run), uid)
    except CircuitsvizError as e:
        if isinstance(e, UnknownNameError):
            near = nearest_ids(uid, unit_ids(run, revision(run)))
            st.error(f"Unknown unit id {uid!r} in this run." + (" Nearest: " + ", ".join(near) if near else ""))
            for n in near:
                link(page_for(n) if page != "compare" else page, f"Open {n}", run, unit=n, layer=Unit.parse(n).layer)
        else:
            st.error(str(e))
        layer = st.query_params.get("layer")
        link("layer", "Back to the layer overview", run, **({"layer": layer} if layer else {}))
        st.stop()
