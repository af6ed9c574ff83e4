"""Means over seeds with a two-sided Student-t confidence interval, without scipy.

The interval of ``n`` values is ``mean ± t(1 - (1 - level) / 2, n - 1) * sd / sqrt(n)`` with the
sample standard deviation (``n - 1`` in the denominator). The t quantile is found by bisection on
the t distribution's CDF, itself the integral of its density (Simpson's rule), which agrees with
printed tables to four decimals.

>>> round(t_quantile(0.975, 2), 3)
4.303
>>> iv = mean_interval([1.0, 2.0, 3.0])
>>> round(iv.mean, 3), round(iv.low, 3), round(iv.high, 3)
(2.0, -0.484, 4.484)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import BadInputError


def _t_cdf(x: float, df: int) -> float:
    if x == 0:
        return 0.5
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    # Integrate in u = atan(t), where the density is smooth and bounded even for df = 1.
    u = np.linspace(0.0, math.atan(abs(x)), 4001)
    t = np.tan(u)
    f = np.exp(log_c - (df + 1) / 2 * np.log1p(t * t / df)) * (1 + t * t)
    h = u[1] - u[0]
    area = h / 3 * (f[0] + f[-1] + 4 * f[1:-1:2].sum() + 2 * f[2:-1:2].sum())
    return 0.5 + math.copysign(area, x)


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (0 < p < 1, df >= 1)."""
    if not 0 < p < 1 or df < 1:
        raise BadInputError(f"t_quantile needs 0 < p < 1 and df >= 1, got p={p}, df={df}")
    if p < 0.5:
        return -t_quantile(1 - p, df)
    lo, hi = 0.0, 1.0
    while _t_cdf(hi, df) < p:
        hi *= 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _t_cdf(mid, df) < p else (lo, mid)
    return (lo + hi) / 2


@dataclass
class Interval:
    """Mean of ``values`` and its two-sided t interval at ``level`` (NaN bounds for one value)."""

    mean: float
    low: float
    high: float
    values: list[float] = field(default_factory=list)
    level: float = 0.95

    def __str__(self) -> str:
        return format_interval(self)


def mean_interval(values: Sequence[float], level: float = 0.95) -> Interval:
    """Mean and t interval of ``values`` (NaNs are dropped; none left gives an all-NaN interval)."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if len(v) == 0:
        return Interval(float("nan"), float("nan"), float("nan"), [], level)
    mean = float(v.mean())
    if len(v) == 1:
        return Interval(mean, float("nan"), float("nan"), v.tolist(), level)
    half = t_quantile(1 - (1 - level) / 2, len(v) - 1) * float(v.std(ddof=1)) / math.sqrt(len(v))
    return Interval(mean, mean - half, mean + half, v.tolist(), level)


def format_interval(iv: Interval, digits: int = 3, percent: bool = False) -> str:
    """``0.512 ± 0.031`` (or ``51.2% ± 3.1%``); a lone value prints without the ±."""
    scale, unit = (100.0, "%") if percent else (1.0, "")
    d = 1 if percent else digits
    if not math.isfinite(iv.mean):
        return "-"
    if not math.isfinite(iv.low):
        return f"{iv.mean * scale:.{d}f}{unit}"
    return f"{iv.mean * scale:.{d}f}{unit} ± {(iv.high - iv.mean) * scale:.{d}f}{unit}"
