"""The results store: one run directory per study, read by the viewer and by scripts.

>>> import circuitsviz as cv
>>> run = cv.open_run("runs/demo")                        # doctest: +SKIP
>>> unit = run.unit("mixed4e:55")                         # doctest: +SKIP
>>> [e.image_id for e in run.examples(unit.id)][:3]       # doctest: +SKIP

Results go in through the publishing API on :class:`Run` (``add_visualizations``,
``add_mining``, ``add_feature_examples``, ``add_sae``, ``add_split``; see ``publish.py``).
The layout of a run directory is specified in ``SPEC.md`` next to this file.
"""

from .records import (
    Example, Feature, LayerRecord, QuantileExample, RunInfo, SAERecord, Split, SplitFeature, Stats,
    StepRecord, UnitRecord, Visualization,
)
from .render import receptive_box
from .run import EXAMPLE_KINDS, VIS_KINDS, Run, open_run
from .schema import SCHEMA_VERSION, StoreVersionError
from .steps import SettingsChangedError, config_hash

__all__ = [
    "EXAMPLE_KINDS", "Example", "Feature", "LayerRecord", "QuantileExample", "Run", "RunInfo", "SAERecord",
    "SCHEMA_VERSION", "SettingsChangedError", "Split", "SplitFeature", "Stats", "StepRecord",
    "StoreVersionError", "UnitRecord", "VIS_KINDS", "Visualization", "config_hash", "open_run", "receptive_box",
]
