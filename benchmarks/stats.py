"""Statistics over training seeds: t intervals, paired tests, TOST, Holm, power, and the four verdicts.

A seed is one independently trained model (its own float model and data order); noise draws are nested
inside it and averaged first (`per_seed`). Gaps are paired per seed (float and quantized model of the same
seed), and two methods are compared by the per-seed difference of their gaps. Every printed comparison of
the suite (tables' claims, `compare`, drift) comes from `verdicts` here:

- better / worse: the paired two-sided t test rejects "no difference" at 5% after Holm's step-down
  adjustment over the family (a table's claims, a `compare` run's columns);
- equivalent within ±m: both one-sided tests of TOST (Schuirmann 1987) reject |difference| >= m at 5%,
  Holm-adjusted over the same family; m is stated in every output;
- inconclusive: neither; with the power the difference test had at ±m and the seeds it would need for 80%.
One seed gives a number and no verdict; zero variance over seeds is flagged, never "resolved".

Adaptive seeds (`two_stage_seeds`, `paired_test(first_stage=...)`): Stein's (1945) two-stage test. The SD of
the first stage's seeds alone fixes how many seeds a comparison gets, and the test divides the mean over all
of them by that SD with the first stage's degrees of freedom. For normal per-seed differences the sample
covariance is independent of the means, so the t distribution (and every error rate above) is exact whatever
the second-stage n. Adding seeds where a claim looks inconclusive, and retesting with the pooled SD, is not:
its type-I error exceeds alpha (tests/test_stats.py simulates both).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

from scipy import stats

from benchmarks.metrics import MetricName

if TYPE_CHECKING:
    import pandas as pd

ALPHA = 0.05
MARGIN = 0.5  # percentage points of top-1 / top-5: the default equivalence margin
#: metrics whose scale differs get their own default margin (box mAP and mIoU of Tables 4-5 move about
#: twice as much from seed to seed as CIFAR/ImageNet top-1, and the paper reads them to 1 pt)
MARGINS = {"mAP": 1.0, "mIoU": 1.0, "pAcc": 1.0}
POWER_TARGET = 0.8


def margin_for(metric: str) -> float:
    """The default equivalence margin of any metric of a base (`gap_mAP`, `fp_mAP` -> the mAP margin)."""
    return MARGINS.get(MetricName.parse(metric).base, MARGIN)


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
        """The interval excludes zero and has a spread (zero variance is never resolved)."""
        return self.n >= 2 and self.sd > 0 and (self.low > 0 or self.high < 0)


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


def per_seed(frame: pd.DataFrame, metric: str, what: str = "selection") -> dict[int, float]:
    """{seed: metric} of a selection that must hold one cell per seed (noise draws are already averaged in a
    record). Two cells, or two records of one cell, at one seed are an error naming them: averaging them
    silently would mix conditions (or count one seed twice)."""
    if metric not in frame:
        return {}
    rows = frame.dropna(subset=[metric])
    out: dict[int, float] = {}
    for seed, group in rows.groupby("seed"):
        if len(group) > 1:
            cells = ", ".join(sorted(map(str, group["cell"])))
            raise ValueError(
                f"{what} matches {len(group)} records at seed {seed} ({cells}): it must pick one cell per "
                "seed (add the field that tells them apart to the selection, or delete the duplicate record)"
            )
        out[int(seed)] = float(group[metric].iloc[0])
    return out


def paired_difference(a: Mapping[int, float], b: Mapping[int, float], confidence: float = 0.95) -> Interval:
    """a - b over the seeds both have (a paired t interval)."""
    common = sorted(set(a) & set(b))
    if not common:
        raise ValueError("no seed in common: the two sets of runs cannot be paired")
    return t_interval([a[s] - b[s] for s in common], confidence)


@dataclass(frozen=True)
class PairedTest:
    """a - b per seed over the seeds both arms have, with the seeds only one arm has (named, not used)."""

    diff: Interval
    margin: float
    only_a: tuple[int, ...] = ()
    only_b: tuple[int, ...] = ()
    # Stein two-stage: the first stage's seed count; diff.sd is that stage's SD and diff.half uses its df
    first_stage: int | None = None

    @property
    def testable(self) -> bool:
        return self.diff.n >= 2 and self.diff.sd > 0

    @property
    def df(self) -> int:
        """Degrees of freedom of the test: n - 1, or the first stage's n - 1 (Stein)."""
        return (self.first_stage or self.diff.n) - 1

    @cached_property
    def p_diff(self) -> float:
        """Two-sided p of the paired t test of "no difference" (nan when untestable)."""
        if not self.testable:
            return math.nan
        d = self.diff
        t = d.mean / (d.sd / math.sqrt(d.n))
        return float(2 * stats.t.sf(abs(t), self.df))

    @cached_property
    def p_equiv(self) -> float:
        """TOST p: the larger of the one-sided p's of "difference <= -m" and "difference >= m"."""
        if not self.testable:
            return math.nan
        d = self.diff
        se = d.sd / math.sqrt(d.n)
        lower = stats.t.sf((d.mean + self.margin) / se, self.df)
        upper = stats.t.cdf((d.mean - self.margin) / se, self.df)
        return float(max(lower, upper))


