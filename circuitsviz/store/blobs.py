"""Content-addressed PNG files, written atomically.

A file is named by the SHA-256 of its bytes (``images/ab/abcdef....png``), so the same image is
stored once and a name, once written, never changes meaning. Every file is written to a temporary
name in the same folder and renamed into place, so a reader never sees half a PNG.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import BadInputError


def png_bytes(image: np.ndarray | Image.Image) -> bytes:
    """Encode an ``H x W x 3`` uint8 array (or a PIL image) as PNG, deterministically."""
    if not isinstance(image, Image.Image):
        arr = np.asarray(image)
        if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
            raise BadInputError(
                f"an image must be an H x W x 3 uint8 array, got shape {arr.shape} and dtype {arr.dtype}; "
                "convert with (np.clip(x, 0, 1) * 255).round().astype(np.uint8).transpose(1, 2, 0)"
            )
        image = Image.fromarray(arr, "RGB")
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either no file or the whole file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class BlobStore:
    """PNG files under ``root``, addressed by the SHA-256 of their bytes."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / f"{sha256}.png"

    def put(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        target = self.path(sha)
        if not target.exists():
            atomic_write(target, data)
        return sha

    def put_image(self, image: np.ndarray | Image.Image) -> tuple[str, int, int]:
        """Store an image; returns ``(sha256, height, width)``."""
        data = png_bytes(image)
        h, w = (image.height, image.width) if isinstance(image, Image.Image) else np.asarray(image).shape[:2]
        return self.put(data), int(h), int(w)
