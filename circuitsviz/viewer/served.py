"""Which runs a viewer serves: one run directory, or the runs directly under one root folder.

The URL's ``run`` parameter only *selects* among these by name; it is never joined onto a path,
so a link such as ``?run=/etc`` or ``?run=../x`` names nothing and opens nothing.

>>> served = Served.at("runs")                          # doctest: +SKIP
>>> served.names                                        # doctest: +SKIP
['cat', 'demo']
>>> served.resolve("demo")                              # doctest: +SKIP
PosixPath('/home/me/runs/demo')
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import BadInputError, UnknownNameError

INDEX_NAME = "index.sqlite"
ENV = "CIRCUITSVIZ_RUN"


def is_run(path: Path) -> bool:
    return (path / INDEX_NAME).is_file()


@dataclass(frozen=True)
class Served:
    """``root`` is a run (``single``) or a folder whose direct subfolders are runs."""

    root: Path
    single: bool

    @classmethod
    def at(cls, path: str | Path) -> "Served":
        """What ``circuitsviz serve PATH`` serves; a path that is neither a run nor holds runs is refused."""
        root = Path(path).expanduser().resolve()
        if is_run(root):
            return cls(root, True)
        if root.is_dir() and any(is_run(p) for p in root.iterdir() if p.is_dir()):
            return cls(root, False)
        raise BadInputError(f"no circuitsviz run at {str(path)!r}, and no runs directly under it; "
                            "serve a run directory (made by `circuitsviz study`) or a folder of them")

    @property
    def names(self) -> list[str]:
        """The names the URL may select: the run's own name, or the runs under the root."""
        if self.single:
            return [self.root.name]
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and is_run(p))

    def resolve(self, name: str | None) -> Path:
        """The run directory for a URL's ``run`` value (``None``: the only or first run)."""
        names = self.names
        if not names:
            raise BadInputError(f"no runs under {self.root} any more")
        if name is None or name == "":
            return self.root if self.single else self.root / names[0]
        if name not in names:  # a lookup in the listing, never a join: no path escapes the root
            raise UnknownNameError("run", name, names)
        return self.root if self.single else self.root / name


def launch_path(argv: list[str] | None = None) -> str | None:
    """The path given at launch: ``streamlit run <app> -- PATH`` or ``$CIRCUITSVIZ_RUN``."""
    argv = sys.argv if argv is None else argv
    if Path(argv[0]).name in ("viewer.py", "app.py") and len(argv) > 1:
        return argv[1]
    return os.environ.get(ENV)