def paired_test(
    a: Mapping[int, float],
    b: Mapping[int, float],
    margin: float = MARGIN,
    first_stage: Sequence[int] | None = None,
) -> PairedTest:
    """a - b over the seeds both arms have. With `first_stage` (the seeds of a two-stage design's first
    stage) and seeds beyond them, Stein's test: the mean over every common seed, the SD and degrees of
    freedom of the first-stage seeds only."""
    if not margin > 0:
        raise ValueError(f"the equivalence margin must be > 0, got {margin}")
    only = tuple(sorted(set(a) - set(b))), tuple(sorted(set(b) - set(a)))
    diff = paired_difference(a, b)
    first = sorted(set(first_stage or ()) & set(a) & set(b))
    if first_stage is None or diff.n == len(first):
        return PairedTest(diff, margin, *only)
    if len(first) < 2:
        raise ValueError(f"a two-stage test needs 2+ first-stage seeds in both arms, got {first}")
    sd0 = t_interval([a[s] - b[s] for s in first]).sd
    half = float(stats.t.ppf(0.975, len(first) - 1)) * sd0 / math.sqrt(diff.n)
    return PairedTest(Interval(diff.mean, half, diff.n, sd0), margin, *only, first_stage=len(first))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's (1979) step-down adjusted p-values; nan (an untestable comparison) stays nan and is not
    counted in the family."""
    finite = sorted((p, i) for i, p in enumerate(pvalues) if not math.isnan(p))
    m = len(finite)
    out = [math.nan] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(finite):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


def power(sd: float, n: int, margin: float, alpha: float = ALPHA, df: int | None = None) -> float:
    """Power of the two-sided paired t test at level alpha to detect a true difference of ±margin, for
    per-seed differences with this sd (noncentral t with ncp = margin * sqrt(n) / sd; `df` n - 1 unless
    given: a two-stage test keeps its first stage's)."""
    if n < 2 or not sd > 0:
        return math.nan
    df, ncp = (n - 1 if df is None else df), margin * math.sqrt(n) / sd
    crit = stats.t.isf(alpha / 2, df)
    upper, lower = float(stats.nct.sf(crit, df, ncp)), float(stats.nct.cdf(-crit, df, ncp))
    # scipy's noncentral t returns nan for some far tails (df 2, ncp ~9): the wrong-sign tail is then at
    # most the central one (alpha / 2) and is dropped, which can only understate the power
    return (upper if math.isfinite(upper) else 1.0 - float(stats.nct.cdf(crit, df, ncp))) + (
        lower if math.isfinite(lower) else 0.0
    )


def seeds_for_power(
    sd: float,
    margin: float,
    alpha: float = ALPHA,
    target: float = POWER_TARGET,
    limit: int = 1000,
    df: int | None = None,
) -> int | None:
    """Smallest n at which the paired t test has `target` power at ±margin (None: no spread, or > limit);
    `df` fixed for a two-stage test (its first stage's)."""
    if not (sd > 0 and margin > 0):
        return None
    for n in range(2, limit):
        if power(sd, n, margin, alpha, df) >= target:
            return n
    return None


def two_stage_seeds(
    first: Sequence[float], margin: float, alpha: float = ALPHA, cap: int = 10, target: float = POWER_TARGET
) -> int:
    """Stein's second-stage size: the seeds (first stage included, at most `cap`) at which the two-stage
    test, whose df are the first stage's, reaches `target` power at ±margin for the first stage's SD. A
    function of that SD alone, never of the mean: that is what keeps the test exact."""
    n0 = len(first)
    if n0 < 2:
        raise ValueError(f"a two-stage design needs 2+ first-stage seeds, got {n0}")
    if cap < n0:
        raise ValueError(f"the seed cap {cap} is below the first stage's {n0} seeds")
    need = seeds_for_power(t_interval(first).sd, margin, alpha, target, limit=cap + 1, df=n0 - 1)
    return max(n0, min(cap, need or cap))  # None: no seed count up to the cap reaches the target


@dataclass(frozen=True)
class Family:
    """How a set of comparisons was corrected: its size (testable comparisons) and the adjustment."""

    size: int
    adjusted: bool
    margin: float
    alpha: float = ALPHA
    lower_is_better: bool = True  # a gap: lower is better; an accuracy: higher

    @property
    def power_alpha(self) -> float:
        """The level each test is held to at worst: alpha / size under Holm (its first step)."""
        return self.alpha / max(self.size, 1) if self.adjusted else self.alpha

    def describe(self, unit: str = "pt") -> str:
        how = "Holm-adjusted" if self.adjusted else "NOT adjusted for multiplicity (--no-adjust)"
        return (
            f"family of {self.size} test{'s' if self.size != 1 else ''}, {how}, at {self.alpha:.0%}; "
            f"equivalence margin ±{self.margin:g} {unit} (TOST); power at ±{self.margin:g} {unit} for the "
            f"difference test at alpha {self.power_alpha:.3g}"
        )


@dataclass(frozen=True)
class Verdict:
    """One comparison's outcome inside its family: better, worse, equivalent, inconclusive (or no verdict:
    one seed, zero variance)."""

    test: PairedTest
    family: Family
    p_diff: float  # adjusted as the family says
    p_equiv: float
    kind: str = field(init=False)

    def __post_init__(self) -> None:
        d, a = self.test.diff, self.family.alpha
        if d.n < 2:
            kind = "one seed"
        elif not d.sd > 0:
            kind = "zero variance"
        elif self.p_diff < a:
            kind = "a better" if (d.mean < 0) == self.family.lower_is_better else "b better"
        elif self.p_equiv < a:
            kind = "equivalent"
        else:
            kind = "inconclusive"
        object.__setattr__(self, "kind", kind)

    @cached_property
    def power(self) -> float:
        t = self.test
        return power(t.diff.sd, t.diff.n, t.margin, self.family.power_alpha, t.df)

    @cached_property
    def seeds_80(self) -> int | None:
        t = self.test
        return seeds_for_power(
            t.diff.sd, t.margin, self.family.power_alpha, df=t.df if t.first_stage else None
        )

    def sentence(self, a: str, b: str, unit: str = "pt") -> str:
        """One quotable sentence about a - b (the family says whether lower is better)."""
        d, m, fam = self.test.diff, self.test.margin, self.family
        n = f"n={d.n} seed{'s' if d.n != 1 else ''}"
        if self.test.first_stage:
            n += f", SD of the first {self.test.first_stage} (Stein two-stage)"
        padj = "Holm p" if fam.adjusted else "p"
        if self.kind == "one seed":
            text = f"{d.mean:+.2f} {unit} ({a} - {b}) in one seed: a number, not a verdict (run 3+ seeds)"
        elif self.kind == "zero variance":
            if d.mean == 0:
                text = (
                    f"identical in all {n} (zero variance): the two arms compute the same numbers, equal by "
                    "construction, not a finding"
                )
            else:
                text = (
                    f"{d.mean:+.2f} {unit} in every one of {d.n} seeds (zero variance): flagged, no interval "
                    "and no verdict (check that the two cells differ only as intended)"
                )
        elif self.kind in ("a better", "b better"):
            winner, loser = (a, b) if self.kind == "a better" else (b, a)
            near, far = sorted((abs(d.low), abs(d.high)))
            text = (
                f"{winner} better than {loser} by {abs(d.mean):.2f} {unit} (95% CI {near:.2f}-{far:.2f}, "
                f"{padj}={self.p_diff:.3g}, {n})"
            )
            if self.p_equiv < fam.alpha:
                text += f"; the difference is within ±{m:g} {unit} (TOST)"
        elif self.kind == "equivalent":
            lo, hi = _tost_interval(d, self.test.df)
            text = (
                f"equivalent within ±{m:g} {unit} (TOST at {fam.alpha:.0%}, {padj}={self.p_equiv:.3g}; "
                f"difference {d.mean:+.2f}, 90% CI {lo:+.2f}..{hi:+.2f}, {n})"
            )
        else:
            need = self.seeds_80
            more = f"about {need} seeds for 80%" if need else "no seed count reaches 80%"
            if self.test.first_stage:  # the design is closed: its second stage was the last
                more = f"the two-stage design has no third stage; at this SD {more}"
            text = (
                f"inconclusive: {d.mean:+.2f} {unit} (95% CI {d.low:+.2f}..{d.high:+.2f}, {n}); power "
                f"{self.power:.2f} at ±{m:g} {unit}, {more} ({padj}={self.p_diff:.3g} for a difference, "
                f"{self.p_equiv:.3g} for equivalence)"
            )
        if self.kind in ("a better", "b better", "equivalent") and self.power < POWER_TARGET:
            text += f" [low power: {self.power:.2f} at ±{m:g} {unit}]"
        if self.test.only_a or self.test.only_b:
            left = [f"{a} only: {_seeds(self.test.only_a)}"] * bool(self.test.only_a)
            left += [f"{b} only: {_seeds(self.test.only_b)}"] * bool(self.test.only_b)
            text += f" (seeds left out, not in both arms: {'; '.join(left)})"
        return text


def verdicts(
    tests: Sequence[PairedTest], adjust: bool = True, alpha: float = ALPHA, lower_is_better: bool = True
) -> list[Verdict]:
    """The verdicts of one family: Holm over its testable comparisons unless `adjust` is False."""
    margins = {t.margin for t in tests}
    if len(margins) > 1:
        raise ValueError(f"one family, one margin: got {sorted(margins)}")
    p_diff = [t.p_diff for t in tests]
    p_equiv = [t.p_equiv for t in tests]
    if adjust:
        p_diff, p_equiv = holm(p_diff), holm(p_equiv)
    size = sum(t.testable for t in tests)
    family = Family(size, adjust, margins.pop() if margins else MARGIN, alpha, lower_is_better)
    return [Verdict(t, family, pd, pe) for t, pd, pe in zip(tests, p_diff, p_equiv, strict=True)]


def _tost_interval(d: Interval, df: int) -> tuple[float, float]:
    """The 90% interval whose inclusion in (-m, m) is TOST at 5%."""
    half = float(stats.t.ppf(0.95, df)) * d.sd / math.sqrt(d.n)
    return d.mean - half, d.mean + half


def _seeds(seeds: tuple[int, ...]) -> str:
    return ",".join(map(str, seeds))
