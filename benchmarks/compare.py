"""Compare a quantizer against others: the paired difference of their gaps, per seed, with a 95% CI.

    python -m benchmarks compare table3 --method uniform --against lloyd[,log2] [--scale proxy]

For every column where both methods ran (same arch, levels, layer policy, noise, init, options), the gap of
A and of B are paired by training seed (each seed: same float model and data order) and their difference
gets a Student-t interval. Writes Markdown and CSV next to the tables (tables/out/<scale>/); reads only
the store.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from benchmarks.stats import Interval, paired_difference, seeds_needed

# the fields that make two cells of different methods comparable
COLUMN_FIELDS = ("arch", "levels", "first_last", "noise_train", "noise_eval", "noise_eval_file", "init")
TARGET_PT = 0.5  # the resolution a verdict quotes the seeds for


@dataclass(frozen=True)
class Comparison:
    column: dict[str, object]
    method: str
    against: str
    metric: str
    diff: Interval  # gap(method) - gap(against), over the paired seeds

    def verdict(self) -> str:
        """One sentence a reader can quote: which gap is smaller, or that the data cannot tell."""
        d, a, b = self.diff, self.method, self.against
        if d.n < 2:
            return (
                f"{a} - {b}: {d.mean:+.2f} pt from one seed: no interval; run more seeds (--seeds 0,1,2,3,4) "
                "to tell them apart"
            )
        if d.resolved:
            word = "smaller" if d.mean < 0 else "larger"
            return (
                f"{a}'s gap is {word} than {b}'s by {abs(d.mean):.2f} pt (95% CI {_span(d)}), n={d.n} seeds"
            )
        need = seeds_needed(d.sd, TARGET_PT)
        if need is not None and need <= d.n:
            more = f"; a difference beyond ±{d.half:.2f} pt would have been detected"
        else:
            more = f"; about {need} seeds would resolve {TARGET_PT} pt" if need else ""
        return (
            f"no difference between {a} and {b} detectable at n={d.n} seeds: the CI spans "
            f"{d.low:.2f}..{d.high:.2f} pt{more}"
        )


def select(frame: pd.DataFrame, match: dict[str, object]) -> pd.DataFrame:
    """The records whose fields equal `match` (none when the records lack one of its fields)."""
    mask = pd.Series(True, index=frame.index)
    for key, value in match.items():
        if key not in frame:
            return frame.iloc[0:0]
        mask &= frame[key] == value
    return frame[mask]


def primary_metric(frame: pd.DataFrame) -> str:
    """The table's headline gap: top-1 for classification, else the first measured gap (mAP, mIoU)."""
    gaps = [c for c in frame.columns if c.startswith("gap_") and "_" not in c[4:]]  # not gap_ptq_*, *_std
    if "gap_top1" in gaps:
        return "gap_top1"
    if not gaps:
        raise ValueError("no gap metric in these records")
    return sorted(gaps)[0]


def _by_column(frame: pd.DataFrame, method: str, metric: str) -> dict[tuple, dict[int, float]]:
    """(column fields) -> {seed: gap} for one method."""
    rows = frame[(frame["method"] == method) & frame[metric].notna()]
    out: dict[tuple, dict[int, float]] = {}
    for _, row in rows.iterrows():
        key = tuple(row[f] for f in COLUMN_FIELDS) + tuple(
            (c, row[c]) for c in frame.columns if c.startswith("opt_") and pd.notna(row[c])
        )
        out.setdefault(key, {})[int(row["seed"])] = float(row[metric])
    return out


