"""Process-level CPU settings that circuitsviz's own commands apply and a user may opt into.

Rendering on the CPU allocates and frees the same ~70 MB of activations and gradients every
step. glibc's malloc hands large freed blocks straight back to the kernel, so each step pays
again for page faults and for the kernel zeroing those pages: about 3x more page faults and
~1.8 s of system time per 32-step render of 8 units on the project's 2-core machine.
:func:`retain_freed_memory` tells malloc to keep them for reuse instead.

It changes how the whole process allocates (memory is returned to the OS later, not sooner),
so the library never calls it on its own: the ``circuitsviz`` command does, and so can you::

    import circuitsviz as cv
    cv.retain_freed_memory()   # once, at the start of a CPU-heavy script
"""

from __future__ import annotations

import ctypes
import sys

# mallopt(3) parameter numbers, from glibc's <malloc.h>.
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_MMAP_THRESHOLD_MAX = 32 << 20  # glibc refuses larger values on 64-bit systems


def retain_freed_memory(trim_threshold: int = 1 << 30, top_pad: int = 64 << 20) -> bool:
    """Make glibc's malloc keep freed blocks up to 32 MB (and up to ``trim_threshold`` bytes of
    free heap) for reuse. Returns True if applied, False where there is no glibc (macOS,
    Windows, musl), in which case nothing changes.

    >>> retain_freed_memory()          # doctest: +SKIP
    True
    """
    from .errors import check_int

    check_int("trim_threshold", trim_threshold, 0, 2**31 - 1)  # mallopt takes a C int
    check_int("top_pad", top_pad, 0, 2**31 - 1)
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    applied = [mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX), mallopt(_M_TRIM_THRESHOLD, trim_threshold),
               mallopt(_M_TOP_PAD, top_pad)]
    return all(r == 1 for r in applied)
