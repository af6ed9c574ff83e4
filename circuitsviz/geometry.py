"""Receptive-field geometry: which input pixels a position of a layer's activation grid sees.

One convention everywhere: per axis, position ``p`` sees input pixels
``[offset + p * stride, offset + p * stride + size)``; ``offset`` is the first pixel of position 0
(negative where the window reaches into padding). :mod:`circuitsviz.mining.receptive` computes
fields from a model's graph, mining records them, the store keeps ``(size, stride, offset)`` of
square fields as they are, and example crops are :meth:`ReceptiveField.box`. Torch-free, so the
store and the viewer use it without importing torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import BadInputError


@dataclass(frozen=True)
class ReceptiveField:
    """Per axis ``(y, x)``: window size, step between neighbouring positions, first pixel of position 0.

    >>> rf = ReceptiveField(size=(7, 7), stride=(2, 2), offset=(-2, -2))
    >>> rf.box(3, 0, image_size=224)          # top, left, bottom, right (exclusive), clipped
    (4, 0, 11, 5)
    """

    size: tuple[int, int]
    stride: tuple[int, int]
    offset: tuple[int, int]

    @classmethod
    def square(cls, size: float, stride: float, offset: float) -> "ReceptiveField":
        """The field of :meth:`as_tuple`'s ``(size, stride, offset)``, as the store records it."""
        return cls((size, size), (stride, stride), (offset, offset))

    def box(self, y: int, x: int, image_size: int | tuple[int, int] | None = None) -> tuple[int, int, int, int]:
        """The input pixels that position ``(y, x)`` sees, clipped to the image when its size is given."""
        top = self.offset[0] + y * self.stride[0]
        left = self.offset[1] + x * self.stride[1]
        # floor/ceil: a field recorded with fractional pixels still covers every pixel it touches
        top, left, bottom, right = (math.floor(top), math.floor(left), math.ceil(top + self.size[0]),
                                    math.ceil(left + self.size[1]))
        if image_size is not None:
            h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
            top, left, bottom, right = max(top, 0), max(left, 0), min(bottom, h), min(right, w)
        return top, left, bottom, right

    def as_tuple(self) -> tuple[int, int, int]:
        """``(size, stride, offset)`` for square fields, the form the store records."""
        if len({self.size[0], self.size[1]}) != 1 or self.stride[0] != self.stride[1] or self.offset[0] != self.offset[1]:
            raise BadInputError(f"receptive field {self} is not square; use its per-axis fields")
        return self.size[0], self.stride[0], self.offset[0]
