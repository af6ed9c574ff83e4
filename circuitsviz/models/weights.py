"""Finding, downloading and verifying weight files.

Resolution order for a zoo entry's weights:

1. an explicit ``weights=`` path;
2. the folder in ``$CIRCUITSVIZ_WEIGHTS_DIR``;
3. ``weights/`` in a source checkout, or ``~/.cache/circuitsviz/weights`` for an installed package
   (searched after step 2, so the bundled ``demo.pt`` is still found when step 2 is set);
4. a download from the entry's URLs, each in turn, into the folder of step 2 (else step 3).

A download streams into ``<name>.part-<pid>`` next to its target and is renamed into place only
after its size (and SHA-256, where known) check out *and* the file loads as a state dict of the
expected keys and shapes, so an interrupted download, an HTML error page served with status 200
or a corrupt file is never kept, and the next URL is tried. When no hash is published (the case
of ``inception5h.pth``: neither source publishes one), the first download that loads as the
expected state dict records its size and SHA-256 in ``<name>.json``; later loads check the file
against that record. ``.part-*`` files older than a day (left by killed downloads) are removed.

Nothing is unpickled: files load with ``weights_only=True``, and the sizes an archive declares
are checked against a budget before any tensor is read, so a small file that declares gigabytes
is refused before it takes memory.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..errors import WeightsError

ENV_DIR = "CIRCUITSVIZ_WEIGHTS_DIR"
_CHUNK = 1 << 20
STALE_PART_SECONDS = 24 * 3600


@dataclass(frozen=True)
class WeightsSpec:
    """Everything about one checkpoint in one place: file name, where to get it, what it hashes to."""

    filename: str
    urls: tuple[str, ...] = ()
    size: int | None = None
    sha256: str | None = None  # a prefix is enough (torchvision publishes 8 hex digits)
    how_to_get: str = ""  # shown when the file is missing and cannot be downloaded
    # Most bytes the archive may declare; None: the loader derives a budget from the model.
    max_bytes: int | None = None


def _builtin_weights_dir() -> Path:
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").is_file() and (checkout / "weights").is_dir():
        return checkout / "weights"
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "circuitsviz" / "weights"


def weights_dirs() -> list[Path]:
    """Folders searched for weight files, in order: ``$CIRCUITSVIZ_WEIGHTS_DIR`` (if set), then
    ``weights/`` of a source checkout (else the user cache dir)."""
    env = os.environ.get(ENV_DIR)
    dirs = [Path(env).expanduser()] if env else []
    builtin = _builtin_weights_dir()
    return dirs + ([builtin] if builtin not in dirs else [])


def default_weights_dir() -> Path:
    """Where downloads go: ``$CIRCUITSVIZ_WEIGHTS_DIR``, else ``weights/`` of a source checkout,
    else a user cache dir."""
    return weights_dirs()[0]


def sha256_of(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _record_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


_REDOWNLOAD = "Delete it and run again to re-download."


def verify_file(path: str | Path, size: int | None = None, sha256: str | None = None, *,
                remedy: str = _REDOWNLOAD) -> None:
    """Raise :class:`WeightsError` unless ``path`` has the expected size and hash.

    Expectations not given are taken from the ``<name>.json`` record of an earlier download.
    ``remedy`` ends the message (a file the user chose must not be told to "re-download").
    """
    path = Path(path)
    rec = _record_path(path)
    if rec.is_file() and (size is None or sha256 is None):
        try:
            meta = json.loads(rec.read_text())
        except (ValueError, OSError) as e:
            raise WeightsError(f"cannot read the download record {rec} ({e}); delete it and {path.name} "
                               "and run again to re-download") from None
        meta = meta if isinstance(meta, dict) else {}
        size = size if size is not None else meta.get("size")
        sha256 = sha256 or meta.get("sha256")
    actual = path.stat().st_size
    if size is not None and actual != size:
        raise WeightsError(
            f"weights file {path} has {actual} bytes but {size} were expected: it is truncated or "
            f"not the right file. {remedy}"
        )
    if sha256 is not None:
        digest = sha256_of(path)
        if not digest.startswith(sha256.lower()):
            raise WeightsError(
                f"weights file {path} has SHA-256 {digest}, expected {sha256}: it is corrupt or not "
                f"the right file. {remedy}"
            )


def remove_stale_parts(folder: str | Path, max_age: float = STALE_PART_SECONDS) -> list[Path]:
    """Delete ``*.part-*`` files in ``folder`` older than ``max_age`` seconds (killed downloads)."""
    removed, now = [], time.time()
    for part in Path(folder).glob("*.part-*"):
        try:
            if now - part.stat().st_mtime > max_age:
                part.unlink()
                removed.append(part)
        except OSError:
            pass  # another process's download finished or removed it meanwhile
    return removed


def download(
    url: str,
    dest: str | Path,
    *,
    size: int | None = None,
    sha256: str | None = None,
    progress: bool = True,
    timeout: float = 30.0,
    check: Callable[[Path], None] | None = None,
) -> Path:
    """Download ``url`` to ``dest`` atomically, checking size and SHA-256; return ``dest``.

    ``check(path)`` runs on the finished temporary file before it is renamed into place (the
    loader passes one that loads it as the expected state dict); if it raises, nothing is kept.
    Every failure, including a connection cut mid-transfer, is a :class:`WeightsError`.

    >>> download("https://example.org/model.pth", "weights/model.pth", sha256="ab12...")  # doctest: +SKIP
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_parts(dest.parent)
    tmp = dest.with_name(f"{dest.name}.part-{os.getpid()}")
    h = hashlib.sha256()
    got = 0
    try:
        try:
            req = urllib.request.Request(url, headers={"User-Agent": "circuitsviz"})
            with urllib.request.urlopen(req, timeout=timeout) as resp, open(tmp, "wb") as f:
                announced = resp.headers.get("Content-Length")
                announced = int(announced) if announced is not None and announced.isdigit() else None
                total = size or announced
                with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                          desc=f"downloading {dest.name}", disable=not progress) as bar:
                    for chunk in iter(lambda: resp.read(_CHUNK), b""):
                        f.write(chunk)
                        h.update(chunk)
                        got += len(chunk)
                        bar.update(len(chunk))
        except (http.client.HTTPException, urllib.error.URLError, ConnectionError, TimeoutError) as e:
            # IncompleteRead (a chunked response cut short), a reset connection, a stalled server
            raise WeightsError(f"download of {url} failed after {got} bytes ({type(e).__name__}: "
                               f"{getattr(e, 'reason', e)}); "
                               "nothing was saved") from None
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
        if check is not None:
            try:
                check(tmp)
            except WeightsError as e:
                raise WeightsError(f"download of {url} is not the expected weights ({e}); nothing was saved") from None
        os.replace(tmp, dest)
        if sha256 is None:
            # No published hash: remember what we got, so later loads can detect damage.
            _record_path(dest).write_text(json.dumps(
                {"url": url, "size": got, "sha256": digest,
                 "downloaded": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, indent=2))
        return dest
    finally:
        tmp.unlink(missing_ok=True)


def find(filename: str) -> Path | None:
    """The first file called ``filename`` in :func:`weights_dirs`, or None."""
    for folder in weights_dirs():
        if (folder / filename).is_file():
            return folder / filename
    return None


def resolve(spec: WeightsSpec, weights: str | Path | None = None, *, progress: bool = True,
            download_ok: bool = True, check: Callable[[Path], None] | None = None) -> Path:
    """Find (or download) the file for ``spec`` and verify it; return its path.

    ``check(path)`` vets a download before it is kept (see :func:`download`); every URL is
    tried in turn until one passes.
    """
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsError(f"weights file {path} does not exist (or is not a file)")
        verify_file(path, spec.size, spec.sha256,
                    remedy=f"Pass the {spec.filename} this model expects, or leave out --weights to use the default.")
        return path
    found = find(spec.filename)
    if found is not None:
        remedy = (_REDOWNLOAD if spec.urls else
                  f"Restore it{': ' + spec.how_to_get if spec.how_to_get else ''}.")
        verify_file(found, spec.size, spec.sha256, remedy=remedy)
        return found
    folder = default_weights_dir()
    path = folder / spec.filename
    errors = []
    if download_ok:
        for url in spec.urls:
            try:
                return download(url, path, size=spec.size, sha256=spec.sha256, progress=progress, check=check)
            except WeightsError as e:
                errors.append(str(e))
            except (urllib.error.URLError, OSError, ValueError) as e:
                errors.append(f"could not download {url}: {getattr(e, 'reason', e)}")
    tried = "".join(f"\n  - {e}" for e in errors)
    urls = "".join(f"\n  {u}" for u in spec.urls)
    searched = ", ".join(str(d) for d in weights_dirs())
    raise WeightsError(
        f"weights file {spec.filename!r} not found in {searched}."
        + (f"\nDownload failed:{tried}" if errors else "")
        + (f"\nDownload it from:{urls}" if spec.urls else "")
        + (f"\n{spec.how_to_get}" if spec.how_to_get else "")
        + f"\nThen put it at {path}, or pass weights=PATH (--weights PATH), "
        f"or set {ENV_DIR} to the folder that holds it."
    )


def declared_bytes(path: str | Path) -> int | None:
    """The uncompressed size the archive at ``path`` declares (sum over its members), or None
    when it is not a zip archive (torch's legacy format)."""
    try:
        with zipfile.ZipFile(path) as z:
            return sum(info.file_size for info in z.infolist())
    except zipfile.BadZipFile:
        return None
    except OSError as e:
        raise WeightsError(f"cannot read weights file {path}: {e}") from None


def load_state_dict(path: str | Path, max_bytes: int | None = None) -> dict[str, torch.Tensor]:
    """Load a state dict with ``weights_only=True``: no pickled code ever runs.

    ``max_bytes`` bounds what the archive may declare (default: its own size plus 64 MiB, as
    ``torch.save`` stores tensors uncompressed); a file over it is refused before loading.

    >>> sd = load_state_dict("weights/demo.pt")   # doctest: +SKIP
    """
    path = Path(path)
    declared = declared_bytes(path)
    budget = max_bytes if max_bytes is not None else path.stat().st_size + (64 << 20)
    if declared is not None and declared > budget:
        raise WeightsError(
            f"weights file {path} declares {declared:,} bytes of contents, more than the {budget:,} "
            "this model's weights can need; it is damaged or hostile and was not loaded"
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for a damaged archive
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WeightsError(f"cannot read weights file {path}: {first}") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"weights file {path} does not hold a state dict of tensors")
    return obj


def check_state_dict(state: dict, expected: dict[str, torch.Tensor], path: str | Path, model: str) -> None:
    """Raise :class:`WeightsError` unless ``state`` has exactly ``expected``'s keys and shapes."""
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise WeightsError(
            f"weights file {path} does not fit model {model!r}: "
            f"missing keys {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected keys {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
        )
    wrong = [(k, tuple(state[k].shape), tuple(v.shape)) for k, v in expected.items() if state[k].shape != v.shape]
    if wrong:
        k, got, want = wrong[0]
        raise WeightsError(f"weights file {path} does not fit model {model!r}: {k} has shape {got}, "
                           f"expected {want} ({len(wrong)} tensors differ)")
