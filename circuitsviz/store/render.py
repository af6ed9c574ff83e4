"""Example crops and heatmap overlays, rendered from mining records and the source images.

An example records ``(image_id, y, x)``: a position on the layer's activation grid. Its pixels
are recovered by reopening the data source, reproducing the model-input image with
:func:`circuitsviz.data.preprocess_image`, and cutting out the receptive field of ``(y, x)``:
grid position ``p`` sees input pixels ``[offset + p * stride, offset + p * stride + size)``, clipped
to the image (:mod:`circuitsviz.geometry`, the convention mining records).

Renders are cached as PNGs in the user's cache folder (``$CIRCUITSVIZ_CACHE``, else
``$XDG_CACHE_HOME/circuitsviz/renders``, else ``~/.cache/circuitsviz/renders``), never in the run:
viewing a run writes nothing into it, and a read-only run can be viewed. Each file is named by the
hash of everything that decides its pixels (the data source, the image, the position, the mode...),
so a render is computed once, and runs on the same data share renders.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..errors import BadInputError
from ..geometry import ReceptiveField

RENDER_VERSION = 2  # bump when the drawing below changes, so old cached renders are not reused
MODES = ("crop", "full", "overlay")


def receptive_box(rf: tuple[float, float, float] | None, y: int, x: int, input_size: int) -> tuple[int, int, int, int]:
    """The ``(left, top, right, bottom)`` input-pixel box seen by grid position ``(y, x)``: the
    layer's recorded ``(size, stride, offset)`` field's :meth:`~circuitsviz.geometry.ReceptiveField.box`
    in PIL's order.

    >>> receptive_box((32, 16, -8), 0, 1, 64)    # rows -8..24 clipped to 0..24, columns 8..40
    (8, 0, 40, 24)
    >>> receptive_box(None, 3, 3, 64)            # no receptive field recorded: the whole image
    (0, 0, 64, 64)
    """
    if rf is None:
        return (0, 0, input_size, input_size)
    top, left, bottom, right = ReceptiveField.square(*rf).box(y, x, input_size)
    if bottom <= top:  # a position whose field misses the image (a bad record): show all of it
        top, bottom = 0, input_size
    if right <= left:
        left, right = 0, input_size
    return (left, top, right, bottom)


def heat_colours(a: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] to a dark-red → yellow ramp (``H x W x 3`` floats in [0, 255])."""
    r = np.clip(a * 2.0, 0, 1) * 255
    g = np.clip(a * 2.0 - 1.0, 0, 1) * 255
    return np.stack([r, g, np.zeros_like(a)], axis=-1)


