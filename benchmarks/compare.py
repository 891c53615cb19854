"""Compare a quantizer against others: the paired difference of their gaps, per seed, as a verdict.

    python -m benchmarks compare table3 --method uniform --against lloyd[,log2] [--scale proxy]
        [--margin 0.5] [--no-adjust]

For every column where both methods ran (same arch, levels, layer policy, noise, init, options), the gap of
A and of B are paired by training seed (each seed: same float model and data order). The run's columns are
one family: each gets one of the four verdicts of `benchmarks.stats` (better, worse, equivalent within
±margin, inconclusive with its power), Holm-adjusted over the family. Writes Markdown and CSV next to the
tables (tables/out/<scale>/); reads only the store.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from benchmarks.metrics import MetricName, gap_of
from benchmarks.results import CELL_COLUMNS, SWEEP_COLUMNS
from benchmarks.stats import Interval, PairedTest, Verdict, margin_for, paired_test, per_seed, verdicts

if TYPE_CHECKING:
    from benchmarks.two_stage import Design

#: What a selection may name: a record's cell columns, and a sweep point's (`load_sweeps`).
SELECTABLE = (*CELL_COLUMNS, *SWEEP_COLUMNS)


def _methods(frame: pd.DataFrame) -> list[str]:
    """Registered quantizers, the control arm, and any method with records (a plugin's, not loaded here)."""
    from benchmarks.experiments import CONTROL
    from cacim_core import quantizers

    stored = set(frame["method"].dropna()) if "method" in frame else set()
    return sorted({*quantizers.names(), CONTROL, *stored})


# the fields that make two cells of different methods comparable
COLUMN_FIELDS = ("arch", "levels", "first_last", "noise_train", "noise_eval", "noise_eval_file", "init")


@dataclass(frozen=True)
class Comparison:
    column: dict[str, object]
    method: str
    against: str
    metric: str
    result: Verdict  # gap(method) - gap(against), over the paired seeds, inside its family

    @property
    def diff(self) -> Interval:
        return self.result.test.diff

    def verdict(self) -> str:
        """One sentence a reader can quote (a gap: the smaller is better)."""
        return self.result.sentence(self.method, self.against)


def select(frame: pd.DataFrame, match: dict[str, object]) -> pd.DataFrame:
    """The records whose fields equal `match`. A field no record can have (a misspelt one in a table spec),
    or a method neither registered nor stored, is an error naming the known ones, never a silent "not run"
    row; a known field or an option (`opt_*`) the records lack (empty store, older records) selects none."""
    unknown = [k for k in match if k not in frame and k not in SELECTABLE and not k.startswith("opt_")]
    if unknown:
        raise ValueError(
            f"unknown field(s) {', '.join(map(repr, unknown))} in selection {match}; known: "
            f"{', '.join(SELECTABLE)} and opt_<option>"
        )
    if "method" in match and match["method"] not in (known := _methods(frame)):
        method = match["method"]
        raise ValueError(f"unknown method {method!r} in selection {match}; known: {', '.join(known)}")
    mask = pd.Series(True, index=frame.index)
    for key, value in match.items():
        if key not in frame:
            return frame.iloc[0:0]
        mask &= frame[key] == value
    return frame[mask]


def primary_metric(frame: pd.DataFrame) -> str:
    """The table's headline gap: top-1 for classification, else the first measured gap (mAP, mIoU)."""
    gaps = [m for m in metrics(frame) if MetricName.parse(m).headline]  # not gap_ptq_*, gap_vs_control_*
    if (top1 := gap_of("top1")) in gaps:
        return top1
    if not gaps:
        raise ValueError("no gap metric in these records")
    return sorted(gaps)[0]


def metrics(frame: pd.DataFrame) -> list[str]:
    """The records' metric names (each has its `_std` and `_n` columns; cell fields such as seed do not)."""
    return sorted(c for c in frame.columns if f"{c}_std" in frame and f"{c}_n" in frame)


def check_experiment(experiment: str, scale: str, root: str | Path) -> None:
    """A table to compare must be registered or have records in the store (a plugin's, compare has no
    --plugin); else one line listing both."""
    from benchmarks.experiments import EXPERIMENTS, cells

    stored = sorted(p.name for p in Path(root).glob("*") if p.is_dir() and p.name[0] not in "._")
    if experiment in stored:
        return
    try:
        cells(experiment, scale)
    except KeyError:
        known = sorted(set(EXPERIMENTS.names()) | set(stored))
        raise ValueError(
            f"unknown table/experiment {experiment!r}: neither registered nor in {root}; known: "
            f"{', '.join(known)}"
        ) from None


def _by_column(frame: pd.DataFrame, method: str, metric: str) -> dict[tuple, dict[int, float]]:
    """(column fields) -> {seed: gap} for one method (one cell per column and seed, else an error)."""
    rows = frame[(frame["method"] == method) & frame[metric].notna()]
    options = [c for c in frame.columns if c.startswith("opt_")]
    index: dict[tuple, list] = {}
    for i, row in rows.iterrows():
        key = tuple(row[f] for f in COLUMN_FIELDS) + tuple((c, row[c]) for c in options if pd.notna(row[c]))
        index.setdefault(key, []).append(i)
    return {key: per_seed(rows.loc[at], metric, f"{method} in column {key}") for key, at in index.items()}


def compare(
    frame: pd.DataFrame,
    method: str,
    against: list[str],
    metric: str | None = None,
    margin: float | None = None,
    adjust: bool = True,
) -> list[Comparison]:
    """Every column where `method` and a method of `against` both have records, paired by seed: one family
    (margin: the metric's default, `stats.margin_for`, unless given)."""
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
    measured = metrics(frame)
    if metric not in measured:
        raise ValueError(
            f"--metric {metric}: not measured in these records; the store has: {', '.join(measured)}"
        )
    margin = margin_for(metric) if margin is None else margin
    mine = _by_column(frame, method, metric)
    pairs: list[tuple[dict[str, object], str, PairedTest]] = []
    for other in against:
        theirs = _by_column(frame, other, metric)
        for key in sorted(set(mine) & set(theirs), key=str):
            if set(mine[key]) & set(theirs[key]):
                column = dict(zip(COLUMN_FIELDS, key[: len(COLUMN_FIELDS)], strict=True)) | dict(
                    key[len(COLUMN_FIELDS) :]
                )
                pairs.append((column, other, paired_test(mine[key], theirs[key], margin)))
    if not pairs:
        raise ValueError(f"{method} and {', '.join(against)} share no column with a common seed")
    results = verdicts([t for _, _, t in pairs], adjust)
    return [Comparison(c, method, o, metric, v) for (c, o, _), v in zip(pairs, results, strict=True)]


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
                "kind": c.result.kind,
                "p_diff_adjusted": _round(c.result.p_diff),
                "p_equiv_adjusted": _round(c.result.p_equiv),
                "power_at_margin": _round(c.result.power),
                "seeds_for_80": c.result.seeds_80 or "",
                "margin": c.result.test.margin,
                "adjustment": "holm" if c.result.family.adjusted else "none",
                "family_size": c.result.family.size,
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
        f"Verdicts: {c0.result.family.describe()}. Better/worse: the paired t test rejects no difference; "
        "equivalent: TOST rejects a difference beyond the margin; inconclusive: neither.",
        "",
    ]
    lines += [f"- {describe(c.column)}: {c.verdict()}" for c in comparisons]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class PaperClaim:
    """A claim of the paper a table can test: selection `smaller`'s gap is below selection `larger`'s.

    Each selection (record fields -> value) must pick one cell per seed; the verdict is computed from the
    records, never typed by hand. `construction` names a claim that holds or fails by construction (e.g.
    two methods that fit the same grid): it is stated with its reason, never tested as a finding.
    """

    text: str
    smaller: dict[str, object]
    larger: dict[str, object]
    metric: str = gap_of("top1")
    construction: str = ""

    def arms(self, frame: pd.DataFrame) -> tuple[dict[int, float], dict[int, float]]:
        """{seed: metric} of each arm (empty where the store has none)."""
        return (
            per_seed(select(frame, self.smaller), self.metric, f"claim {self.text!r}, first arm"),
            per_seed(select(frame, self.larger), self.metric, f"claim {self.text!r}, second arm"),
        )


