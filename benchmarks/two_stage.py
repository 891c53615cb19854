"""Adaptive seeds for a table's claims: a registered second stage (`run --two-stage CAP`, `MAX_SEEDS=`).

Two rules (`--seed-rule`). "stein" (Stein's two-stage design, below) sizes each claim from its first-stage
SD; "fixed" gives every tested claim CAP seeds, whatever the first stage showed, and tests it by the
plain paired t on all of them (n - 1 degrees of freedom): exact because n is fixed in advance. At a 3-seed
first stage Stein's test keeps that stage's 2 degrees of freedom (t quantile 4.30 at 5%, 14.1 at Holm's
first step over 10 claims, against 2.36 and 4.03 at n = 8), and its SD-driven n is then nearly always the
cap: there "fixed" decides more claims for the same seeds (`make table3`'s default).

After the first stage (the scale's seeds), each tested claim's first-stage SD fixes how many seeds it gets
(`stats.two_stage_seeds`, power planned at the Holm worst-case level alpha / family size, at most CAP); the
design is registered in the store (<experiment>/<scale>/.design/two_stage.json) before any second-stage
cell trains, and never changed after: the tables' claim lines then test each claim on its registered seeds
with the first stage's SD (`paired_test(first_stage=...)`). The seeds a claim gets depend on the SD alone,
never on how far its mean is from a verdict: that is what keeps the error rates exact (tests/test_stats.py).
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from benchmarks.compare import PaperClaim
from benchmarks.experiments import Cell
from benchmarks.results import atomic_write, cell_dir
from benchmarks.stats import ALPHA, seeds_for_power, t_interval, two_stage_seeds

if TYPE_CHECKING:  # the runner imports torch: at call time only
    from benchmarks.runner import RunOptions


@dataclass(frozen=True)
class Design:
    """A registered two-stage design: the first stage's seeds, the cap, and each claim's seeds."""

    first_stage: tuple[int, ...]
    cap: int
    margin: float
    alpha: float  # the level the second stage's power was planned at (alpha / family size)
    seeds: dict[str, int]  # claim text -> its seed count, first stage included
    sd0: dict[str, float]  # claim text -> its first-stage SD
    rule: str = "stein"  # RULES: how the seeds were chosen and how the claims are tested

    @property
    def stein(self) -> bool:
        """Tested by Stein's test (first-stage SD and df); else the plain paired t on every seed."""
        return self.rule == "stein"

    def seeds_of(self, claim: str) -> list[int]:
        """The claim's seeds: the first stage's, then the next integers after its largest."""
        return self.seeds_of_cap()[: self.seeds[claim]]

    def stop_reason(self, claim: str, unit: str = "pt") -> str:
        """How many seeds the claim got and why no more: its first-stage SD's call, or the cap."""
        n, n0, sd = self.seeds[claim], len(self.first_stage), self.sd0[claim]
        if not self.stein:
            return (
                f"{n} seeds, the fixed design's n (paired t on all {n}, {n - 1} df; first-stage SD {sd:.2f})"
            )
        need = seeds_for_power(sd, self.margin, self.alpha, limit=self.cap + 1, df=n0 - 1)
        aim = f"80% power at ±{self.margin:g} {unit}, level {self.alpha:.3g}"
        if need is not None and need <= self.cap:
            return f"{n} seeds, what its first-stage SD {sd:.2f} calls for ({aim})"
        return (
            f"{n} seeds, stopped at the cap: its first-stage SD {sd:.2f} needs more than {self.cap} for {aim}"
        )

    def seeds_of_cap(self) -> list[int]:
        """Every seed the design may use: the first stage's, then the next integers up to the cap."""
        top = max(self.first_stage) + 1
        return [*self.first_stage, *range(top, top + self.cap - len(self.first_stage))]


#: the second-stage rules `--seed-rule` takes
RULES = ("stein", "fixed")


def design_path(results: str | Path, experiment: str, scale: str) -> Path:
    return cell_dir(results, experiment, scale) / ".design" / "two_stage.json"


def load_design(results: str | Path, experiment: str, scale: str) -> Design | None:
    path = design_path(results, experiment, scale)
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    return Design(**{**data, "first_stage": tuple(data["first_stage"])})  # no "rule": an older Stein design


