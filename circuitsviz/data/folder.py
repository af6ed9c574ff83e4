"""A folder of images as a dataset, robust to corrupt files."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import BadInputError, check_int

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


@dataclass(frozen=True)
class Skipped:
    """Stands in for an image that could not be read; the batch iterator reports and drops it."""

    image_id: str
    reason: str


def preprocess_image(img: Image.Image, size: int) -> Image.Image:
    """The model-input view of ``img``: RGB, shorter side resized to ``size``, centre-cropped square.

    Mining, the SAE sampler and the store's crop renderer all use this one function, so positions
    recorded on activations map back onto exactly the pixels the model saw.
    """
    img = to_rgb(img)
    w, h = img.size
    s = size / min(w, h)
    nw, nh = max(size, round(w * s)), max(size, round(h * s))
    img = img.resize((nw, nh), Image.BILINEAR)
    left, top = (nw - size) // 2, (nh - size) // 2
    return img.crop((left, top, left + size, top + size))


def to_rgb(img: Image.Image) -> Image.Image:
    """Greyscale, palette, CMYK and alpha images become plain RGB (alpha composited on white)."""
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        bg = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, img).convert("RGB")
    return img.convert("RGB")


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    arr = np.asarray(img, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255)


class ImageFolderDataset(torch.utils.data.Dataset):
    """Every image under ``root`` (recursive), sorted by relative path.

    Class subfolders (``root/cat/x.jpg``) become labels, ImageFolder style; images directly in
    ``root`` make the set unlabelled. An unreadable file yields a :class:`Skipped` in place of
    the image tensor, so one bad file never stops a run.

    >>> ds = ImageFolderDataset("~/imagenet/val", size=224)   # doctest: +SKIP
    >>> image, label = ds[0]                                   # doctest: +SKIP
    """

    def __init__(self, root: str | Path, size: int = 224) -> None:
        if not isinstance(root, (str, Path)) or not str(root) or "\x00" in str(root):
            raise BadInputError(f"data folder must be a folder path, got {root!r}")
        self.root = Path(root).expanduser().resolve()
        if not self.root.is_dir():
            raise BadInputError(f"data folder {str(root)!r} does not exist or is not a folder")
        self.size = check_int("size", size, 8, 4096)
        self.paths = sorted(
            p.relative_to(self.root).as_posix()
            for p in self.root.rglob("*")
            if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
        )
        if not self.paths:
            raise BadInputError(
                f"data folder {str(root)!r} holds no images (looked for {', '.join(IMAGE_EXTENSIONS)})"
            )
        tops = sorted({p.split("/", 1)[0] for p in self.paths if "/" in p})
        labelled = bool(tops) and all("/" in p for p in self.paths)
        self.classes: list[str] | None = tops if labelled else None
        self._class_index = {c: i for i, c in enumerate(tops)} if labelled else {}
        self._index = {p: i for i, p in enumerate(self.paths)}

    def __len__(self) -> int:
        return len(self.paths)

    def image_id(self, i: int) -> str:
        return self.paths[i]

    def index_of(self, image_id: str) -> int:
        return self._index[image_id]

    def label(self, i: int) -> int:
        return self._class_index[self.paths[i].split("/", 1)[0]] if self.classes else -1

    def path_of(self, image_id: str) -> Path:
        """The file of ``image_id``; an id that is absolute or climbs out of ``root`` is refused.

        >>> ds.path_of("../../etc/passwd")   # doctest: +SKIP
        Traceback (most recent call last):
        circuitsviz.errors.BadInputError: image id '../../etc/passwd' is not a path inside ...
        """
        if not isinstance(image_id, str) or not image_id or "\x00" in image_id:
            raise BadInputError(f"image id {image_id!r} is not a relative path")
        # Lexical, not resolve(): a symlink the folder's owner put inside the folder is theirs to follow.
        norm = os.path.normpath(image_id)
        if os.path.isabs(norm) or norm == ".." or norm.startswith(".." + os.sep) or norm == ".":
            raise BadInputError(f"image id {image_id!r} is not a path inside the data folder {str(self.root)!r}; "
                                "refusing to read outside it")
        return self.root / norm

    def load_image(self, image_id: str) -> Image.Image:
        path = self.path_of(image_id)
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()
                return to_rgb(img)

    def __getitem__(self, i: int):
        image_id = self.paths[i]
        try:
            img = preprocess_image(self.load_image(image_id), self.size)
        except Exception as e:  # PIL raises many types for bad files; all mean "skip it"
            return Skipped(image_id, f"{type(e).__name__}: {e}".strip()), self.label(i)
        return pil_to_tensor(img), self.label(i)

    def spec(self) -> dict:
        return {"kind": "folder", "root": str(self.root), "size": self.size}
