"""Evidence page: the held-out evaluation a run holds in ``evidence.json``, shown, never recomputed.

Three parts, all read through :mod:`circuitsviz.evaluate` (its ``Evidence`` and ``Evaluation``
dataclasses compute every mean, interval and target; this page only lays them out):

1. the held-out table: channels, the SAE per ``k``, k-means and the random TopK dictionary, scored
   on images the dictionaries were not fitted on, mean ± 95% interval over seeds, with the targets;
2. the sparsity trade-off: FVU against the one-concept share, one point per (dictionary, k);
3. FV concept recovery: how often an independent judge labels a unit's visualization as its concept.

A run without ``evidence.json`` gets one line saying how to make it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import streamlit as st

from ..errors import DamagedRunError
from ..evaluate import Evaluation, Evidence
from ..evaluate.evidence import FEATURES, FILE
from ..evaluate.intervals import Interval, format_interval
from .common import current_run, get_run, set_url

NAMES = {"channels": "channels", "sae": "SAE features", "kmeans": "k-means", "random": "random TopK"}
HOW_TO = (f"This run holds no held-out evaluation (`{FILE}`). Make it with `circuitsviz demo --out RUN` "
          "(the demo model), or from Python: `circuitsviz.evaluate.evidence(model, data, out=RUN)`.")
HELP = {
    "scored": "Units that fire on at least the minimum number of evaluation images, of all units. Only these "
              "are averaged into the figures to the right.",
    "rare": "Units that fire on some evaluation images, but fewer than the minimum: counted, never averaged in.",
    "concepts": "Mean concept count of the scored units: concepts whose mean image-level activation reaches "
                "half the best concept's. Lower is better; 1 is monosemantic.",
    "mono": "One-concept share: the fraction of scored units with concept count 1 (monosemantic).",
    "purity": "Mean top-k purity of the scored units: the share of a unit's top evaluation images that carry "
              "its most common label.",
    "gain": "Purity gain: mean purity minus the channels' mean purity, on the same evaluation images.",
    "fvu": "Fraction of variance unexplained: reconstruction error over the variance of the layer's "
           "activations, on every evaluation position. Lower is better.",
    "l0": "L0: mean number of latents active per position (the TopK k; 1 for k-means).",
    "dead": "Dead: the fraction of latents that fire nowhere on the evaluation images (for the channels: "
            "silent channels).",
    "seeds": "Dictionaries fitted with different seeds; each figure is their mean ± the 95% Student-t interval.",
}
COLUMNS = {"concepts": "concept_count", "mono": "monosemantic", "purity": "purity", "gain": "purity_gain",
           "fvu": "fvu", "l0": "l0", "dead": "dead_fraction"}
PERCENT = {"monosemantic", "dead_fraction"}
DIGITS = {"concept_count": 2, "l0": 2}


# ---------------------------------------------------------------- reading
def evidence_path(run: str | Path) -> Path:
    return Path(run) / FILE


@st.cache_data(show_spinner=False, max_entries=16)
def _read(path: str, stamp: tuple[int, int]) -> Evidence:
    """Parsed once per file version (``stamp``: mtime and size, so a new evaluation shows up)."""
    try:
        return Evidence.from_dict(json.loads(Path(path).read_text()))
    except (ValueError, KeyError, TypeError) as e:
        raise DamagedRunError(f"{FILE} cannot be read ({type(e).__name__}: {e}); rerun the evaluation") from None


def load_evidence(run: str | Path) -> Evidence | None:
    """The run's ``evidence.json`` as an :class:`Evidence`; ``None`` when the run has none."""
    path = evidence_path(run)
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise DamagedRunError(f"{FILE} in {Path(run).name!r} is not a plain file; the viewer reads only the run's own")
    if not path.is_file():
        return None
    s = path.stat()
    return _read(str(path), (s.st_mtime_ns, s.st_size))


def evaluation_of(ev: Evidence) -> Evaluation:
    """The :class:`Evaluation` that ``ev.evaluation`` (its ``to_dict``) was written from, minus the
    fitted dictionaries, so its own ``figures``/``targets`` give the page's numbers."""
    try:
        return Evaluation.from_dict(ev.evaluation)
    except (KeyError, TypeError, AttributeError) as e:
        raise DamagedRunError(f"{FILE} holds no readable evaluation ({type(e).__name__}: {e})") from None


