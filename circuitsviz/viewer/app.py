"""The viewer's Streamlit script: wires the pages into ``st.navigation`` with a sidebar that
keeps the current unit. ``circuitsviz serve RUN`` runs this file; ``apps/viewer.py`` calls
:func:`main` for ``streamlit run apps/viewer.py -- RUN``.

Imports are absolute: Streamlit runs this file as a script, outside its package.

Every view is a deep link: ``/compare?unit=mixed3b:7``, ``/layer?layer=mixed3b``, ``/evidence`` (or
``?page=compare&unit=...`` on the root address). When the viewer serves a folder of runs,
``run=NAME`` picks one of them.
"""

from __future__ import annotations

import functools

import streamlit as st

TITLES = {"layer": "Layer", "unit": "Unit", "feature": "Feature", "compare": "Compare", "circuit": "Circuit",
          "evidence": "Evidence"}
ICONS = {"layer": ":material/grid_view:", "unit": ":material/neurology:", "feature": ":material/scatter_plot:",
         "compare": ":material/compare:", "circuit": ":material/account_tree:",
         "evidence": ":material/science:"}
# The Deploy button and the main menu's developer items have no place in a viewer of results.
HIDE_TOOLBAR = "<style>[data-testid='stAppDeployButton'],[data-testid='stToolbarActions']{display:none}</style>"


@functools.cache
def favicon() -> str:
    """A small eye drawn here, so the browser fetches no icon from outside this server; as a data
    URI, drawn and encoded once per process (Streamlit would encode an image on every page view)."""
    import base64
    import io

    from PIL import Image, ImageDraw

    img = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    d.ellipse((2, 8, 30, 24), fill=(78, 121, 167, 255))
    d.ellipse((11, 11, 21, 21), fill=(255, 255, 255, 255))
    d.ellipse((14, 14, 18, 18), fill=(20, 20, 20, 255))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def sidebar(pages: dict) -> None:
    from circuitsviz.viewer.common import current_run, get_run, link_params, served

    run = current_run()
    s = served()
    if not s.single:
        from pathlib import Path

        names = s.names
        here = Path(run).name
        chosen = st.sidebar.selectbox("Run", names, index=names.index(here) if here in names else 0)
        if chosen != here:
            st.query_params.clear()
            st.query_params["run"] = chosen
            st.rerun()
    from circuitsviz.units import Unit

    unit = st.session_state.get("_last_unit") or st.query_params.get("unit")
    layer = st.query_params.get("layer") or st.session_state.get("_last_layer")
    try:
        layer = Unit.parse(unit).layer if unit else layer
    except Exception:  # an unparseable id in the URL: the page says so; the sidebar keeps going
        unit = None
    params = link_params(run)
    channel = st.session_state.get("_last_channel")
    is_feature = bool(unit and "/" in unit)
    targets = {
        "layer": {"layer": layer} if layer else {},
        "unit": {"unit": unit, "layer": layer} if unit else {},
        "feature": {"unit": unit, "layer": layer} if is_feature else {},
        "compare": {"unit": channel, "layer": layer} if channel else {},
        "circuit": {"unit": unit} if unit else {},
        "evidence": {},
    }
    for name, page in pages.items():
        st.sidebar.page_link(page, label=TITLES[name], icon=ICONS[name],
                             query_params={**params, **{k: v for k, v in targets[name].items() if v}})
    st.sidebar.caption(f"run `{get_run(run).path.name}`")


def main() -> None:
    from circuitsviz.viewer import circuit, compare, heldout, layer, unit

    st.set_page_config(page_title="circuitsviz", page_icon=favicon(), layout="wide")
    st.html(HIDE_TOOLBAR)

    def as_page(name, fn):
        def run_page():
            from circuitsviz.errors import CircuitsvizError

            st.session_state["_page"] = name
            try:
                fn()
            except CircuitsvizError as e:  # a damaged or tampered record: one line, not a traceback
                st.error(f"{e} Check the run with `circuitsviz verify`.")
        run_page.__name__ = f"page_{name}"
        return run_page

    renderers = {"layer": layer.render, "unit": unit.render, "feature": unit.render, "compare": compare.render,
                 "circuit": circuit.render, "evidence": heldout.render}
    asked = st.query_params.get("page")
    start = asked if asked in TITLES else "layer"
    # The default page answers "/" only (Streamlit gives it no path of its own), so it is a separate
    # page that shows ?page=... or the layer grid, and every named page keeps its own path.
    pages = {name: st.Page(as_page(name, renderers[name]), title=TITLES[name], icon=ICONS[name], url_path=name)
             for name in TITLES}
    home = st.Page(as_page(start, renderers[start]), title="circuitsviz", url_path="home", default=True)
    st.session_state["_pages"] = pages
    current = st.navigation([home, *pages.values()], position="hidden")
    try:
        current.run()
    finally:  # after the page, so the sidebar links carry the unit it settled on (even after st.stop)
        sidebar(pages)


if __name__ == "__main__":
    main()
