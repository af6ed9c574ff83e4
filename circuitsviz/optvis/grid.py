"""Contact sheets: many rendered images in one PNG, each captioned with its unit id.

>>> results = visualize(model, [f"mixed4e:{c}" for c in range(50, 58)], steps=64)  # doctest: +SKIP
>>> save_grid(results, "mixed4e.png")                                            # doctest: +SKIP
PosixPath('mixed4e.png')
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import BadInputError, check_int, check_list, check_path

CAPTION_HEIGHT = 14  # pixels under each tile; PIL's default bitmap font is 11 px tall
GAP = 4              # pixels between cells and around the sheet
BACKGROUND = (255, 255, 255)
TEXT = (0, 0, 0)


def caption(result, repeated: bool) -> str:
    """A tile's caption: the unit id, plus the image's index when a unit has several images."""
    return f"{result.unit} #{result.index}" if repeated else result.unit


def save_grid(results: Sequence, path: str | Path, *, columns: int | None = None) -> Path:
    """Write ``results`` (from :func:`visualize`) as one PNG grid, left to right, top to bottom.

    Each cell is the image at its own size, unscaled, with its unit id underneath (and ``#i``
    when a unit has several images, as with ``diversity``). ``columns`` defaults to a near-square
    grid (never more columns than results). Returns the path written.
    """
    from PIL import Image, ImageDraw

    from .render import VisResult

    results = check_list("results", results, VisResult)
    if not results:
        raise BadInputError("save_grid needs at least one result")
    path = Path(check_path("path", path))
    columns = check_int("columns", columns, 1, optional=True)
    cols = min(columns or math.ceil(math.sqrt(len(results))), len(results))
    rows = math.ceil(len(results) / cols)
    per_unit = Counter(r.unit for r in results)
    captions = [caption(r, per_unit[r.unit] > 1) for r in results]
    draw_probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    cell_w = max(max(r.image.shape[1] for r in results), *(math.ceil(draw_probe.textlength(c)) for c in captions))
    cell_h = max(r.image.shape[0] for r in results) + CAPTION_HEIGHT
    sheet = Image.new("RGB", (GAP + cols * (cell_w + GAP), GAP + rows * (cell_h + GAP)), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    for i, (r, text) in enumerate(zip(results, captions)):
        left, top = tile_origin(i, cols, cell_w, cell_h)
        sheet.paste(Image.fromarray(np.ascontiguousarray(r.image)), (left, top))
        draw.text((left, top + r.image.shape[0] + 1), text, fill=TEXT)
    import io

    from ..store.blobs import atomic_write

    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    try:
        atomic_write(path, buf.getvalue())
    except OSError as e:
        raise BadInputError(f"cannot write the grid to {str(path)!r}: {e.strerror or e}") from None
    return path


def tile_origin(i: int, columns: int, cell_w: int, cell_h: int) -> tuple[int, int]:
    """The (left, top) pixel of cell ``i`` in a sheet of ``columns`` cells per row."""
    row, col = divmod(i, columns)
    return GAP + col * (cell_w + GAP), GAP + row * (cell_h + GAP)