# ---------------------------------------------------------------- what the page shows
def _cell(iv: Interval, figure: str) -> str:
    return format_interval(iv, DIGITS.get(figure, 3), percent=figure in PERCENT)


def table_rows(ev: Evaluation) -> list[dict[str, str]]:
    """One row per unit set in the evaluation's own order, each figure as the study prints it."""
    ch = ev.channels
    rows = [{"units": NAMES["channels"], "k": "–", "seeds": "–",
             "scored": f"{int(ch.scored.sum())}/{len(ch.fires)}", "rare": str(ch.n_rare),
             "concepts": f"{ch.mean_concepts:.2f}", "mono": f"{ch.monosemantic:.1%}",
             "purity": f"{ch.mean_purity:.3f}", "gain": "–", "fvu": "–", "l0": "–",
             "dead": f"{ch.n_silent / max(len(ch.fires), 1):.1%}"}]
    for method, k in ev.groups():
        f = ev.figures(method, k)
        rows.append({"units": NAMES[method], "k": "–" if k is None else str(k),
                     "seeds": str(len(ev.runs_of(method, k))), "scored": f"{f['scored'].mean:.1f}/{ev.n_latents}",
                     "rare": f"{f['rare'].mean:.1f}",
                     **{col: _cell(f[fig], fig) for col, fig in COLUMNS.items()}})
    return rows


def _num(x: float) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def tradeoff_points(ev: Evaluation) -> list[dict]:
    """One point per (dictionary, k): FVU against the one-concept share, with their intervals
    (``None`` bounds where a single seed gives none)."""
    out = []
    for method, k in ev.groups():
        f = ev.figures(method, k)
        fvu, mono = f["fvu"], f["monosemantic"]
        out.append({"dictionary": NAMES[method], "k": "–" if k is None else str(k),
                    "label": f"{NAMES[method]}" + ("" if k is None else f" k={k}"),
                    "fvu": _num(fvu.mean), "fvu_low": _num(fvu.low), "fvu_high": _num(fvu.high),
                    "mono": _num(mono.mean), "mono_low": _num(mono.low), "mono_high": _num(mono.high)})
    return out


def tradeoff_spec(points: list[dict]) -> dict:
    enc = {"color": {"field": "dictionary", "type": "nominal", "title": None}}
    return {
        "data": {"values": points}, "height": 320,
        "layer": [
            {"mark": {"type": "rule"}, "encoding": {**enc, "x": {"field": "fvu_low", "type": "quantitative"},
                                                   "x2": {"field": "fvu_high"},
                                                   "y": {"field": "mono", "type": "quantitative"}}},
            {"mark": {"type": "rule"}, "encoding": {**enc, "y": {"field": "mono_low", "type": "quantitative"},
                                                   "y2": {"field": "mono_high"},
                                                   "x": {"field": "fvu", "type": "quantitative"}}},
            {"mark": {"type": "point", "filled": True, "size": 90},
             "encoding": {**enc, "x": {"field": "fvu", "type": "quantitative", "title": "FVU (lower is better)"},
                          "y": {"field": "mono", "type": "quantitative", "title": "one-concept share",
                                "axis": {"format": "%"}},
                          "tooltip": [{"field": "label"}, {"field": "fvu", "format": ".3f"},
                                      {"field": "mono", "format": ".1%"}]}},
            {"mark": {"type": "text", "dx": 8, "align": "left"},
             "encoding": {"x": {"field": "fvu", "type": "quantitative"}, "y": {"field": "mono", "type": "quantitative"},
                          "text": {"field": "k"}}},
        ],
    }


def recovery_rows(ev: Evidence) -> tuple[list[dict], Interval | None]:
    """One row per kind of unit the judge saw, and the features' mean over SAE seeds (as the study's
    summary computes it; ``None`` with fewer than two seeds)."""
    rows = []
    for r in ev.recovery:
        hits = sum(bool(x["hit"]) for x in r["rows"])
        rows.append({"units": r["kind"], "judged": len(r["rows"]), "hits": hits,
                     "recovery": "–" if not r["rows"] or r["recovery"] is None else f"{r['recovery']:.1%}",
                     "render fires the unit": "–" if r["fires"] is None else f"{r['fires']:.0%}"})
    return rows, ev.feature_recovery()


def _concept(label, classes: list[str] | None) -> str:
    if isinstance(label, int) and classes and 0 <= label < len(classes):
        return classes[label]
    return "–" if label is None else str(label)


