"""circuitsviz viewer: browse a run's layers, units, SAE features and channel splits.

    circuitsviz serve runs/NAME                       # or:
    streamlit run apps/viewer.py -- runs/NAME

Every view is a deep link: ``/compare?run=runs/NAME&unit=mixed4e:55`` (or ``?page=compare&...``
on the root address). The viewer only reads the store; example crops are rendered once from
the recorded examples and cached in the run directory.
"""

from __future__ import annotations

import streamlit as st

from viewer_pages import compare, feature, layer, unit

st.set_page_config(page_title="circuitsviz", page_icon=":material/visibility:", layout="wide")

TITLES = {"layer": "Layer", "unit": "Unit", "feature": "Feature", "compare": "Compare"}
RENDERERS = {"layer": layer.render, "unit": unit.render, "feature": feature.render, "compare": compare.render}
ICONS = {"layer": ":material/grid_view:", "unit": ":material/neurology:", "feature": ":material/scatter_plot:",
         "compare": ":material/compare:"}

# ?page=NAME on the root address chooses the page too, so a link such as /?page=compare&unit=...
# reproduces the view; a path such as /compare wins over it.
asked = st.query_params.get("page")
start = asked if asked in TITLES else "layer"
pages = {name: st.Page(RENDERERS[name], title=TITLES[name], icon=ICONS[name], url_path=name, default=name == start)
         for name in TITLES}
st.session_state["_pages"] = pages
current = st.navigation(list(pages.values()))
current.run()
