"""What the read API returns: one plain dataclass per record type of the run index."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class RunInfo:
    model: str | None
    weights_sha256: str | None
    input_size: int | None
    settings: dict
    data_source: dict | None
    classes: list[str] | None


@dataclass(frozen=True)
class LayerRecord:
    name: str
    channels: int
    height: int | None
    width: int | None
    branches: list[tuple[str, int, int]]            # (name, start, stop): channels [start, stop)
    rf: tuple[float, float, float] | None           # (size, stride, offset): offset = first pixel of position 0

    def branch_of(self, channel: int) -> str | None:
        return next((name for name, a, b in self.branches if a <= channel < b), None)


@dataclass(frozen=True)
class UnitRecord:
    id: str
    layer: str
    index: int
    kind: str                                       # channel | neuron | feature
    sae: str | None = None
    pos: tuple[int, int] | None = None


@dataclass(frozen=True)
class Visualization:
    unit_id: str
    kind: str                                       # positive | negative | diversity | neuron
    index: int
    path: Path                                      # content-addressed PNG
    height: int
    width: int
    objective: float | None
    settings: dict


@dataclass(frozen=True)
class Example:
    unit_id: str
    kind: str                                       # max | mean
    rank: int
    image_id: str
    value: float
    y: int
    x: int
    label: int = -1
    actmap: np.ndarray | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class QuantileExample:
    unit_id: str
    bin: int
    image_id: str
    value: float
    y: int
    x: int
    label: int = -1


@dataclass(frozen=True)
class Stats:
    unit_id: str
    mean: float | None
    max: float | None
    frac_positive: float | None
    hist_counts: list[float]
    hist_edges: list[float]
    scores: dict
    label_counts: dict                              # label name (or id as str) -> count in the top-k

    @property
    def polysemanticity(self) -> float | None:
        """The score the viewer sorts by: an explicit ``polysemanticity`` score if one was written,
        else the ``concept_count`` (it catches a unit whose top-k is one label but which fires
        almost as strongly on others), else the top-k label ``entropy``."""
        for key in ("polysemanticity", "concept_count", "entropy"):
            if self.scores.get(key) is not None:
                return float(self.scores[key])
        return None


@dataclass(frozen=True)
class SAERecord:
    name: str
    layer: str
    config: dict
    metrics: dict
    path: str | None


@dataclass(frozen=True)
class Feature:
    unit_id: str
    sae: str
    decoder_top: list[tuple[int, float]]            # (channel, decoder weight), strongest first
    freq: float | None
    mean_act: float | None


@dataclass(frozen=True)
class SplitFeature:
    """One feature of a channel's split: what :func:`split_channel` ranks and the run stores."""

    unit_id: str                                    # "mixed4e/topk8x_k32:17": a unit like any channel
    share: float | None                             # fraction of the channel's activation it writes, where it fires
    cosine: float | None                            # cosine of its decoder direction with the channel's axis
    freq: float | None                              # fraction of all samples where it fires
    mean_activation: float | None = None            # its mean activation where the channel fires
    weight: float | None = None                     # decoder weight on the channel (raw units per unit of feature)

    @property
    def feature(self) -> int:
        return int(self.unit_id.rsplit(":", 1)[1])


@dataclass(frozen=True)
class Split:
    layer: str
    channel: int
    sae: str
    features: list[SplitFeature]
    # Where the channel fires, its activation = all features' writes + the decoder bias + the
    # reconstruction error. None: not recorded (splits stored before schema 5).
    explained: float | None = None                  # share written by all of the SAE's features
    bias_share: float | None = None                 # share written by the decoder bias
    n_samples: int | None = None                    # samples the split was measured on
    n_firing: int | None = None                     # of which the channel fires (> 0) on

    @property
    def channel_id(self) -> str:
        return f"{self.layer}:{self.channel}"

    @property
    def error(self) -> float | None:
        """Share left to the reconstruction error, ``1 - explained - bias_share``: negative when
        the SAE writes more into the channel than it holds (overshoot), None when not recorded."""
        if self.explained is None or self.bias_share is None:
            return None
        return 1.0 - self.explained - self.bias_share


@dataclass(frozen=True)
class StepRecord:
    step: str                                       # vis | mine | sae | split | ...
    key: str                                        # what it was done for: a layer, "layer/sae", ...
    at: float                                       # unix time of the last write
    settings: dict | None                           # what it was computed with (None: not recorded)
    complete: bool                                  # False: begun, not finished
