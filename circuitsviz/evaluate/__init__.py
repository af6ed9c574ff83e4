"""Held-out evidence: does an SAE split polysemantic channels better than its baselines, over seeds?

:func:`evaluate_split` fits SAEs (a sweep over ``k``, several seeds) and the baselines (k-means,
a random TopK dictionary) on training images and scores them beside the channels on disjoint
evaluation images; :func:`fv_recovery` asks an independent judge whether each monosemantic
unit's feature visualization shows its concept.

>>> import circuitsviz as cv
>>> ev = cv.evaluate_split("demo", ks=(1, 2, 4), seeds=(0, 1, 2))   # doctest: +SKIP
>>> print(ev.table())                                              # doctest: +SKIP
"""

from .evidence import Evidence, evidence
from .fv import Recovery, Target, channel_targets, class_targets, feature_targets, fv_recovery, scaled_transforms
from .intervals import Interval, mean_interval, t_quantile
from .kmeans import KMeans, kmeans
from .protocol import Evaluation, UnitScores, evaluate_split, hash_split, random_topk, score_on, training_samples

__all__ = [
    "evaluate_split", "Evaluation", "UnitScores", "hash_split", "score_on", "training_samples", "random_topk",
    "kmeans", "KMeans", "Interval", "mean_interval", "t_quantile",
    "evidence", "Evidence", "fv_recovery", "Recovery", "Target", "feature_targets", "channel_targets", "class_targets", "scaled_transforms",
]
