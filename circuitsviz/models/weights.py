"""Finding, downloading and verifying weight files.

Resolution order for a zoo entry's weights:

1. an explicit ``weights=`` path;
2. the folder in ``$CIRCUITSVIZ_WEIGHTS_DIR``;
3. ``weights/`` in a source checkout, or ``~/.cache/circuitsviz/weights`` for an installed package;
4. a download from the entry's URLs into the folder of step 2 or 3.

A download streams into ``<name>.part-<pid>`` next to its target and is renamed into place only
after its size (and SHA-256, where known) check out, so an interrupted or corrupt download never
leaves a file that a later run would trust. When no hash is published, the first good download
records its size and SHA-256 in ``<name>.json``; later loads check the file against that record.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..errors import WeightsError

ENV_DIR = "CIRCUITSVIZ_WEIGHTS_DIR"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class WeightsSpec:
    """Everything about one checkpoint in one place: file name, where to get it, what it hashes to."""

    filename: str
    urls: tuple[str, ...] = ()
    size: int | None = None
    sha256: str | None = None  # a prefix is enough (torchvision publishes 8 hex digits)
    how_to_get: str = ""  # shown when the file is missing and cannot be downloaded


def default_weights_dir() -> Path:
    """``$CIRCUITSVIZ_WEIGHTS_DIR``, else ``weights/`` of a source checkout, else a user cache dir."""
    env = os.environ.get(ENV_DIR)
    if env:
        return Path(env).expanduser()
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").is_file() and (checkout / "weights").is_dir():
        return checkout / "weights"
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "circuitsviz" / "weights"


def sha256_of(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _record_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def verify_file(path: str | Path, size: int | None = None, sha256: str | None = None) -> None:
    """Raise :class:`WeightsError` unless ``path`` has the expected size and hash.

    Expectations not given are taken from the ``<name>.json`` record of an earlier download.
    """
    path = Path(path)
    rec = _record_path(path)
    if rec.is_file() and (size is None or sha256 is None):
        meta = json.loads(rec.read_text())
        size = size if size is not None else meta.get("size")
        sha256 = sha256 or meta.get("sha256")
    actual = path.stat().st_size
    if size is not None and actual != size:
        raise WeightsError(
            f"weights file {path} has {actual} bytes but {size} were expected: it is truncated or "
            f"not the right file. Delete it and run again to re-download."
        )
    if sha256 is not None:
        digest = sha256_of(path)
        if not digest.startswith(sha256.lower()):
            raise WeightsError(
                f"weights file {path} has SHA-256 {digest}, expected {sha256}: it is corrupt or not "
                "the right file. Delete it and run again to re-download."
            )


def download(
    url: str,
    dest: str | Path,
    *,
    size: int | None = None,
    sha256: str | None = None,
    progress: bool = True,
    timeout: float = 30.0,
) -> Path:
    """Download ``url`` to ``dest`` atomically, checking size and SHA-256; return ``dest``.

    >>> download("https://example.org/model.pth", "weights/model.pth", sha256="ab12...")  # doctest: +SKIP
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f"{dest.name}.part-{os.getpid()}")
    h = hashlib.sha256()
    got = 0
    try:
        req = urllib.request.Request(url, headers={"User-Agent": "circuitsviz"})
        with urllib.request.urlopen(req, timeout=timeout) as resp, open(tmp, "wb") as f:
            announced = resp.headers.get("Content-Length")
            announced = int(announced) if announced is not None else None
            total = size or announced
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                      desc=f"downloading {dest.name}", disable=not progress) as bar:
                for chunk in iter(lambda: resp.read(_CHUNK), b""):
                    f.write(chunk)
                    h.update(chunk)
                    got += len(chunk)
                    bar.update(len(chunk))
        for expected, what in ((announced, "the server announced"), (size, "were expected")):
            if expected is not None and got != expected:
                raise WeightsError(
                    f"download of {url} stopped after {got} bytes but {expected} {what}; "
                    "nothing was saved. Run again to retry."
                )
        digest = h.hexdigest()
        if sha256 is not None and not digest.startswith(sha256.lower()):
            raise WeightsError(
                f"download of {url} has SHA-256 {digest}, expected {sha256}; nothing was saved."
            )
        os.replace(tmp, dest)
        if sha256 is None:
            # No published hash: remember what we got, so later loads can detect damage.
            _record_path(dest).write_text(json.dumps(
                {"url": url, "size": got, "sha256": digest,
                 "downloaded": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, indent=2))
        return dest
    finally:
        tmp.unlink(missing_ok=True)


def resolve(spec: WeightsSpec, weights: str | Path | None = None, *, progress: bool = True,
            download_ok: bool = True) -> Path:
    """Find (or download) the file for ``spec`` and verify it; return its path."""
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsError(f"weights file {path} does not exist")
        verify_file(path, spec.size, spec.sha256)
        return path
    folder = default_weights_dir()
    path = folder / spec.filename
    if path.is_file():
        verify_file(path, spec.size, spec.sha256)
        return path
    errors = []
    if download_ok:
        for url in spec.urls:
            try:
                return download(url, path, size=spec.size, sha256=spec.sha256, progress=progress)
            except WeightsError as e:
                errors.append(str(e))
            except (urllib.error.URLError, OSError, TimeoutError) as e:
                errors.append(f"could not download {url}: {getattr(e, 'reason', e)}")
    tried = "".join(f"\n  - {e}" for e in errors)
    urls = "".join(f"\n  {u}" for u in spec.urls)
    raise WeightsError(
        f"weights file {spec.filename!r} not found in {folder}."
        + (f"\nDownload failed:{tried}" if errors else "")
        + (f"\nDownload it from:{urls}" if spec.urls else "")
        + (f"\n{spec.how_to_get}" if spec.how_to_get else "")
        + f"\nThen put it at {path}, or pass weights=PATH (--weights PATH), "
        f"or set {ENV_DIR} to the folder that holds it."
    )


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a state dict with ``weights_only=True``: no pickled code ever runs."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for a damaged archive
        raise WeightsError(f"cannot read weights file {path}: {e}") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise WeightsError(f"weights file {path} does not hold a state dict")
    return obj
