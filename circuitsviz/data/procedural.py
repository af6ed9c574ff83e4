"""The procedural concept dataset: labelled images whose concepts are known by construction.

Image ``i`` is a pure function of ``(seed, i)``: each image draws its own generator from
``numpy.random.default_rng([seed, i])``, so any index can be rendered alone, in any order, in any
process, and always comes out the same. Every image holds one object of one concept, at a random
position, scale, rotation and colour, on a textured, noisy background.

Some concepts share parts on purpose, the way a cat face and a car front share "two round things
and some lines" in ImageNet: ``face`` (disk, ears, eyes, whiskers) and ``car`` (body, headlight
disks, grille bars); ``wheel`` (ring, spokes, hub) and ``rings``. The others share nothing:
gratings at three orientations, checkerboard, dots, star, cross, triangle, colour blob.

>>> ds = ConceptDataset(n=100, seed=0)
>>> image, label = ds[3]
>>> image.shape, ds.classes[label]            # doctest: +SKIP
(torch.Size([3, 64, 64]), 'grating_vertical')
>>> export("concepts/", n=2000)                # an ImageFolder tree: concepts/<concept>/<i>.png  # doctest: +SKIP
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..errors import BadInputError, check_int
from .folder import pil_to_tensor

# Bump when any change alters the pixels of an existing (seed, i); trained weights record it.
DATASET_VERSION = 1
SUPERSAMPLE = 2  # draw at 2x and box-filter down: cheap anti-aliasing
# Bounds that keep one image (drawn at SUPERSAMPLE x) and a contact sheet to tens of MB.
MAX_SIZE, MAX_IMAGES, MAX_SHEET_PIXELS = 1024, 10_000_000, 1 << 26

Colour = tuple[float, float, float]


@functools.lru_cache(maxsize=4)
def _pixel_centres(size: int) -> np.ndarray:
    grid = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    grid.setflags(write=False)  # shared between calls
    return grid


class _Canvas:
    """Masks for one object, drawn in the object's own frame: unit radius, centred, rotated.

    ``main`` and ``accent`` are two coverage masks (two colours); unit coordinates map to pixels
    by ``centre + radius * R(angle) @ (x, y)``.
    """

    def __init__(self, size: int, cx: float, cy: float, radius: float, angle: float) -> None:
        self.size, self.cx, self.cy, self.r = size, cx, cy, radius
        self.cos, self.sin = np.cos(angle), np.sin(angle)
        self.main = Image.new("L", (size, size), 0)
        self.accent = Image.new("L", (size, size), 0)
        self._draw = {"main": ImageDraw.Draw(self.main), "accent": ImageDraw.Draw(self.accent)}

    def px(self, x: float, y: float) -> tuple[float, float]:
        return (self.cx + self.r * (self.cos * x - self.sin * y), self.cy + self.r * (self.sin * x + self.cos * y))

    def polygon(self, pts, layer: str = "main", fill: int = 255) -> None:
        self._draw[layer].polygon([self.px(x, y) for x, y in pts], fill=fill)

    def circle(self, x: float, y: float, rad: float, layer: str = "main", fill: int = 255) -> None:
        px, py = self.px(x, y)
        rr = rad * self.r
        self._draw[layer].ellipse((px - rr, py - rr, px + rr, py + rr), fill=fill)

    def ring(self, rad: float, width: float, layer: str = "main") -> None:
        self.circle(0, 0, rad + width / 2, layer, 255)
        self.circle(0, 0, rad - width / 2, layer, 0)

    def line(self, x0: float, y0: float, x1: float, y1: float, width: float, layer: str = "main") -> None:
        self._draw[layer].line([self.px(x0, y0), self.px(x1, y1)], fill=255, width=max(1, round(width * self.r)))

    def coords(self) -> tuple[np.ndarray, np.ndarray]:
        """Pixel grid in the object's frame (u along its x axis, v along its y axis), in unit radii."""
        ys, xs = _pixel_centres(self.size)
        dx, dy = xs - self.cx, ys - self.cy
        return (self.cos * dx + self.sin * dy) / self.r, (-self.sin * dx + self.cos * dy) / self.r

    def set_mask(self, mask: np.ndarray, layer: str = "main") -> None:
        img = Image.fromarray((np.clip(mask, 0, 1) * 255).astype(np.uint8), "L")
        setattr(self, layer, img)
        self._draw[layer] = ImageDraw.Draw(img)


# --------------------------------------------------------------------------- concepts
# Each takes the canvas and the image's generator; angles are set by ROTATION below.

