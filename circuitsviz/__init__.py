"""circuitsviz: mechanistic interpretability for vision models.

One entry point per capability::

    import circuitsviz as cv
    model = cv.load_model("inceptionv1")                      # 1. the model zoo
    images = cv.visualize(model, "mixed4e:55")                # 2. feature visualization
    examples = cv.mine(model, "path/to/images", ["mixed4e"])  # 3. dataset examples
    sae = cv.fit_sae(model, "path/to/images", "mixed4e")      # 4. sparse autoencoders
    split = cv.split_channel(sae, channel=55, data=...)       #    ... and channel splits
    run = cv.open_run("runs/NAME")                            # 5. the results store (viewer: `circuitsviz serve`)

Names are imported lazily, so ``import circuitsviz`` stays cheap and nothing touches a device.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_EXPORTS = {
    # models
    "load_model": "circuitsviz.models", "wrap_model": "circuitsviz.models", "list_layers": "circuitsviz.models",
    "VisionModel": "circuitsviz.models", "LayerInfo": "circuitsviz.models",
    "IMAGENET_MEAN": "circuitsviz.models", "IMAGENET_STD": "circuitsviz.models",
    "Unit": "circuitsviz.units", "parse_channels": "circuitsviz.units", "sae_name": "circuitsviz.units",
    "feature_objective": "circuitsviz.units",
    "CircuitsvizError": "circuitsviz.errors",
    # feature visualization
    "visualize": "circuitsviz.optvis", "channel": "circuitsviz.optvis", "neuron": "circuitsviz.optvis",
    "direction": "circuitsviz.optvis", "diversity": "circuitsviz.optvis", "VisResult": "circuitsviz.optvis",
    "class_logit": "circuitsviz.optvis", "save_grid": "circuitsviz.optvis",
    # dataset examples
    "mine": "circuitsviz.mining", "merge": "circuitsviz.mining", "MiningResult": "circuitsviz.mining",
    "receptive_field": "circuitsviz.mining",
    # sparse autoencoders
    "fit_sae": "circuitsviz.sae", "load_sae": "circuitsviz.sae", "split_channel": "circuitsviz.sae",
    "TopKSAE": "circuitsviz.sae", "ReluSAE": "circuitsviz.sae", "SplitResult": "circuitsviz.sae",
    # circuits
    "circuit": "circuitsviz.circuits", "expanded_weights": "circuitsviz.circuits",
    "attribute": "circuitsviz.circuits", "ablate": "circuitsviz.circuits", "faithfulness": "circuitsviz.circuits",
    # store
    "open_run": "circuitsviz.store", "Run": "circuitsviz.store", "SettingsChangedError": "circuitsviz.store",
    # data and the study pipeline
    "ConceptDataset": "circuitsviz.data", "ImageFolderDataset": "circuitsviz.data",
    "study": "circuitsviz.study", "StudySettings": "circuitsviz.study", "StudyReport": "circuitsviz.study",
    # process-level CPU tuning (opt-in; the command line applies it)
    "retain_freed_memory": "circuitsviz.runtime",
    # held-out evidence (issue 11)
    "evaluate_split": "circuitsviz.evaluate", "Evaluation": "circuitsviz.evaluate",
    "fv_recovery": "circuitsviz.evaluate", "sae_feature": "circuitsviz.optvis",
    # the viewer's words for a run's evidence (issue 12)
    "clearest_split": "circuitsviz.viewer", "split_summary": "circuitsviz.viewer",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # what IDEs and type checkers see; at run time the names load lazily, below
    from .circuits import ablate, attribute, circuit, expanded_weights, faithfulness
    from .data import ConceptDataset, ImageFolderDataset
    from .errors import CircuitsvizError
    from .evaluate import Evaluation, evaluate_split, fv_recovery
    from .mining import MiningResult, merge, mine, receptive_field
    from .models import IMAGENET_MEAN, IMAGENET_STD, LayerInfo, VisionModel, list_layers, load_model, wrap_model
    from .optvis import VisResult, channel, class_logit, direction, diversity, neuron, sae_feature, save_grid, visualize
    from .runtime import retain_freed_memory
    from .sae import ReluSAE, SplitResult, TopKSAE, fit_sae, load_sae, split_channel
    from .store import Run, SettingsChangedError, open_run
    from .study import StudyReport, StudySettings, study
    from .units import Unit, feature_objective, parse_channels, sae_name
    from .viewer import clearest_split, split_summary


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'circuitsviz' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
