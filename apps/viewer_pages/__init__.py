"""The viewer's pages (``apps/viewer.py`` wires them into ``st.navigation``)."""