def claim_verdicts(
    claims: tuple[PaperClaim, ...],
    frame: pd.DataFrame,
    margin: float,
    adjust: bool = True,
    design: Design | None = None,
) -> dict[str, Verdict | str]:
    """claim text -> its verdict inside the family of the tested claims, or why it is not tested (by
    construction; not measured at this scale). One Holm family: a table's claims. With a registered
    two-stage `design`, each claim is tested on its registered seeds (by Stein's test under its rule)."""
    tested: list[tuple[PaperClaim, PairedTest]] = []
    out: dict[str, Verdict | str] = {}
    for claim in claims:
        a, b = claim.arms(frame)
        if design is not None and claim.text in design.seeds:
            want = design.seeds_of(claim.text)
            missing = sorted(set(want) - (set(a) & set(b)))
            if missing:
                out[claim.text] = (
                    f"two-stage design, not tested yet: seeds {', '.join(map(str, missing))} of its "
                    f"{len(want)} are not measured (rerun with --two-stage {design.cap})"
                )
                continue
            a, b = {s: a[s] for s in want}, {s: b[s] for s in want}
            first = design.first_stage if design.stein else None
            tested.append((claim, paired_test(a, b, margin, first_stage=first)))
            continue
        if claim.construction:
            out[claim.text] = f"by construction, not tested: {claim.construction}"
        elif not set(a) & set(b):
            out[claim.text] = "not measured at this scale"
        else:
            tested.append((claim, paired_test(a, b, margin)))
    results = verdicts([t for _, t in tested], adjust)
    out |= {claim.text: v for (claim, _), v in zip(tested, results, strict=True)}
    return {c.text: out[c.text] for c in claims}