def compare(
    frame: pd.DataFrame, method: str, against: list[str], metric: str | None = None
) -> list[Comparison]:
    """Every column where `method` and a method of `against` both have records, paired by seed."""
    if method in against:
        raise ValueError(f"{method} compared with itself: drop it from --against")
    known = set(frame["method"]) if not frame.empty else set()
    missing = [m for m in (method, *against) if m not in known]
    if missing:
        raise ValueError(
            f"no records of {', '.join(missing)} in this table; run it first (make compare runs "
            "the missing cells)"
        )
    metric = metric or primary_metric(frame)
    mine = _by_column(frame, method, metric)
    out = []
    for other in against:
        theirs = _by_column(frame, other, metric)
        for key in sorted(set(mine) & set(theirs), key=str):
            if set(mine[key]) & set(theirs[key]):
                column = dict(zip(COLUMN_FIELDS, key[: len(COLUMN_FIELDS)], strict=True)) | dict(
                    key[len(COLUMN_FIELDS) :]
                )
                out.append(
                    Comparison(column, method, other, metric, paired_difference(mine[key], theirs[key]))
                )
    if not out:
        raise ValueError(f"{method} and {', '.join(against)} share no column with a common seed")
    return out


def describe(column: dict[str, object]) -> str:
    parts = [f"{column['arch']} {column['levels']}L", str(column["first_last"])]
    if column["noise_train"]:
        parts.append(f"NATS {float(column['noise_train']):.0%}")
    if column["noise_eval_file"]:
        parts.append(f"measured {Path(str(column['noise_eval_file'])).stem}")
    if column["init"] != "pretrained":
        parts.append(str(column["init"]))
    parts += [f"{k.removeprefix('opt_')}={v}" for k, v in column.items() if k.startswith("opt_")]
    return ", ".join(parts)


def to_frame(comparisons: list[Comparison]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "column": describe(c.column),
                "method": c.method,
                "against": c.against,
                "metric": c.metric,
                "diff_mean": round(c.diff.mean, 4),
                "ci95_low": _round(c.diff.low),
                "ci95_high": _round(c.diff.high),
                "n_seeds": c.diff.n,
                "verdict": c.verdict(),
            }
            for c in comparisons
        ]
    )


def _round(x: float) -> float | None:
    return None if math.isnan(x) else round(x, 4)


def to_markdown(table: str, scale: str, comparisons: list[Comparison]) -> str:
    c0 = comparisons[0]
    lines = [
        f"# {table} [{scale}]: {c0.method} vs {', '.join(sorted({c.against for c in comparisons}))}",
        "",
        f"Paired by training seed: difference of `{c0.metric}` (method minus baseline, percentage points; "
        "negative: the method loses less), mean and 95% Student-t CI over the seeds both ran.",
        "",
    ]
    lines += [f"- {describe(c.column)}: {c.verdict()}" for c in comparisons]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class PaperClaim:
    """A claim of the paper a table can test: selection `smaller`'s gap is below selection `larger`'s.

    Each selection (record fields -> value) must pick one cell per seed; the verdict is computed from the
    records, never typed by hand.
    """

    text: str
    smaller: dict[str, object]
    larger: dict[str, object]
    metric: str = "gap_top1"

    def verdict(self, frame: pd.DataFrame) -> str:
        def per_seed(match: dict[str, object]) -> dict[int, float]:
            rows = select(frame, match)
            if self.metric not in rows:
                return {}
            return rows.dropna(subset=[self.metric]).groupby("seed")[self.metric].mean().to_dict()

        a, b = per_seed(self.smaller), per_seed(self.larger)
        if not set(a) & set(b):
            return f"{self.text}: not measured at this scale"
        d = paired_difference(a, b)  # negative when the claim holds
        if d.n < 2:
            return (
                f"{self.text}: {'yes' if d.mean < 0 else 'no'} in one seed (gap difference {d.mean:+.2f} pt)"
            )
        if not d.resolved:
            return (
                f"{self.text}: no detectable difference (gap difference {d.mean:+.2f} pt, "
                f"95% CI {d.low:+.2f}..{d.high:+.2f}, n={d.n} seeds)"
            )
        word = "yes" if d.mean < 0 else "no, the opposite"
        return f"{self.text}: {word}, by {abs(d.mean):.2f} pt ({_span(d)}, n={d.n} seeds)"


def _span(d: Interval) -> str:
    """A resolved interval as magnitudes, nearer bound first (e.g. -2.17..-0.52 -> "0.52-2.17")."""
    near, far = sorted((abs(d.low), abs(d.high)))
    return f"{near:.2f}-{far:.2f}"
