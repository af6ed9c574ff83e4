"""circuitsviz viewer: browse a run's layers, units, SAE features and channel splits.

    circuitsviz serve runs/NAME                       # or:
    streamlit run apps/viewer.py -- runs/NAME

The pages live in the package (``circuitsviz.viewer``); this file is the entry point for
``streamlit run`` from a source checkout.
"""

from circuitsviz.viewer.app import main

main()
