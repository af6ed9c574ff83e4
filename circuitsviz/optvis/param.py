"""Image parameterizations: what the optimiser actually changes.

An :class:`ImageParam` holds one trainable tensor for a whole batch and turns it into images in
``[0, 1]``. Every batch element is initialised from its own ``torch.Generator``, so an element's
starting point does not depend on which other elements share its batch.

>>> import torch
>>> gens = [torch.Generator().manual_seed(s) for s in (1, 2)]
>>> p = fft_image(2, 64, gens)
>>> p().shape
torch.Size([2, 3, 64, 64])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# Lucid's colour correlation (square root of the ImageNet colour covariance, from its SVD),
# normalised by its largest column norm. Decorrelated parameters are mapped through it.
_COLOR_CORRELATION = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
COLOR_CORRELATION = _COLOR_CORRELATION / _COLOR_CORRELATION.norm(dim=0).max()

# Lucid divides the inverse FFT by this constant; it keeps the first sigmoid away from saturation.
FFT_MAGIC = 4.0


@dataclass
class ImageParam:
    """Trainable ``params`` plus ``image()`` -> float ``B x 3 x H x W`` in ``[0, 1]``."""

    params: list[torch.Tensor]
    image: Callable[[], torch.Tensor]
    name: str

    def __call__(self) -> torch.Tensor:
        return self.image()


def _randn(shape: Sequence[int], generators: Sequence[torch.Generator], sd: float, device) -> torch.Tensor:
    """One normal draw per batch element, each from that element's own generator (on the CPU,
    so the numbers are the same whatever the device)."""
    rows = [torch.randn(tuple(shape), generator=g) for g in generators]
    return (torch.stack(rows) * sd).to(device)


def decorrelate_colors(t: torch.Tensor) -> torch.Tensor:
    """Map decorrelated colour channels to RGB with Lucid's colour matrix (``B x 3 x H x W``)."""
    m = COLOR_CORRELATION.to(t.device, t.dtype)
    return F.conv2d(t, m[:, :, None, None])  # a 1x1 convolution: out[d] = sum_c m[d, c] * t[c]


def _to_rgb(t: torch.Tensor, decorrelate: bool) -> torch.Tensor:
    return torch.sigmoid(decorrelate_colors(t) if decorrelate else t)


def fft_scale(h: int, w: int, decay_power: float = 1.0) -> torch.Tensor:
    """Lucid's 1/f spectrum scaling: ``1 / max(freq, 1/max(h, w)) ** decay_power``.

    Lucid multiplies by ``sqrt(h*w)`` and uses an unnormalised inverse FFT; with the orthonormal
    inverse FFT used here the two factors cancel, so neither appears.
    """
    fy = torch.fft.fftfreq(h)[:, None]
    fx = torch.fft.rfftfreq(w)[None, :]
    freqs = torch.sqrt(fx * fx + fy * fy)
    return 1.0 / freqs.clamp(min=1.0 / max(h, w)) ** decay_power


def fft_image(batch: int, size: int | tuple[int, int], generators: Sequence[torch.Generator], *,
              sd: float = 0.01, decay_power: float = 1.0, decorrelate: bool = True,
              device: torch.device | str = "cpu") -> ImageParam:
    """Lucid's default parameterization: a colour-decorrelated image with a 1/f-scaled spectrum.

    The spectrum (real and imaginary parts) starts as N(0, sd); the image is
    ``sigmoid(decorrelate(irfft2(scale * spectrum) / 4))``.
    """
    h, w = (size, size) if isinstance(size, int) else size
    _check_generators(batch, generators)
    scale = fft_scale(h, w, decay_power).to(device)[None, None, :, :, None]
    spectrum = _randn((3, h, w // 2 + 1, 2), generators, sd, device).requires_grad_(True)

    def image() -> torch.Tensor:
        spec = torch.view_as_complex((scale * spectrum).contiguous())
        t = torch.fft.irfft2(spec, s=(h, w), norm="ortho") / FFT_MAGIC
        return _to_rgb(t, decorrelate)

    return ImageParam([spectrum], image, "fft")


def pixel_image(batch: int, size: int | tuple[int, int], generators: Sequence[torch.Generator], *,
                sd: float = 0.01, decorrelate: bool = True, device: torch.device | str = "cpu") -> ImageParam:
    """Plain pixels (still colour-decorrelated and squashed by a sigmoid, as in Lucid); for ablations."""
    h, w = (size, size) if isinstance(size, int) else size
    _check_generators(batch, generators)
    pixels = _randn((3, h, w), generators, sd, device).requires_grad_(True)
    return ImageParam([pixels], lambda: _to_rgb(pixels, decorrelate), "pixel")


PARAMETERIZATIONS: dict[str, Callable[..., ImageParam]] = {"fft": fft_image, "pixel": pixel_image}


def _check_generators(batch: int, generators: Sequence[torch.Generator]) -> None:
    if len(generators) != batch:
        raise ValueError(f"need one generator per batch element: {batch} elements, {len(generators)} generators")

