"""Content-addressed PNG files, written atomically.

A file is named by the SHA-256 of its bytes (``images/ab/abcdef....png``), so the same image is
stored once and a name, once written, never changes meaning. Every file is written to a temporary
name in the same folder and renamed into place, so a reader never sees half a PNG.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import BadInputError


_SHA256 = re.compile(r"[0-9a-f]{64}")


def is_sha256(value) -> bool:
    return isinstance(value, str) and _SHA256.fullmatch(value) is not None


def remove_stale_temporaries(root: Path, max_age: float = 3600.0) -> int:
    """Delete ``.tmp-*`` files under ``root`` older than ``max_age`` seconds: what a writer killed
    between writing and renaming leaves behind (no reader ever names them). Returns the count."""
    removed, now = 0, time.time()
    # atomic_write puts them beside their target: images/ab/ and cache/renders/ab/.
    for tmp in [*Path(root).glob(".tmp-*"), *Path(root).glob("*/.tmp-*"), *Path(root).glob("*/*/.tmp-*")]:
        try:
            if now - tmp.stat().st_mtime > max_age:
                tmp.unlink()
                removed += 1
        except OSError:
            pass  # a live writer renamed it meanwhile
    return removed


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
        """``images/ab/abcdef....png``; anything but 64 lowercase hex digits is refused, so a
        damaged or hostile record can never name a file outside the store."""
        if not is_sha256(sha256):
            raise BadInputError(f"image hash {sha256!r} is not 64 hex digits; the record is damaged")
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