# ---------------------------------------------------------------- the page
def held_out_table(ev: Evaluation, settings: dict) -> None:
    st.subheader("Held-out table", help=HELP["seeds"])
    seeds = settings.get("data_seed"), settings.get("eval_seed")
    where = f"data seed {seeds[0]}; scored on data seed {seeds[1]}" if None not in seeds else "a different data seed"
    st.caption(f"Protocol: every dictionary ({ev.n_latents} latents) is fitted on {ev.n_train_images} training "
               f"images ({ev.n_train_samples} samples of {ev.layer}); all units are scored on {ev.n_eval_images} "
               f"other images ({where}). A unit is scored when it fires on at least {ev.min_fires} "
               "of them. Figures: mean ± 95% t interval over seeds.")
    cfg = {c: st.column_config.TextColumn(c, help=HELP[c]) for c in ("scored", "rare", "concepts", "mono", "purity",
                                                                     "gain", "fvu", "l0", "dead", "seeds")}
    cfg["concepts"] = st.column_config.TextColumn("concept count", help=HELP["concepts"])
    cfg["mono"] = st.column_config.TextColumn("one-concept share", help=HELP["mono"])
    cfg["gain"] = st.column_config.TextColumn("purity gain", help=HELP["gain"])
    cfg["fvu"] = st.column_config.TextColumn("FVU", help=HELP["fvu"])
    cfg["l0"] = st.column_config.TextColumn("L0", help=HELP["l0"])
    st.dataframe(table_rows(ev), hide_index=True, column_config=cfg)
    k = ev.ks[0] if ev.ks else None
    if k is None:
        return
    lines = [f"{':green[met]' if ok else ':red[missed]'}: {name}" for name, ok in ev.targets(k).items()]
    st.markdown(f"**Targets** (SAE at k={k}, means over seeds):\n\n" + "\n".join(f"- {x}" for x in lines))


def tradeoff(ev: Evaluation) -> None:
    st.subheader("Sparsity trade-off", help="Each point is one dictionary at one k, mean over seeds; bars: 95% "
                 "intervals. Up and left is better: more monosemantic units, less variance unexplained.")
    points = tradeoff_points(ev)
    st.vega_lite_chart(tradeoff_spec(points), width="stretch")
    st.caption("Labels: the TopK k (– for k-means, which has none). The random TopK dictionary has the SAE's "
               "size and k but random directions: what sparsity alone gives.")


def recovery(ev: Evidence, classes: list[str] | None) -> None:
    st.subheader("FV concept recovery",
                 help="The fraction of evaluation-monosemantic units whose feature visualization an independent "
                      "judge (a second classifier, trained apart) labels as the unit's concept.")
    if not ev.recovery:
        st.caption("No FV concept recovery in this evaluation (it is measured on the demo model only).")
        return
    rows, mean = recovery_rows(ev)
    chance = f"1/{len(classes)} = {1 / len(classes):.1%}" if classes else "about 1/13"
    fv = (ev.settings or {}).get("fv") or {}
    st.caption(f"Chance: {chance}. Renders: {fv.get('steps', '?')} steps, {fv.get('images', '?')} per unit; "
               "class logits are the easiest case. 'Render fires the unit': the share of renders on which "
               "the unit itself fires.")
    if mean is not None:
        st.markdown(f"**{FEATURES}, mean over {len(mean.values)} SAE seeds: "
                    f"{format_interval(mean, percent=True)}** (target ≥ 50%)")
    st.dataframe(rows, hide_index=True)
    for r in ev.recovery:
        if r["fires"] is not None:
            st.caption(f"{r['kind']}: the render makes the unit fire in {r['fires']:.0%}.")
    with st.expander("Every judged unit"):
        st.dataframe([{"units": r["kind"], "unit": x.get("unit"), "concept": _concept(x.get("concept"), classes),
                       "judged": _concept(x.get("judged"), classes), "confidence": x.get("confidence"),
                       "hit": bool(x.get("hit"))} for r in ev.recovery for x in r["rows"]], hide_index=True)


def render() -> None:
    run = current_run()
    set_url(run)
    st.title("Held-out evidence")
    ev = load_evidence(run)
    if ev is None:
        st.info(HOW_TO, icon=":material/science:")
        return
    evaluation = evaluation_of(ev)
    held_out_table(evaluation, ev.settings or {})
    tradeoff(evaluation)
    recovery(ev, get_run(run).info().classes)
