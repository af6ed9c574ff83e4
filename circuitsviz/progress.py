"""The one progress bar: what it counts, how many, and an estimate of the time left for the whole job.

>>> bar = progress_bar(100, desc="mining", unit="img", enabled=False)
>>> bar.update(10); bar.close()
"""

from __future__ import annotations

import sys


def progress_bar(total: int, *, desc: str, unit: str, initial: int = 0, enabled: bool = True):
    """A tqdm bar over ``total`` ``unit`` s (starting at ``initial`` when resuming); ``enabled=False``
    gives one that shows nothing, so callers need no branches."""
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=not enabled, smoothing=0.1)


def progress_note(text: str, *, enabled: bool = True) -> None:
    """One line of progress output (where a job keeps its files, ...), on stderr beside the bars
    and without breaking one that is drawing; nothing when ``enabled`` is False."""
    if enabled:
        from tqdm.auto import tqdm

        tqdm.write(text, file=sys.stderr)
