"""Errors that name the bad value and the valid choices.

Every error a user can trigger with bad input derives from :class:`CircuitsvizError`,
so the CLI can print it as one clean line instead of a stack trace.
"""

from __future__ import annotations

import difflib
import math
import numbers
import os
import re
from collections.abc import Iterable


class CircuitsvizError(Exception):
    """Base class for every user-facing error in circuitsviz."""


class UnknownNameError(CircuitsvizError, KeyError):
    """A name (model, layer, page, ...) that is not among the valid ones."""

    def __init__(self, kind: str, name: str, valid: Iterable[str], limit: int = 40):
        valid = list(valid)
        self.kind, self.name, self.valid = kind, name, valid
        close = difflib.get_close_matches(str(name), valid, n=3, cutoff=0.5)
        msg = f"unknown {kind} {name!r}."
        if close:
            msg += f" Did you mean {', '.join(repr(c) for c in close)}?"
        shown = ", ".join(valid[:limit]) + (f", ... ({len(valid)} in all)" if len(valid) > limit else "")
        msg += f" Valid {kind}s: {shown}"
        super().__init__(msg)

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return self.args[0]


class ChannelOutOfRangeError(CircuitsvizError, IndexError):
    def __init__(self, layer: str, channel: int, channels: int):
        super().__init__(
            f"channel {channel} is out of range for layer {layer!r}, which has {channels} "
            f"channels (valid: 0..{channels - 1})"
        )


class BadInputError(CircuitsvizError, ValueError):
    """Input with the wrong shape, range, type or value."""


class WeightsError(CircuitsvizError, RuntimeError):
    """Weights that are missing, truncated, or fail their hash check."""


# ------------------------------------------------------------------ argument checks
# Public API functions call these first, so a bad value fails at once with its name and the
# valid range, never as a traceback, a hang or a silent fallback deep inside.

def check_int(name: str, value, lo: int | None = None, hi: int | None = None, *, optional: bool = False) -> int | None:
    """``value`` as an int in ``[lo, hi]`` (``None`` allowed when ``optional``).

    >>> check_int("batch_size", 32, 1)
    32
    """
    if value is None and optional:
        return None
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if ok and (lo is None or value >= lo) and (hi is None or value <= hi):
        return int(value)
    raise BadInputError(f"{name} must be an integer {_range(lo, hi)}, got {value!r}")


def check_float(name: str, value, lo: float | None = None, hi: float | None = None, *,
                lo_open: bool = False, optional: bool = False) -> float | None:
    """``value`` as a finite float in ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``).

    >>> check_float("lr", 1e-3, 0, lo_open=True)
    0.001
    """
    if value is None and optional:
        return None
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok and (lo is None or (value > lo if lo_open else value >= lo)) and (hi is None or value <= hi):
        return float(value)
    where = _range(lo, hi, lo_open)
    raise BadInputError(f"{name} must be a finite number {where}, got {value!r}")


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_name(name: str, value) -> str:
    """A name that is safe as one path component and in a unit id: letters, digits, ``. _ -``.

    >>> check_name("name", "topk32x8")
    'topk32x8'
    """
    if isinstance(value, str) and _NAME.fullmatch(value) and value not in (".", ".."):
        return value
    raise BadInputError(f"{name} {value!r} is not a valid name: use 1-128 letters, digits, '.', '_' or '-', "
                        "starting with a letter or digit (no spaces or path separators)")


def _range(lo, hi, lo_open: bool = False) -> str:
    if lo is not None and hi is not None:
        return f"in {'(' if lo_open else '['}{lo}, {hi}]"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {lo}"
    return f"<= {hi}" if hi is not None else ""


class DamagedRunError(CircuitsvizError, RuntimeError):
    """A run directory whose index is missing, empty, truncated or not a circuitsviz index."""


def check_path(name: str, value, *, optional: bool = False):
    """A file-system path (str or ``os.PathLike``), not empty, without NUL bytes.

    >>> check_path("out", "runs/demo")
    'runs/demo'
    """
    if value is None and optional:
        return None
    if isinstance(value, (str, os.PathLike)) and str(value) and "\x00" not in str(value):
        return value
    raise BadInputError(f"{name} must be a path, got {value!r:.80}")


def check_list(name: str, value, item: type, *, optional: bool = False) -> list | None:
    """A list or tuple whose items are all ``item`` (ints exclude bools).

    >>> check_list("channels", [1, 2], int)
    [1, 2]
    """
    if value is None and optional:
        return None
    if isinstance(value, (list, tuple)) and all(isinstance(v, item) and not isinstance(v, bool) for v in value):
        return list(value)
    raise BadInputError(f"{name} must be a list of {item.__name__}, got {value!r:.80}")
