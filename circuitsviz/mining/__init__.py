"""Dataset-example mining: every unit's top-k images with positions, statistics and label scores.

>>> result = mine(model, "~/imagenet/val", ["mixed3b", "mixed4e"], k=32)   # doctest: +SKIP
>>> receptive_field(model, "mixed4e")                                       # doctest: +SKIP
"""

from .merge import merge
from .mine import mine, parse_shard, shard_indices
from .receptive import ReceptiveField, receptive_field, receptive_fields
from .result import LayerResult, MiningResult
from .save import write_to_run

__all__ = [
    "LayerResult", "MiningResult", "ReceptiveField", "merge", "mine", "parse_shard", "receptive_field",
    "receptive_fields", "shard_indices", "write_to_run",
]
