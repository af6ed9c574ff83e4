"""Datasets: folders of images, the procedural concept dataset, and the batch iterator.

Every dataset here returns ``(image 3xHxW in [0,1], label or -1)`` and has ``image_id(i)``,
``load_image(image_id)``, ``classes`` and ``spec()`` so results can point back at their images.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import BadInputError
from .folder import IMAGE_EXTENSIONS, ImageFolderDataset, Skipped, pil_to_tensor, preprocess_image, to_rgb
from .loader import Batch, iterate_batches


def __getattr__(name: str):
    if name in ("ConceptDataset", "CONCEPTS"):  # the procedural set imports lazily
        from . import procedural

        return getattr(procedural, name)
    raise AttributeError(name)


def as_dataset(data, model=None, *, size: int | None = None, n: int = 2000, seed: int = 0, param: str = "data="):
    """Turn ``data`` into a dataset preprocessed for ``model``.

    ``data`` is a folder path, ``"procedural"`` (the project's concept dataset: ``n`` images,
    ``seed``), or a dataset that already follows the contract above (returned unchanged).
    ``param``: how errors name the argument (``data=`` in Python; the CLI passes ``"--data "``).

    >>> ds = as_dataset("procedural", n=100)
    >>> len(ds), ds.classes[:2]                  # doctest: +SKIP
    (100, ['face', 'car'])
    """
    size = size or (model.input_size if model is not None else 224)
    if isinstance(data, str) and data == "procedural":
        from .procedural import ConceptDataset

        return ConceptDataset(n=n, seed=seed, size=size)
    if isinstance(data, (str, Path)):
        if "\x00" in str(data) or not str(data):
            raise BadInputError(f"{param}{str(data)!r} is not a folder path")
        if not Path(data).expanduser().exists():
            raise BadInputError(f"{param}{str(data)!r} does not exist; give a folder of images or 'procedural'")
        return ImageFolderDataset(data, size=size)
    if hasattr(data, "__getitem__") and hasattr(data, "__len__") and not isinstance(data, (bytes, bytearray)):
        return data
    raise BadInputError(f"cannot use {type(data).__name__} as {param.strip(' =-')}; give a folder path, "
                        "'procedural' or a Dataset")


def open_source(spec: dict):
    """Reopen the dataset described by ``dataset.spec()``."""
    kind = spec.get("kind")
    if kind == "folder":
        return ImageFolderDataset(spec["root"], size=spec["size"])
    if kind == "procedural":
        from .procedural import ConceptDataset

        return ConceptDataset(**{k: v for k, v in spec.items() if k != "kind"})
    raise BadInputError(f"unknown data source kind {kind!r}; valid: folder, procedural")


__all__ = [
    "IMAGE_EXTENSIONS", "Batch", "ImageFolderDataset", "Skipped", "as_dataset", "iterate_batches",
    "open_source", "pil_to_tensor", "preprocess_image", "to_rgb", "ConceptDataset",
]