def _face(c: _Canvas, rng) -> None:
    c.circle(0, 0.1, 0.72)
    for s in (-1, 1):
        c.polygon([(s * 0.72, -0.15), (s * 0.62, -0.98), (s * 0.12, -0.55)])  # ear
        c.circle(s * 0.3, -0.02, 0.13, "accent")  # eye
        for dy in (-0.12, 0.05, 0.22):  # whiskers reach past the face outline
            c.line(s * 0.25, 0.35, s * 1.0, 0.35 + dy * 1.6, 0.06, "accent")
    c.polygon([(-0.1, 0.2), (0.1, 0.2), (0, 0.32)], "accent")  # nose


def _car(c: _Canvas, rng) -> None:
    c.polygon([(-0.55, -0.35), (-0.4, -0.85), (0.4, -0.85), (0.55, -0.35)])  # cabin
    c.polygon([(-0.42, -0.4), (-0.32, -0.75), (0.32, -0.75), (0.42, -0.4)], "accent")  # windscreen
    # body with cut corners (a rounded box that survives rotation)
    c.polygon([(-1.0, -0.2), (-0.8, -0.4), (0.8, -0.4), (1.0, -0.2), (1.0, 0.4), (0.8, 0.6), (-0.8, 0.6), (-1.0, 0.4)])
    for s in (-1, 1):
        c.circle(s * 0.66, 0.05, 0.2, "accent")  # headlights
        c.polygon([(s * 0.85, 0.55), (s * 0.5, 0.55), (s * 0.5, 0.85), (s * 0.85, 0.85)])  # tyres
    for x in np.linspace(-0.3, 0.3, 4):  # grille bars
        c.line(x, -0.1, x, 0.4, 0.07, "accent")


def _wheel(c: _Canvas, rng) -> None:
    c.ring(0.85, 0.25)
    c.circle(0, 0, 0.2, "accent")
    for k in range(6):
        a = k * np.pi / 3
        c.line(0, 0, 0.8 * np.cos(a), 0.8 * np.sin(a), 0.08)


def _rings(c: _Canvas, rng) -> None:
    for rad in (0.92, 0.62, 0.32):
        c.ring(rad, 0.14)


def _star(c: _Canvas, rng) -> None:
    a = np.arange(10) * np.pi / 5 - np.pi / 2
    rad = np.where(np.arange(10) % 2 == 0, 1.0, 0.42)
    c.polygon(list(zip(rad * np.cos(a), rad * np.sin(a))))


def _cross(c: _Canvas, rng) -> None:
    w = 0.3
    c.polygon([(-w, -1), (w, -1), (w, -w), (1, -w), (1, w), (w, w), (w, 1), (-w, 1), (-w, w), (-1, w), (-1, -w), (-w, -w)])


def _triangle(c: _Canvas, rng) -> None:
    a = np.arange(3) * 2 * np.pi / 3 - np.pi / 2
    c.polygon(list(zip(np.cos(a), np.sin(a) + 0.15)))


