"""The Streamlit viewer (``circuitsviz serve RUN``) and the words it uses for a run's evidence.

Importing this package does not import Streamlit; :mod:`circuitsviz.viewer.app` is the script.

>>> from circuitsviz.viewer import clearest_split, split_summary     # doctest: +SKIP
"""

from .evidence import clearest_split, concepts, split_summary

__all__ = ["clearest_split", "concepts", "split_summary"]
