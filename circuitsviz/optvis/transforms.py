"""Lucid's standard transformation robustness, as one affine resample per image and step.

Lucid applies, in order: pad 12 (constant 0.5), jitter 8 (a random crop 8 pixels smaller),
random scale from ``[0.90, 0.92, ..., 1.10]``, random rotation from ``-10..10`` degrees (with 0
listed five extra times), jitter 4. Each step changes the image size, which would stop us from
batching images that drew different scales. Here the same chain is composed into one affine map
per image and sampled with ``grid_sample`` onto a fixed grid:

* the output window is the crop Lucid would take at scale 1 (``size + 24 - 8 - 4`` pixels),
  rendered at that many pixels, or, with ``upsample``, at the model's natural size (lucent
  upsamples small images to 224; Lucid does not), in the same interpolation;
* scaling by ``s`` zooms the window by ``1/s`` instead of resizing the image;
* everything outside the image reads as the pad value 0.5 (Lucid's rotate fills black corners).

Randomness is drawn up front, for every step, from each image's own ``torch.Generator``: an
image's transforms never depend on which images share its batch, and no global RNG is used.

>>> import torch
>>> t = StandardTransforms()
>>> plan = t.plan(steps=4, generators=[torch.Generator().manual_seed(0)])
>>> plan.shape
torch.Size([4, 1, 5])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

LUCID_SCALES = tuple(1 + (i - 5) / 50 for i in range(11))
LUCID_ANGLES = tuple(range(-10, 11)) + (0,) * 5


@dataclass(frozen=True)
class StandardTransforms:
    """Lucid's ``standard_transforms`` (the defaults are Lucid's values)."""

    pad: int = 12
    jitter: int = 8
    scales: tuple[float, ...] = LUCID_SCALES
    angles: tuple[float, ...] = LUCID_ANGLES  # degrees
    jitter_after: int = 4
    pad_value: float = 0.5

    def window(self, size: int) -> int:
        """Side of the crop Lucid feeds the model at scale 1 (``size + 2*pad - jitter - jitter_after``)."""
        return size + 2 * self.pad - self.jitter - self.jitter_after

    def plan(self, steps: int, generators: Sequence[torch.Generator]) -> torch.Tensor:
        """Random choices for every step and image: ``steps x B x 5`` integer draws, namely
        jitter dy, jitter dx, scale index, angle index, and the late jitter as one index into
        its ``(jitter_after + 1)**2`` offsets."""
        highs = torch.tensor([self.jitter + 1, self.jitter + 1, len(self.scales), len(self.angles),
                              (self.jitter_after + 1) ** 2])
        # Row by row, so the first k steps' draws are the same however many steps follow.
        draws = [(torch.rand((steps, 5), generator=g, dtype=torch.float64) * highs).long() for g in generators]
        return torch.stack(draws, dim=1)

    def theta(self, draws: torch.Tensor, size: int) -> torch.Tensor:
        """The ``B x 2 x 3`` affine matrices (``affine_grid`` convention) for one step's draws."""
        d = draws.to(torch.float64)
        j1 = d[:, :2] - self.jitter / 2                      # first jitter, pixels (y, x)
        late = draws[:, 4]
        j2 = torch.stack([late // (self.jitter_after + 1), late % (self.jitter_after + 1)], 1).double()
        j2 = j2 - self.jitter_after / 2                      # late jitter, pixels (y, x)
        s = torch.tensor(self.scales, dtype=torch.float64)[draws[:, 2]]
        a = torch.tensor(self.angles, dtype=torch.float64)[draws[:, 3]] * (math.pi / 180)
        cos, sin = torch.cos(a), torch.sin(a)
        half_out = self.window(size) / 2
        half_in = size / 2
        # Source pixel (x, y) = R (v + j2) / s + j1 for output pixel v, all relative to the centre.
        rot = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)  # B x 2 x 2
        lin = rot * (half_out / (s * half_in))[:, None, None]
        shift = (rot @ j2.flip(1)[:, :, None])[:, :, 0] / s[:, None] + j1.flip(1)
        return torch.cat([lin, (shift / half_in)[:, :, None]], dim=2).float()

    def __call__(self, images: torch.Tensor, draws: torch.Tensor, out_size: int) -> torch.Tensor:
        """Transform ``B x 3 x S x S`` images with one step's draws onto an ``out_size`` grid."""
        b, c, h, w = images.shape
        theta = self.theta(draws, w).to(images.device)
        grid = F.affine_grid(theta, [b, c, out_size, out_size], align_corners=False)
        # Sampling (x - pad) with zero padding and adding pad back extends the image with the pad value.
        out = F.grid_sample(images - self.pad_value, grid, mode="bilinear", padding_mode="zeros",
                            align_corners=False)
        return out + self.pad_value

    def settings(self) -> dict:
        return {"name": "standard", **asdict(self)}


def resize_for_model(images: torch.Tensor, min_size: int) -> torch.Tensor:
    """Upsample images smaller than ``min_size`` (lucent does this for 224); others pass through."""
    if images.shape[-1] >= min_size and images.shape[-2] >= min_size:
        return images
    return F.interpolate(images, size=(min_size, min_size), mode="bilinear", align_corners=False)


def output_size(transforms: StandardTransforms | None, size: int, model_size: int) -> int:
    """Side of the images the model sees: the transformed window, upsampled to the model's size."""
    natural = transforms.window(size) if transforms is not None else size
    return max(natural, model_size)
