"""What attribution and ablation share: images from ``data``, a unit's value per image, and a
source layer's units (channels, or the features of an SAE spliced in with its error kept)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..errors import BadInputError
from ..units import Unit
from .features import as_unit, check_feature, find_sae, layer_spec
from .hooks import decode_maps, encode_maps

REDUCES = ("mean", "max")


def load_images(data, model, limit: int | None = None) -> torch.Tensor:
    """``data`` as one (N, 3, H, W) tensor in [0, 1]: a tensor, or any dataset ``as_dataset`` takes."""
    if isinstance(data, torch.Tensor):
        images = model.check_images(data)
        return images[:limit] if limit else images
    from ..data import as_dataset

    dataset = as_dataset(data, model)
    n = len(dataset) if limit is None else min(limit, len(dataset))
    if n == 0:
        raise BadInputError("the data holds no images")
    items = [dataset[i][0] for i in range(n)]
    images = [x for x in items if isinstance(x, torch.Tensor)]  # unreadable files come back as Skipped
    if not images:
        raise BadInputError(f"none of the {n} images of the data can be read")
    return torch.stack(images)


def batches(images: torch.Tensor, size: int):
    for i in range(0, len(images), size):
        yield images[i:i + size]


@dataclass
class Readout:
    """A unit's value per image: a channel's spatial mean (or max), a neuron, or a feature's."""

    unit: Unit
    sae: object = None
    reduce: str = "mean"

    @classmethod
    def of(cls, model, unit, sae=None, reduce: str = "mean") -> "Readout":
        u = as_unit(unit)
        if reduce not in REDUCES:
            raise BadInputError(f"unknown reduce {reduce!r}; valid: {', '.join(REDUCES)}")
        if u.sae is None:
            model.check_channel(u.layer, u.index)
            return cls(u, None, reduce)
        s = find_sae(sae, u.layer, u.sae)
        check_feature(s, u)
        return cls(u, s, reduce)

    def maps(self, acts: torch.Tensor) -> torch.Tensor:
        """(N, H, W) maps of the unit from its layer's activations."""
        if self.sae is None:
            return acts[:, self.unit.index]
        return encode_maps(self.sae, acts)[:, self.unit.index]

    def value(self, acts: torch.Tensor) -> torch.Tensor:
        m = self.maps(acts)
        if self.unit.pos is not None:
            y, x = self.unit.pos
            if not (0 <= y < m.shape[1] and 0 <= x < m.shape[2]):
                raise BadInputError(f"position {self.unit.pos} is outside {self.unit.layer}'s {m.shape[1]}x{m.shape[2]} map")
            return m[:, y, x]
        return m.mean(dim=(1, 2)) if self.reduce == "mean" else m.amax(dim=(1, 2))

    def run(self, model, images: torch.Tensor, hooks: dict | None = None, grad: bool = False) -> torch.Tensor:
        acts = model.activations(images, [self.unit.layer], grad=grad, check=False, hooks=hooks)[self.unit.layer]
        return self.value(acts)


@dataclass
class SourceSide:
    """The units of a source layer: its channels, or the features of an SAE on it.

    ``code(acts)`` gives the units' maps (N, U, H, W); ``write(acts, code)`` turns (edited) maps
    back into the layer's activations. For features the SAE's reconstruction error is kept, so
    an unedited code gives the layer's activations back exactly.
    """

    layer: str
    sae: object = None
    sae_name: str | None = None

    @classmethod
    def of(cls, model, source: str, sae=None) -> "SourceSide":
        layer, name = layer_spec(source)
        model.layer(layer)
        return cls(layer, find_sae(sae, layer, name) if name else None, name)

    @property
    def spec(self) -> str:
        return self.layer + (f"/{self.sae_name}" if self.sae_name else "")

    def size(self, model) -> int:
        return self.sae.n_latents if self.sae is not None else model.channels(self.layer)

    def unit_id(self, i: int) -> str:
        return Unit(self.layer, i, sae=self.sae_name).id

    def index_of(self, unit: str | Unit, model) -> int:
        u = as_unit(unit)
        if u.layer != self.layer or u.sae != self.sae_name:
            raise BadInputError(f"unit {u.id} is not in {self.spec}; all sources must be units of one layer")
        if not 0 <= u.index < self.size(model):
            raise BadInputError(f"{u.id} is out of range: {self.spec} has {self.size(model)} units "
                                f"(valid: 0..{self.size(model) - 1})")
        return u.index

    def code(self, acts: torch.Tensor) -> torch.Tensor:
        return acts if self.sae is None else encode_maps(self.sae, acts).to(acts.dtype)

    def write(self, acts: torch.Tensor, code: torch.Tensor, original: torch.Tensor | None = None) -> torch.Tensor:
        """Activations for ``code``; ``original`` is the unedited code (its error is kept)."""
        if self.sae is None:
            return code
        base = original if original is not None else self.code(acts)
        error = acts - decode_maps(self.sae, base).to(acts.dtype)
        return decode_maps(self.sae, code).to(acts.dtype) + error.detach()

    def edit_hook(self, edit: Callable[[torch.Tensor], torch.Tensor]):
        """A hook that applies ``edit`` to the units' maps."""

        def hook(acts: torch.Tensor) -> torch.Tensor:
            code = self.code(acts)
            return self.write(acts, edit(code), code)

        return hook
