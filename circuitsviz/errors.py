"""Errors that name the bad value and the valid choices.

Every error a user can trigger with bad input derives from :class:`CircuitsvizError`,
so the CLI can print it as one clean line instead of a stack trace.
"""

from __future__ import annotations

import difflib
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