def plan_design(
    claims: tuple[PaperClaim, ...],
    frame: pd.DataFrame,
    first_stage: tuple[int, ...],
    cap: int,
    margin: float,
    rule: str = "stein",
) -> Design:
    """Each tested claim's seed count: from its first-stage SD (records at the first-stage seeds only)
    under "stein", the cap under "fixed"."""
    if rule not in RULES:
        raise ValueError(f"unknown seed rule {rule!r}; known: {', '.join(RULES)}")
    first = frame[frame["seed"].isin(first_stage)]
    tested = [c for c in claims if not c.construction]
    diffs: dict[str, list[float]] = {}
    for claim in tested:
        a, b = claim.arms(first)
        common = sorted(set(a) & set(b))
        if common != sorted(first_stage):
            missing = sorted(set(first_stage) - set(common))
            raise ValueError(
                f"two-stage: claim {claim.text!r} lacks first-stage seeds {missing}; run the first stage "
                "to the end first (rerun the same command)"
            )
        diffs[claim.text] = [a[s] - b[s] for s in common]
    alpha = ALPHA / max(len(diffs), 1)
    if rule == "stein":
        seeds = {text: two_stage_seeds(d, margin, alpha, cap) for text, d in diffs.items()}
    else:
        seeds = dict.fromkeys(diffs, cap)
    sd0 = {text: t_interval(d).sd for text, d in diffs.items()}
    return Design(tuple(first_stage), cap, margin, alpha, seeds, sd0, rule)


def register(results: str | Path, experiment: str, scale: str, design: Design) -> Design:
    """Write the design once; an existing one is the registered design and is returned unchanged (a rerun
    resumes its second stage), unless it was made with another cap, margin, first stage or rule: an error."""
    path = design_path(results, experiment, scale)
    old = load_design(results, experiment, scale)
    if old is None:
        atomic_write(path, json.dumps(asdict(design), indent=1))
        return design
    if (old.cap, old.margin, old.first_stage, old.rule) != (
        design.cap,
        design.margin,
        design.first_stage,
        design.rule,
    ):
        raise ValueError(
            f"a two-stage design is registered at {path} (cap {old.cap}, margin {old.margin:g}, first stage "
            f"{list(old.first_stage)}, rule {old.rule}): rerun with those, or delete the file to register a "
            "new one"
        )
    return old


def second_stage_cells(design: Design, claims: tuple[PaperClaim, ...], listed: list[Cell]) -> list[Cell]:
    """The cells of both arms of each claim at its registered seeds beyond the first stage. `listed`: the
    experiment's cells at every seed up to the cap."""
    chosen: dict[str, Cell] = {}
    for claim in claims:
        if claim.text not in design.seeds:
            continue
        extra = set(design.seeds_of(claim.text)) - set(design.first_stage)
        for cell in listed:
            if cell.seed in extra and any(_matches(cell, arm) for arm in (claim.smaller, claim.larger)):
                chosen[cell.id] = cell
    return list(chosen.values())


def _matches(cell: Cell, selection: dict[str, object]) -> bool:
    return all(getattr(cell, key) == value for key, value in selection.items())


def run_two_stage(
    experiment: str, scale: str, cap: int, rule: str = "stein", options: RunOptions | None = None
) -> Design:
    """The first stage (the scale's seeds, or `seeds`), the design registered from its records, then the
    second stage: each claim's arms at its extra seeds. A rerun resumes either stage; the design stands."""
    from benchmarks import runner
    from benchmarks.experiments import cells
    from benchmarks.results import load
    from tables.render import load_spec, with_control_gaps

    try:
        spec = load_spec(experiment)
    except ValueError as exc:
        raise runner.SetupError(f"--two-stage needs a table with claims: {exc}") from None
    tested = [c for c in spec.claims if not c.construction]
    if not tested:
        raise runner.SetupError(f"--two-stage: table {experiment} tests no claim; run it without --two-stage")
    opt = options or runner.RunOptions()
    first = tuple(sorted({c.seed for c in cells(experiment, scale, opt.methods, opt.seeds)}))
    if len(first) < 2 or cap < len(first):
        raise runner.SetupError(
            f"--two-stage {cap}: needs 2+ first-stage seeds and a cap of at least their {len(first)}"
        )
    runner.run(experiment, scale, opt)
    frame = with_control_gaps(load(experiment, scale, opt.results))
    try:
        design = plan_design(spec.claims, frame, first, cap, spec.claim_margin, rule)
        design = register(opt.results, experiment, scale, design)
    except ValueError as exc:
        raise runner.SetupError(str(exc)) from None
    for text, n in design.seeds.items():
        print(f"two-stage: {text}: first-stage SD {design.sd0[text]:.2f}, {n} seeds", file=sys.stderr)
    every = cells(experiment, scale, opt.methods, design.seeds_of_cap())
    todo = second_stage_cells(design, spec.claims, every)
    if todo:
        runner.run(experiment, scale, opt, only=todo)
    return design
