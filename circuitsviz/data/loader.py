"""Batches for streaming jobs (mining, SAE sampling): images, labels, indices, and what was skipped."""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch

from .folder import Skipped


@dataclass
class Batch:
    images: torch.Tensor          # N x 3 x H x W in [0, 1]
    labels: torch.Tensor          # N, int64, -1 where unlabelled
    indices: torch.Tensor         # N, int64 dataset indices
    skipped: list[tuple[int, str, str]] = field(default_factory=list)  # (index, image_id, reason)


class _Indexed(torch.utils.data.Dataset):
    def __init__(self, dataset, indices: Sequence[int]) -> None:
        self.dataset, self.indices = dataset, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, j: int):
        i = int(self.indices[j])
        image, label = self.dataset[i]
        return i, image, label


def _collate(items) -> Batch:
    good = [(i, im, lab) for i, im, lab in items if not isinstance(im, Skipped)]
    skipped = [(i, im.image_id, im.reason) for i, im, _ in items if isinstance(im, Skipped)]
    if good:
        images = torch.stack([im for _, im, _ in good])
    else:
        images = torch.empty(0, 3, 1, 1)
    labels = torch.tensor([int(lab) for _, _, lab in good], dtype=torch.long)
    indices = torch.tensor([i for i, _, _ in good], dtype=torch.long)
    return Batch(images, labels, indices, skipped)


def iterate_batches(dataset, indices: Sequence[int] | None = None, *, batch_size: int = 32,
                    num_workers: int = 0) -> Iterator[Batch]:
    """Yield :class:`Batch` es over ``indices`` (default: all) in order, preprocessing in workers.

    Unreadable images are dropped from the batch and listed in ``batch.skipped`` with one warning each.
    """
    indices = range(len(dataset)) if indices is None else indices
    loader = torch.utils.data.DataLoader(
        _Indexed(dataset, indices), batch_size=batch_size, shuffle=False,
        num_workers=num_workers, collate_fn=_collate, persistent_workers=False,
        generator=torch.Generator(),  # never draw worker seeds from the global RNG
    )
    for batch in loader:
        for _, image_id, reason in batch.skipped:
            warnings.warn(f"skipping unreadable image {image_id}: {reason}", stacklevel=2)
        yield batch
