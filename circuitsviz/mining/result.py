"""What mining produces: plain arrays per layer, plus the run's bookkeeping."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .receptive import ReceptiveField
from .stats import polysemanticity, quantile_examples


@dataclass
class LayerResult:
    """Everything mined for the units of one layer. ``U`` units, top ``k``, ``B`` bins, ``P`` per bin.

    Top-k tables are sorted by value descending, then dataset index ascending; empty slots hold
    index -1. Positions are flattened ``y * width + x`` of the maximum (see :meth:`top_yx`).
    """

    name: str
    height: int
    width: int
    rf: ReceptiveField | None
    top_value: np.ndarray            # (U, k) float32: the image's maximum over space
    top_index: np.ndarray            # (U, k) int64 dataset index
    top_pos: np.ndarray              # (U, k) int64 flattened argmax position
    top_label: np.ndarray            # (U, k) int64, -1 when unlabelled
    mean_sum: np.ndarray             # (U,) float64 sum over images of the spatial mean
    max: np.ndarray                  # (U,) float32 largest activation anywhere
    positive: np.ndarray             # (U,) int64 positions with activation > 0
    hist_edges: np.ndarray           # (U, B+1) float32, fixed before mining
    hist_counts: np.ndarray          # (U, B) int64 histogram of image-level maxima
    bin_index: np.ndarray            # (U, B, P) int64 first images (by index) in each bin
    bin_value: np.ndarray            # (U, B, P) float32
    bin_pos: np.ndarray              # (U, B, P) int64
    label_sum: np.ndarray            # (U, L) float64 sum of image-level maxima per label
    label_max: np.ndarray | None = None    # (U, L) float32 largest image-level maximum per label (-inf: no image);
                                           # None in results written before it was recorded
    mean_value: np.ndarray | None = None   # (U, k) top-k by spatial mean, when asked for
    mean_index: np.ndarray | None = None
    mean_pos: np.ndarray | None = None     # argmax position within those images
    mean_label: np.ndarray | None = None

    @property
    def units(self) -> int:
        return self.top_value.shape[0]

    def top_yx(self) -> tuple[np.ndarray, np.ndarray]:
        """``(y, x)`` arrays ``(U, k)`` of the top-k maxima."""
        return self.top_pos // self.width, self.top_pos % self.width


@dataclass
class MiningResult:
    """The result of :func:`circuitsviz.mining.mine` (or of merging shards).

    >>> result = mine(model, "procedural", ["mixed4e"], k=16)     # doctest: +SKIP
    >>> layer = result.layers["mixed4e"]                           # doctest: +SKIP
    >>> layer.top_index[55, :3], result.stats("mixed4e")["mean"][55]   # doctest: +SKIP
    """

    layers: dict[str, LayerResult]
    config: dict                      # everything that defines the result, except the shard
    config_hash: str
    n_images: int                     # images mined (readable ones)
    label_count: np.ndarray           # (L,) images per label
    shard: tuple[int, int] | None = None     # (i, n); None for a whole-dataset result
    done: int = 0                     # positions of the slice already visited (images + skipped)
    total: int = 0                    # positions in the slice
    skipped: list[tuple[int, str, str]] = field(default_factory=list)   # (index, image_id, reason)
    classes: list[str] | None = None

    @property
    def complete(self) -> bool:
        return self.done >= self.total

    def stats(self, layer: str) -> dict[str, np.ndarray]:
        """Per-unit mean, max, fraction of positions above zero, and the label scores."""
        r = self.layers[layer]
        positions = max(self.n_images * r.height * r.width, 1)
        out = {
            "mean": r.mean_sum / max(self.n_images, 1),
            "max": r.max,
            "frac_positive": r.positive / positions,
        }
        out.update(polysemanticity(r.top_label, r.label_sum, self.label_count, top_values=r.top_value))
        return out

    def quantile_examples(self, layer: str, unit: int, groups: int = 10, per_group: int | None = None):
        """Rows ``(group, dataset_index, value, flat_pos)``: a few images per activation quantile."""
        r = self.layers[layer]
        return quantile_examples(r.hist_counts[unit], r.bin_index[unit], r.bin_value[unit], r.bin_pos[unit],
                                 groups, per_group)

    def report(self) -> str:
        """A short human summary: images mined, skipped files and why."""
        lines = [f"mined {self.n_images} images over layers {', '.join(self.layers)}"
                 + (f" (shard {self.shard[0]}/{self.shard[1]})" if self.shard else "")]
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} unreadable file(s):")
            lines += [f"  {image_id}: {reason}" for _, image_id, reason in self.skipped]
        return "\n".join(lines)

    def save(self, path) -> None:
        from .save import save_result

        save_result(self, path)

    @classmethod
    def load(cls, path) -> "MiningResult":
        from .save import load_result

        return load_result(path)