#: how a claim "A < B" reads each verdict kind of the difference A - B
ANSWER = {"a better": "yes", "b better": "no, the opposite", "equivalent": "no"}


def claim_lines(
    claims: tuple[PaperClaim, ...],
    frame: pd.DataFrame,
    margin: float,
    adjust: bool = True,
    unit: str = "pt",
    design: Design | None = None,
) -> list[str]:
    """The claims of one table as one Holm family: a line per claim, then the family's description.

    Claims that hold by construction, and claims without records at this scale, are not in the family.
    """
    found = claim_verdicts(claims, frame, margin, adjust, design)
    out = []
    for claim in claims:
        v = found[claim.text]
        if isinstance(v, str):
            out.append(f"Claim: {claim.text}: {v}")
        else:
            word = f"{ANSWER[v.kind]} — " if v.kind in ANSWER else ""
            line = f"Claim: {claim.text}: {word}{v.sentence(*_names(claim), unit)}"
            if design is not None and claim.text in design.seeds:
                line += f" [two-stage: {design.stop_reason(claim.text, unit)}]"
            out.append(line)
    family = next((v.family for v in found.values() if not isinstance(v, str)), None)
    if family is not None:
        out.append(
            f"Claims: {family.describe(unit)}; a claim's two arms are paired by training seed "
            "(difference of the first arm's gap minus the second's)."
        )
    if design is not None and design.stein:
        out.append(
            f"Seeds: a registered two-stage design (Stein): first stage seeds "
            f"{', '.join(map(str, design.first_stage))}, then each claim the seeds its first-stage SD calls "
            f"for (80% power at ±{design.margin:g} {unit} at level {design.alpha:.3g}, at most "
            f"{design.cap}); the test uses the first stage's SD and degrees of freedom, exact whatever n "
            "it chose."
        )
    elif design is not None:
        out.append(
            f"Seeds: a registered fixed second stage: first stage seeds "
            f"{', '.join(map(str, design.first_stage))}, then every tested claim's two arms to {design.cap} "
            "seeds, whatever the first stage showed; each claim is the paired t test on all of them, exact "
            "because n was fixed in advance."
        )
    return out


def _names(claim: PaperClaim) -> tuple[str, str]:
    """Short labels of a claim's two arms: the fields in which they differ."""
    keys = [k for k in {**claim.smaller, **claim.larger} if claim.smaller.get(k) != claim.larger.get(k)]

    def label(arm: dict[str, object]) -> str:
        return " ".join(f"{arm.get(k)}L" if k == "levels" else str(arm.get(k, "-")) for k in keys)

    return label(claim.smaller) or "first arm", label(claim.larger) or "second arm"
