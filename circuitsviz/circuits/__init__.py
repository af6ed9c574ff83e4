"""Circuits: how a unit is computed from earlier units.

- :func:`circuit`: weights (direct or expanded) between a unit and a layer, inputs or outputs;
- :func:`expanded_weights`: the kernels of a whole target layer in one batched pass;
- :func:`attribute`: each source unit's contribution on images (activation x gradient, IG);
- :func:`ablate` and :func:`faithfulness`: the causal check, through ``run_with_hooks``;
- :mod:`~circuitsviz.circuits.hooks`: ready-made interventions (ablate channels, splice an SAE).

Every function takes channel ids (``"mixed4c:447"``) and SAE feature ids
(``"mixed3b/topk8x_k1:35"``, with ``sae=``) alike.
"""

from .ablation import Ablation, Faithfulness, ablate, faithfulness
from .attribution import Attribution, attribute
from .circuit import Circuit, Connection, circuit
from .hooks import ablate_channels, splice_sae
from .linear import linearised
from .weights import ExpandedWeights, expanded_weights

__all__ = [
    "Ablation", "Attribution", "Circuit", "Connection", "ExpandedWeights", "Faithfulness", "ablate",
    "ablate_channels", "attribute", "circuit", "expanded_weights", "faithfulness", "linearised", "splice_sae",
]
