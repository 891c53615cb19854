"""Statistics over training seeds: Student-t confidence intervals and paired differences.

A seed is one independently trained model (its own float model and data order); noise draws are nested
inside it and averaged first. Gaps are paired per seed (float and quantized model of the same seed), and
two methods are compared by the per-seed difference of their gaps.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from scipy import stats


@dataclass(frozen=True)
class Interval:
    """Mean of n values with a two-sided confidence interval (half-width nan when n < 2)."""

    mean: float
    half: float
    n: int
    sd: float
    confidence: float = 0.95

    @property
    def low(self) -> float:
        return self.mean - self.half

    @property
    def high(self) -> float:
        return self.mean + self.half

    @property
    def resolved(self) -> bool:
        """The interval excludes zero."""
        return self.n >= 2 and (self.low > 0 or self.high < 0)


def t_interval(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """Mean ± t_{(1+c)/2, n-1} * s / sqrt(n), s the sample std (ddof = 1)."""
    n = len(values)
    if n == 0:
        raise ValueError("t_interval needs at least one value")
    mean = math.fsum(values) / n
    if n < 2:
        return Interval(mean, math.nan, 1, math.nan, confidence)
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(stats.t.ppf((1 + confidence) / 2, n - 1)) * sd / math.sqrt(n)
    return Interval(mean, half, n, sd, confidence)


def paired_difference(a: Mapping[int, float], b: Mapping[int, float], confidence: float = 0.95) -> Interval:
    """a - b over the seeds both have (a paired t interval)."""
    common = sorted(set(a) & set(b))
    if not common:
        raise ValueError("no seed in common: the two sets of runs cannot be paired")
    return t_interval([a[s] - b[s] for s in common], confidence)


def seeds_needed(sd: float, half_width: float, confidence: float = 0.95, limit: int = 10_000) -> int | None:
    """Smallest n whose t interval of values with this sd is at most `half_width` wide on each side."""
    if not (sd > 0 and half_width > 0):
        return None
    for n in range(2, limit):
        if stats.t.ppf((1 + confidence) / 2, n - 1) * sd / math.sqrt(n) <= half_width:
            return n
    return None
