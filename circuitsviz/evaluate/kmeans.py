"""k-means in torch (k-means++ seeding, Lloyd iterations), and its code as a one-hot dictionary.

A TopK SAE with ``k=1`` is close to a vector quantiser, so k-means with as many centroids as the
SAE has latents is the baseline it must beat. As a dictionary, each sample fires only its nearest
centroid, with the sample's length along that centroid, ``max(<x, c> / |c|, 0)``; the centroid
itself is the reconstruction (the quantisation error is k-means' FVU).

>>> import torch
>>> x = torch.cat([torch.randn(50, 2) * 0.1 + 5, torch.randn(50, 2) * 0.1 - 5])
>>> km = kmeans(x, 2, seed=0)
>>> sorted(round(float(c)) for c in km.centroids[:, 0])
[-5, 5]
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import BadInputError


@dataclass
class KMeans:
    centroids: torch.Tensor    # (F, C)
    inertia: float             # mean squared distance of the fitted samples to their centroid
    iterations: int

    @property
    def n_latents(self) -> int:
        return self.centroids.shape[0]

    def assign(self, x: torch.Tensor) -> torch.Tensor:
        """Index of the nearest centroid for each row of ``x``."""
        return torch.cdist(x.to(self.centroids), self.centroids).argmin(1)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C) -> (N, F): only the nearest centroid fires, with x's length along it."""
        x = x.to(self.centroids)
        j = self.assign(x)
        c = self.centroids[j]
        value = ((x * c).sum(1) / c.norm(dim=1).clamp_min(1e-12)).clamp_min(0)
        return torch.zeros(len(x), self.n_latents, dtype=x.dtype, device=x.device).scatter_(1, j[:, None], value[:, None])

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Each sample's nearest centroid."""
        return self.centroids[self.assign(x)]


@torch.no_grad()
def kmeans(x: torch.Tensor, n_clusters: int, *, seed: int = 0, iters: int = 100, tol: float = 1e-6) -> KMeans:
    """Fit ``n_clusters`` centroids to the rows of ``x`` (k-means++ seeding from ``seed``).

    A cluster that empties is re-seeded at the sample farthest from its centroid, so every
    centroid stays in use on the fitted data.
    """
    x = x.float()
    n = len(x)
    if not 1 <= n_clusters <= n:
        raise BadInputError(f"k-means needs 1 <= n_clusters <= samples ({n}), got {n_clusters}")
    gen = torch.Generator().manual_seed(seed)
    pick = lambda w: int(torch.multinomial(w.cpu().double(), 1, generator=gen))  # noqa: E731
    centroids = [x[int(torch.randint(n, (1,), generator=gen))]]
    d2 = (x - centroids[0]).pow(2).sum(1)
    for _ in range(1, n_clusters):
        i = pick(d2) if float(d2.sum()) > 0 else int(torch.randint(n, (1,), generator=gen))
        centroids.append(x[i])
        d2 = torch.minimum(d2, (x - x[i]).pow(2).sum(1))
    c = torch.stack(centroids)
    prev = float("inf")
    it = 0
    for it in range(1, iters + 1):
        dist = torch.cdist(x, c)
        j = dist.argmin(1)
        best = dist.gather(1, j[:, None])[:, 0].pow(2)
        inertia = float(best.mean())
        counts = torch.bincount(j, minlength=n_clusters)
        sums = torch.zeros_like(c).index_add_(0, j, x)
        c = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], c)
        for e in torch.nonzero(counts == 0).flatten().tolist():
            far = int(best.argmax())
            c[e], best[far] = x[far], 0.0
        if prev - inertia <= tol * max(prev, 1e-12) and bool((counts > 0).all()):
            break
        prev = inertia
    j = torch.cdist(x, c).argmin(1)
    inertia = float((x - c[j]).pow(2).sum(1).mean())
    return KMeans(c, inertia, it)