def _patch(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return (u * u + v * v) <= 1.0


def _grating(c: _Canvas, rng) -> None:
    u, v = c.coords()
    period = rng.uniform(0.35, 0.55)
    c.set_mask(_patch(u, v) & (np.sin(2 * np.pi * v / period) > 0))


def _checkerboard(c: _Canvas, rng) -> None:
    u, v = c.coords()
    cell = rng.uniform(0.3, 0.45)
    square = (np.abs(u) <= 0.85) & (np.abs(v) <= 0.85)
    c.set_mask(square & ((np.floor(u / cell) + np.floor(v / cell)) % 2 == 0))


def _dots(c: _Canvas, rng) -> None:
    u, v = c.coords()
    p = rng.uniform(0.38, 0.5)
    du, dv = (u % p) - p / 2, (v % p) - p / 2
    c.set_mask(_patch(u, v) & (du * du + dv * dv <= (0.3 * p) ** 2))


def _blob(c: _Canvas, rng) -> None:
    u, v = c.coords()
    sx, sy = rng.uniform(0.35, 0.6, size=2)
    c.set_mask(1.4 * np.exp(-0.5 * ((u / sx) ** 2 + (v / sy) ** 2)))
    ox, oy = rng.uniform(-0.4, 0.4, size=2)
    c.set_mask(np.exp(-0.5 * (((u - ox) / (0.6 * sx)) ** 2 + ((v - oy) / (0.6 * sy)) ** 2)), "accent")


# name -> (draw function, rotation: (base angle, jitter) in degrees; None = any angle)
_CONCEPTS: dict[str, tuple[Callable, tuple[float, float] | None]] = {
    "face": (_face, (0, 30)),
    "car": (_car, (0, 20)),
    "wheel": (_wheel, None),
    "rings": (_rings, None),
    "star": (_star, None),
    "cross": (_cross, None),
    "triangle": (_triangle, None),
    "grating_horizontal": (_grating, (0, 12)),
    "grating_vertical": (_grating, (90, 12)),
    "grating_diagonal": (_grating, (45, 12)),
    "checkerboard": (_checkerboard, None),
    "dots": (_dots, None),
    "blob": (_blob, None),
}
CONCEPTS: list[str] = list(_CONCEPTS)


def _colour_far_from(rng, ref: np.ndarray, min_dist: float) -> np.ndarray:
    for _ in range(32):
        col = rng.uniform(0, 1, size=3)
        if np.linalg.norm(col - ref) >= min_dist:
            return col
    return 1.0 - ref  # the opposite colour is always far enough


def _background(rng, size: int) -> tuple[Image.Image, np.ndarray]:
    """A smooth random colour field (low-frequency texture); returns it and its mean colour."""
    base = rng.uniform(0.1, 0.9, size=3)
    grid = np.clip(base + rng.uniform(-0.25, 0.25, size=(4, 4, 3)) * rng.uniform(0.2, 1.0), 0, 1)
    field = Image.fromarray((grid * 255).astype(np.uint8), "RGB").resize((size, size), Image.BICUBIC)
    return field, grid.reshape(-1, 3).mean(0)


def _rgb(col: np.ndarray) -> tuple[int, int, int]:
    return tuple(int(round(v * 255)) for v in col)


def render(label: int, rng: np.random.Generator, size: int = 64) -> Image.Image:
    """Draw one image of concept ``label`` with the randomness of ``rng``."""
    draw, rotation = _CONCEPTS[CONCEPTS[label]]
    big = size * SUPERSAMPLE
    img, bg_mean = _background(rng, big)
    main = _colour_far_from(rng, bg_mean, 0.45)
    accent = _colour_far_from(rng, main, 0.45)
    radius = rng.uniform(0.2, 0.36) * big
    margin = 0.8 * radius
    cx, cy = rng.uniform(margin, big - margin, size=2)
    if rotation is None:
        angle = rng.uniform(0, 360)
    else:
        angle = rotation[0] + rng.uniform(-rotation[1], rotation[1])
    canvas = _Canvas(big, cx, cy, radius, np.deg2rad(angle))
    draw(canvas, rng)
    for mask, col in ((canvas.main, main), (canvas.accent, accent)):
        img = Image.composite(Image.new("RGB", img.size, _rgb(col)), img, mask)
    arr = np.asarray(img.reduce(SUPERSAMPLE), dtype=np.float32)
    noise = rng.standard_normal(size=arr.shape, dtype=np.float32) * np.float32(rng.uniform(0, 0.06) * 255)
    return Image.fromarray(np.clip(arr + noise, 0, 255).round().astype(np.uint8), "RGB")


class ConceptDataset(torch.utils.data.Dataset):
    """``n`` procedural images, labelled with their concept; image ``i`` depends only on ``(seed, i)``.

    Labels are balanced: every block of ``len(CONCEPTS)`` consecutive indices holds each concept
    once, in an order shuffled by ``(seed, block)``.

    >>> ds = ConceptDataset(n=2000, seed=0, size=64)
    >>> image, label = ds[0]                  # 3 x 64 x 64 float in [0, 1], concept index
    >>> ds.load_image(ds.image_id(0)).size    # the same image as a PIL image
    (64, 64)
    """

    def __init__(self, n: int = 2000, seed: int = 0, size: int = 64) -> None:
        self.n = check_int("n (the number of images)", n, 1, MAX_IMAGES)
        self.seed = check_int("seed", seed, 0, 2**63 - 1)
        self.size = check_int("size (the image side in pixels)", size, 8, MAX_SIZE)
        self.classes: list[str] = list(CONCEPTS)

    def __len__(self) -> int:
        return self.n

    def _index(self, i: int) -> int:
        i = int(i)
        if i < 0:
            i += self.n
        if not 0 <= i < self.n:
            raise IndexError(f"index {i} out of range for a ConceptDataset of {self.n} images")
        return i

    def label(self, i: int) -> int:
        i = self._index(i)
        k = len(CONCEPTS)
        order = np.random.default_rng([self.seed, i // k, 0x1abe1]).permutation(k)
        return int(order[i % k])

    def image_id(self, i: int) -> str:
        return str(self._index(i))

    def index_of(self, image_id: str) -> int:
        try:
            return self._index(int(image_id))
        except (ValueError, IndexError):
            raise BadInputError(f"image id {image_id!r} is not an index 0..{self.n - 1} of this dataset") from None

    def load_image(self, image_id: str) -> Image.Image:
        i = self.index_of(image_id)
        return render(self.label(i), np.random.default_rng([self.seed, i]), self.size)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        i = self._index(i)
        label = self.label(i)
        return pil_to_tensor(render(label, np.random.default_rng([self.seed, i]), self.size)), label

    def spec(self) -> dict:
        return {"kind": "procedural", "n": self.n, "seed": self.seed, "size": self.size}

    def __repr__(self) -> str:
        return f"ConceptDataset(n={self.n}, seed={self.seed}, size={self.size})"


def export(out_dir: str | Path, n: int = 2000, seed: int = 0, size: int = 64) -> Path:
    """Write ``n`` images as an ImageFolder tree ``out_dir/<concept>/<i>.png``; return ``out_dir``.

    Any folder dataset reader (``ImageFolderDataset``, torchvision's ``ImageFolder``) then reads
    it with the concept names as class folders.

    >>> export("concepts", n=2000)   # doctest: +SKIP
    PosixPath('concepts')
    """
    ds = ConceptDataset(n=n, seed=seed, size=size)
    if not isinstance(out_dir, (str, Path)) or not str(out_dir):
        raise BadInputError(f"out_dir must be a folder path, got {out_dir!r}")
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise BadInputError(f"{str(out)!r} exists and is not a folder; give a folder to export into")
    try:
        for name in CONCEPTS:
            (out / name).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BadInputError(f"cannot create the export folder {str(out)!r}: {e.strerror or e}") from None
    for i in range(len(ds)):
        ds.load_image(str(i)).save(out / CONCEPTS[ds.label(i)] / f"{i}.png")
    return out


def save_preview_sheet(out: str | Path, per_concept: int = 8, seed: int = 0, size: int = 64) -> Path:
    """Write :func:`preview_sheet` to ``out``, an image file whose extension names its format.

    >>> save_preview_sheet("concepts.png")   # doctest: +SKIP
    PosixPath('concepts.png')
    """
    out = Path(out).expanduser() if isinstance(out, (str, Path)) and str(out) else None
    formats = Image.registered_extensions()
    if out is None or out.suffix.lower() not in formats:
        raise BadInputError(f"the sheet's file name must end in an image extension such as .png or .jpg, got {str(out)!r}")
    sheet = preview_sheet(per_concept=per_concept, seed=seed, size=size)
    try:
        sheet.save(out)
    except OSError as e:
        raise BadInputError(f"cannot write {str(out)!r}: {e.strerror or e}") from None
    return out


LABEL_PAD = 4      # pixels either side of a row's concept name
LABEL_HEIGHT = 12  # PIL's default bitmap font is 11 px tall: rows are at least this tall


def label_width() -> int:
    """Width of the label column on the left of :func:`preview_sheet`: the longest concept name."""
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    return 2 * LABEL_PAD + max(int(np.ceil(probe.textlength(name))) for name in CONCEPTS)


def preview_sheet(per_concept: int = 8, seed: int = 0, size: int = 64) -> Image.Image:
    """A contact sheet: one row per concept (in ``CONCEPTS`` order), ``per_concept`` examples each,
    the concept's name on the left of its row (black on white, in a :func:`label_width` column).

    >>> preview_sheet(per_concept=8).save("concepts.png")   # doctest: +SKIP
    """
    k = len(CONCEPTS)
    check_int("per_concept", per_concept, 1, 256)
    if k * per_concept * size * size > MAX_SHEET_PIXELS:
        raise BadInputError(f"a sheet of {per_concept} x {k} images of {size} px is over the "
                            f"{MAX_SHEET_PIXELS:,}-pixel limit; lower per_concept or size")
    ds = ConceptDataset(n=k * per_concept, seed=seed, size=size)  # balanced: each concept per_concept times
    left, row = label_width(), max(size, LABEL_HEIGHT)
    sheet = Image.new("RGB", (left + per_concept * size, k * row), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for label, name in enumerate(CONCEPTS):
        draw.text((LABEL_PAD, label * row + (row - LABEL_HEIGHT) // 2), name, fill=(0, 0, 0))
    filled = [0] * k
    for i in range(len(ds)):
        label = ds.label(i)
        sheet.paste(ds.load_image(str(i)), (left + filled[label] * size, label * row))
        filled[label] += 1
    return sheet
