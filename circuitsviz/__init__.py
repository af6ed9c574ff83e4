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

__version__ = "0.1.0"

_EXPORTS = {
    # models
    "load_model": "circuitsviz.models", "wrap_model": "circuitsviz.models", "list_layers": "circuitsviz.models",
    "VisionModel": "circuitsviz.models", "LayerInfo": "circuitsviz.models",
    "Unit": "circuitsviz.units", "parse_channels": "circuitsviz.units",
    "CircuitsvizError": "circuitsviz.errors",
    # feature visualization
    "visualize": "circuitsviz.optvis", "channel": "circuitsviz.optvis", "neuron": "circuitsviz.optvis",
    "direction": "circuitsviz.optvis", "diversity": "circuitsviz.optvis", "VisResult": "circuitsviz.optvis",
    # dataset examples
    "mine": "circuitsviz.mining", "merge": "circuitsviz.mining", "MiningResult": "circuitsviz.mining",
    "receptive_field": "circuitsviz.mining",
    # sparse autoencoders
    "fit_sae": "circuitsviz.sae", "load_sae": "circuitsviz.sae", "split_channel": "circuitsviz.sae",
    "TopKSAE": "circuitsviz.sae", "ReluSAE": "circuitsviz.sae", "SplitResult": "circuitsviz.sae",
    # store
    "open_run": "circuitsviz.store", "Run": "circuitsviz.store",
    # data and the study pipeline
    "ConceptDataset": "circuitsviz.data", "ImageFolderDataset": "circuitsviz.data",
    "study": "circuitsviz.study", "StudySettings": "circuitsviz.study", "StudyReport": "circuitsviz.study",
    # process-level CPU tuning (opt-in; the command line applies it)
    "retain_freed_memory": "circuitsviz.runtime",
    # held-out evidence (issue 11)
    "evaluate_split": "circuitsviz.evaluate", "Evaluation": "circuitsviz.evaluate", "fv_recovery": "circuitsviz.evaluate", "sae_feature": "circuitsviz.optvis",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'circuitsviz' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