def draw_overlay(image: Image.Image, actmap: np.ndarray | None, box: tuple[int, int, int, int]) -> Image.Image:
    """``image`` with the positive part of ``actmap`` blended in as heat, and ``box`` outlined."""
    out = image.copy()
    if actmap is not None:
        a = np.clip(np.asarray(actmap, dtype=np.float32), 0, None)
        # Stretch to the map's own range: a unit that fires everywhere a little still shows where it
        # fires most, instead of tinting the whole image.
        span = a.max() - a.min()
        a = (a - a.min()) / span if span > 0 else np.zeros_like(a)
        a = np.asarray(Image.fromarray(a, mode="F").resize(image.size, Image.BILINEAR))[..., None]
        pixels = np.asarray(image, dtype=np.float32)
        blended = pixels * (1 - 0.6 * a) + heat_colours(a[..., 0]) * 0.6 * a
        out = Image.fromarray(np.clip(blended, 0, 255).astype(np.uint8), "RGB")
    ImageDraw.Draw(out).rectangle((box[0], box[1], box[2] - 1, box[3] - 1), outline=(255, 230, 0),
                                  width=max(1, image.size[0] // 100))
    return out


def render_view(image: Image.Image, rf, y: int, x: int, mode: str, size: int,
                actmap: np.ndarray | None = None) -> Image.Image:
    """Render one view of a model-input ``image`` for grid position ``(y, x)``."""
    if mode not in MODES:
        raise BadInputError(f"unknown render mode {mode!r}; valid: {', '.join(MODES)}")
    box = receptive_box(rf, y, x, image.size[0])
    if mode == "crop":
        view = image.crop(box)
    else:
        view = draw_overlay(image, actmap if mode == "overlay" else None, box)
    scale = size / max(view.size)
    return view.resize((max(1, round(view.size[0] * scale)), max(1, round(view.size[1] * scale))), Image.BICUBIC)


def default_mode(rf: tuple[float, float, float] | None, input_size: int | None) -> str:
    """The view that shows an example best: its crop when the receptive field is a small part of
    the image, else the heatmap over the whole image (a crop would be the image anyway).

    >>> default_mode((91, 8, 4), 64), default_mode((40, 8, 4), 224)
    ('overlay', 'crop')
    """
    return "overlay" if rf and input_size and rf[0] >= 0.75 * input_size else "crop"


def prerender(run, unit_ids: list[str] | None = None, size: int = 128, cache_dir: Path | None = None) -> int:
    """Draw every recorded example (top and quantile) of ``unit_ids`` (default: every unit that
    has examples) in its default view, so the viewer's first look needs no drawing. Returns the
    number of views drawn; ones already cached cost only a file check.

    >>> prerender(open_run("runs/demo"))      # doctest: +SKIP
    """
    ctx = RenderContext.of(run)
    drawn = 0
    ids = unit_ids if unit_ids is not None else [u.id for u in run.units() if u.kind != "neuron"]
    for uid in ids:
        layer = uid.split("/")[0].split(":")[0]
        mode = default_mode(ctx.rf.get(layer), ctx.input_size)
        for e in [*run.examples(uid), *run.quantile_examples(uid)]:
            try:
                render_example(run, e, mode, size, cache_dir, ctx)
                drawn += 1
            except (OSError, KeyError, ValueError):  # an unreadable source image: the viewer says so
                continue
    return drawn


def render_cache_dir() -> Path:
    """Where rendered example views are cached (outside every run directory)."""
    if os.environ.get("CIRCUITSVIZ_CACHE"):
        return Path(os.environ["CIRCUITSVIZ_CACHE"]).expanduser() / "renders"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "circuitsviz" / "renders"


@dataclass(frozen=True)
class RenderContext:
    """What every render of one run needs from its index, read once: the data source, the model's
    input size and each layer's receptive field."""

    spec: dict
    input_size: int
    rf: dict[str, tuple[float, float, float] | None]

    @classmethod
    def of(cls, run) -> "RenderContext":
        info = run.info()
        spec = info.data_source or {}
        return cls(spec, int(info.input_size or spec.get("size") or 224), {r.name: r.rf for r in run.layers()})


def render_example(run, example, mode: str = "crop", size: int = 128, cache_dir: Path | None = None,
                   context: RenderContext | None = None) -> Path:
    """Render (or find in the cache) one view of a recorded example of ``run``; returns its PNG.
    Pass ``context`` (``RenderContext.of(run)``) when rendering many, to read the index once."""
    from ..units import Unit

    ctx = context or RenderContext.of(run)
    rf = ctx.rf.get(Unit.parse(example.unit_id).layer)
    actmap = getattr(example, "actmap", None) if mode == "overlay" else None
    key = json.dumps([RENDER_VERSION, ctx.spec, ctx.input_size, example.image_id, example.y, example.x, rf, mode, size,
                      None if actmap is None else hashlib.sha256(np.asarray(actmap).tobytes()).hexdigest()],
                     sort_keys=True, default=str)
    digest = hashlib.sha256(key.encode()).hexdigest()
    path = Path(cache_dir or render_cache_dir()) / digest[:2] / f"{digest}.png"
    if not path.exists():
        from ..data import preprocess_image  # imports torch: only when something must be drawn

        image = preprocess_image(run.source().load_image(example.image_id), ctx.input_size)
        write_cached(path, render_view(image, rf, example.y, example.x, mode, size, actmap))
    return path


def write_cached(path: Path, image: Image.Image) -> None:
    """Put a render into the cache: fast PNG compression and no fsync (a lost render is redrawn),
    renamed into place so a concurrent reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{os.getpid()}-{threading.get_ident()}-{path.name}")
    try:
        image.save(tmp, format="PNG", compress_level=1)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
