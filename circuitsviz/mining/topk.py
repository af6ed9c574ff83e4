"""Top-k by value with one tie rule everywhere: value descending, then dataset index ascending.

Streaming (:func:`update_top_k`) runs on the model's device, once per batch. Merging finished
results (:func:`merge_top_k`) runs in numpy. Both give exactly the rows a brute-force sort of
every image would, so a sharded run merges into a single run's result bit for bit.
"""

from __future__ import annotations

import numpy as np
import torch

EMPTY = -1  # dataset index of a slot not yet filled


def new_top_k(units: int, k: int, device, fields: int = 2) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Empty state: values ``-inf``, indices :data:`EMPTY`, and ``fields`` extra int64 columns."""
    values = torch.full((units, k), float("-inf"), device=device)
    index = torch.full((units, k), EMPTY, dtype=torch.long, device=device)
    return values, index, [torch.full((units, k), EMPTY, dtype=torch.long, device=device) for _ in range(fields)]


def update_top_k(
    values: torch.Tensor, index: torch.Tensor, extra: list[torch.Tensor],
    new_values: torch.Tensor, new_index: torch.Tensor, new_extra: list[torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Fold one batch into the running top-k of every unit.

    ``values``/``index``/``extra``: ``(U, k)``, sorted by the tie rule. ``new_values``: ``(U, N)``,
    ``new_index``: ``(N,)`` dataset indices, ``new_extra``: ``(U, N)`` each (positions, labels).

    Streaming relies on every batch holding larger indices than all earlier ones, in ascending
    order (a run visits its slice in order). Then ``[state, batch]`` is already index-ascending
    among equal values, and a *stable* descending sort by value is exactly the tie rule.
    """
    units, k = values.shape
    cat_values = torch.cat([values, new_values], dim=1)
    order = torch.sort(cat_values, dim=1, descending=True, stable=True).indices[:, :k]
    cat_index = torch.cat([index, new_index.to(index.device).expand(units, -1)], dim=1)
    pick = lambda old, new: torch.cat([old, new], dim=1).gather(1, order)  # noqa: E731
    return (cat_values.gather(1, order), cat_index.gather(1, order),
            [pick(o, n) for o, n in zip(extra, new_extra)])


def merge_top_k(values: list[np.ndarray], index: list[np.ndarray], extra: list[list[np.ndarray]], k: int):
    """Merge several ``(U, k)`` top-k tables whose indices may interleave (e.g. strided shards)."""
    v = np.concatenate(values, axis=1)
    i = np.concatenate(index, axis=1)
    # Empty slots (-inf, -1) sort last; among equals the smaller dataset index wins.
    tie = np.where(i == EMPTY, np.iinfo(np.int64).max, i)
    order = np.lexsort((tie, -v.astype(np.float64)), axis=1)[:, :k]
    take = lambda a: np.take_along_axis(a, order, axis=1)  # noqa: E731
    fields = [take(np.concatenate(cols, axis=1)) for cols in zip(*extra)] if extra and extra[0] else []
    return take(v), take(i), fields
