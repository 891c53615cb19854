"""Render a table spec (data) + the results store + quoted reference numbers to Markdown, LaTeX and CSV.

Every measured number is the mean over training seeds with its 95% confidence interval (Student t) and n;
with one seed, the number of that one run (and the spread of its noise draws, which is not run-to-run
spread). Paper numbers sit in columns marked "paper (quoted)". Renderers read only the store.

    python -m tables.render table3 [table3_ptq ...] --scale proxy [--results results] [--out tables/out]

Specs live in `tables/specs/<name>.py` as a module-level `SPEC`; reference numbers in
`tables/reference/<name>.csv` with columns `row,column,value` (the value as printed in the paper).
Output: `<out>/<scale>/<name>.md|.tex|.csv`.
"""

from __future__ import annotations

import argparse
import importlib
import math
import statistics
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from benchmarks.compare import PaperClaim, claim_lines, select
from benchmarks.experiments import CONTROL, DIAGNOSES
from benchmarks.metrics import MetricName, control_gap_of, fp_of, gap_of, ptq_of
from benchmarks.results import atomic_write_all, load
from benchmarks.stats import Interval, margin_for, paired_difference, per_seed, t_interval
from benchmarks.two_stage import load_design

HERE = Path(__file__).resolve().parent
MISSING = "-"
OURS = "lloyd"


@dataclass(frozen=True)
class Column:
    """One column of the paper's layout; `metrics` are joined by "/" (e.g. top-1/top-5 gaps)."""

    header: str
    metrics: tuple[str, ...] = ()
    match: dict[str, Any] = field(default_factory=dict)
    static: bool = False  # a label column (e.g. "Levels"): printed once, from Row.labels
    digits: int = 2


@dataclass(frozen=True)
class Row:
    """One row; `match` selects its records (None: a method quoted from the paper, not run here)."""

    label: str
    match: dict[str, Any] | None = None
    labels: dict[str, str] = field(default_factory=dict)
    # overrides the columns' metrics (e.g. a full-precision row): for every column, or by column header
    metrics: tuple[str, ...] | dict[str, tuple[str, ...]] | None = None


@dataclass(frozen=True)
class TableSpec:
    name: str
    title: str
    experiment: str
    columns: tuple[Column, ...]
    rows: tuple[Row, ...]
    notes: tuple[str, ...] = ()
    reference: str | None = None  # defaults to tables/reference/<name>.csv
    claims: tuple[PaperClaim, ...] = ()  # the paper's claims this table can test (verdicts from records)
    margin: float | None = None  # the claims' equivalence margin (None: `stats.margin_for` their metric)
    unit: str = "pt"
    paper: bool = True  # False: our own experiment, which the paper has no table of (no quoted columns)

    @property
    def claim_margin(self) -> float:
        """The claims' equivalence margin when no --margin is given: the spec's, else its metric's default."""
        return self.margin or margin_for(self.claims[0].metric if self.claims else gap_of("top1"))

    def with_extra_rows(self, methods: set[str]) -> TableSpec:
        """Rows for every measured method no row lists (e.g. a plugin's quantizer): a copy of each of our
        (lloyd) rows with the method replaced, so it sits beside the baselines with the same cells."""
        listed = {row.match.get("method") for row in self.rows if row.match}
        extra = []
        for method in sorted(methods - listed - {CONTROL}):
            for row in self.rows:
                if row.match and row.match.get("method") == OURS and row.metrics is None:
                    label = (
                        row.label.replace("Ours", method) if "Ours" in row.label else f"{method} {row.label}"
                    )
                    extra.append(
                        replace(row, label=f"{label} (plugin)", match={**row.match, "method": method})
                    )
        return replace(self, rows=self.rows + tuple(extra))


@dataclass
class Measured:
    """The numbers behind one cell of a rendered table: one interval per metric, over seeds."""

    metrics: tuple[str, ...]
    intervals: list[Interval]
    draws: int  # noise draws per seed (1: a noise-free evaluation)
    draw_sd: list[float]  # mean over seeds of the std over noise draws
    scale: str

    @property
    def seeds(self) -> int:
        return self.intervals[0].n

    def text(self, digits: int) -> str:
        if self.seeds >= 2:
            body = "/".join(f"{i.mean:.{digits}f} ± {i.half:.{digits}f}" for i in self.intervals)
            return f"{body} [{self.scale}, 95% CI, n={self.seeds} seeds]"
        body = "/".join(f"{i.mean:.{digits}f}" for i in self.intervals)
        if self.draws > 1:
            spread = "/".join(f"{s:.{digits}f}" for s in self.draw_sd)
            return f"{body} [{self.scale}, 1 run; sd {spread} over {self.draws} noise draws]"
        return f"{body} [{self.scale}, 1 run]"


def load_reference(path: Path) -> dict[tuple[str, str], str]:
    """(row label, column header) -> the value exactly as the paper prints it."""
    if not path.is_file():
        return {}
    ref = pd.read_csv(path, dtype=str, keep_default_na=False)
    return {(r.row, r.column): r.value for r in ref.itertuples()}


def measure(frame: pd.DataFrame, metrics: tuple[str, ...], scale: str, what: str = "") -> Measured | None:
    """Aggregate the selected records over seeds: each record holds one seed's noise-draw mean; a t
    interval over seeds (`stats.per_seed`: one cell per seed, else an error naming them)."""
    if frame.empty or any(m not in frame or frame[m].isna().all() for m in metrics):
        return None
    frame = frame.dropna(subset=list(metrics))
    intervals = [t_interval(list(per_seed(frame, m, what or "a table cell").values())) for m in metrics]
    draws = int(frame[f"{metrics[0]}_n"].max())
    draw_sd = [float(frame[f"{m}_std"].mean()) for m in metrics]
    return Measured(metrics, intervals, draws, draw_sd, scale)


#: what a quantized cell shares with its seed's control cell: the same float model, data and recipe
CONTROL_KEY = ("experiment", "scale", "arch", "model", "dataset", "seed", "init", "dataset_fingerprint")


def with_control_gaps(frame: pd.DataFrame) -> pd.DataFrame:
    """Add `gap_vs_control_<m>` = the control's <m> minus the cell's, per seed (m: top1, top5): the gap of
    quantization alone, against the float model fine-tuned with the same recipe and no quantizer. The
    paper's gap (`gap_<m>`, against the pretrained float model) also holds the fine-tune's extra epochs."""
    if frame.empty or CONTROL not in set(frame["method"]):
        return frame
    control = frame[frame["method"] == CONTROL]
    twice = control[control.duplicated(list(CONTROL_KEY), keep=False)]
    if not twice.empty:
        raise ValueError(f"two control cells for one seed: {', '.join(sorted(twice['cell']))}; delete one")
    frame = frame.copy()
    for m in ("top1", "top5"):
        if m not in frame:
            continue
        theirs = frame[list(CONTROL_KEY)].merge(control[[*CONTROL_KEY, m]], how="left", on=list(CONTROL_KEY))
        key = control_gap_of(m)
        frame[key] = theirs[m].to_numpy() - frame[m].to_numpy()
        frame.loc[frame["method"] == CONTROL, key] = math.nan
        frame[f"{key}_n"] = frame[f"{m}_n"]
        frame[f"{key}_std"] = frame[f"{m}_std"]
    return frame


def control_notes(frame: pd.DataFrame) -> list[str]:
    """Per network, what fine-tuning alone did to the float model (the control arm's top-1 minus its
    pretrained float top-1): the part of the paper-style gap that is not quantization."""
    control = frame[frame["method"] == CONTROL] if not frame.empty else frame
    out = []
    for arch, group in control.groupby("arch"):
        moved = group["top1"] - group[fp_of("top1")]
        change = t_interval(list(per_seed(group.assign(d=moved), "d").values()))
        spread = f" ± {change.half:.2f} (95% CI, n={change.n} seeds)" if change.n > 1 else " (1 seed)"
        out.append(
            f"Control arm ({arch}): fine-tuning the float model with the same recipe and no quantizer moved "
            f"its top-1 by {change.mean:+.2f}{spread}. Gap = pretrained float - quantized (the paper's); "
            "gap vs control = fine-tuned float - quantized (quantization alone); claims are the same under "
            "both, since a seed's two arms share its float and control models."
        )
    return out


#: a cell whose seeds' accuracies range wider than this (pt) gets a diagnostic note under its table
SPREAD_LIMIT = 3.0


def spread_notes(
    spec: TableSpec, frame: pd.DataFrame, recheck: tuple[str, pd.DataFrame] | None = None
) -> list[str]:
    """One diagnostic line per measured cell whose seeds spread over more than SPREAD_LIMIT: the per-seed
    values, and for the seed farthest from the median whether its float model, its quantized start (PTQ,
    before fine-tuning) or the fine-tune itself is off. A collapse is a training failure, not noise; the
    cell's mean and CI include it, and the note says so. `recheck` (what changed, its records): the same
    cells rerun under one protocol change (experiments.DIAGNOSES); the note adds what their seeds read."""
    out, seen = [], set()
    for row in spec.rows:
        for col in spec.columns if row.match is not None else ():
            base = next((n.base for n in map(MetricName.parse, col.metrics) if n.headline), None)
            chosen = select(frame, {**row.match, **col.match}) if base else frame.iloc[0:0]
            if base is None or chosen.empty or base not in chosen or ptq_of(base) not in chosen:
                continue
            values = per_seed(chosen, base, f"table cell ({row.label!r}, {col.header!r})")
            key = (base, tuple(sorted(chosen["cell"])))
            if len(values) < 2 or max(values.values()) - min(values.values()) <= SPREAD_LIMIT or key in seen:
                continue
            seen.add(key)
            note = _spread_note(f"{row.label} [{col.header}]", base, chosen, values)
            again = recheck[1][recheck[1]["cell"].isin(chosen["cell"])] if recheck else None
            if again is not None and not again.empty and base in again:
                redo = per_seed(again, base, f"{recheck[0]}: table cell ({row.label!r}, {col.header!r})")
                spread = max(redo.values()) - min(redo.values())
                note += f" With {recheck[0]}, the same seeds read {_listing(redo)} (spread {spread:.2f} pt)."
            out.append(note)
    return out


def _spread_note(where: str, base: str, chosen: pd.DataFrame, values: dict[int, float]) -> str:
    mid = statistics.median(values.values())
    worst = max(values, key=lambda s: abs(values[s] - mid))
    rest = [v for s, v in values.items() if s != worst]
    sign = 1.0 if values[worst] >= mid else -1.0  # which way the farthest seed is off
    start, fp = per_seed(chosen, ptq_of(base)), per_seed(chosen, fp_of(base))
    start_mid, fp_mid = statistics.median(start.values()), statistics.median(fp.values())
    if (fp[worst] - fp_mid) * sign > SPREAD_LIMIT:
        why = f"its float model is off the same way ({fp[worst]:.2f} vs median {fp_mid:.2f})"
    elif (start[worst] - start_mid) * sign > SPREAD_LIMIT:
        why = (
            f"its quantized start is off the same way (before fine-tuning {start[worst]:.2f} vs median "
            f"{start_mid:.2f}): the quantizer's initial fit at this seed"
        )
    elif len(rest) > 1 and abs(values[worst] - mid) < 2 * (max(rest) - min(rest)):
        why = (
            f"no single outlier (the other seeds range {max(rest) - min(rest):.2f} pt); every "
            f"seed starts {fp_mid - start_mid:.1f} pt below its float model before fine-tuning (median "
            f"{start_mid:.2f}), so the fine-tune's recovery sets where each ends"
        )
    elif sign < 0:
        why = (
            f"it started like the others (before fine-tuning {start[worst]:.2f} vs median {start_mid:.2f}) "
            "and fine-tuning lost it: a training instability at this seed, not noise"
        )
    else:
        why = (
            f"it started like the others (before fine-tuning {start[worst]:.2f} vs median {start_mid:.2f}) "
            "and its fine-tune recovered more than theirs: no collapse, the fine-tune's reach varies by seed"
        )
    return (
        f"Seed spread: {where} {base} ranges {max(values.values()) - min(values.values()):.2f} pt over "
        f"{len(values)} seeds (> {SPREAD_LIMIT:g} pt): {_listing(values)}. Seed {worst} is farthest from "
        f"the median {mid:.2f}: {why}. The cell's mean and CI include it."
    )


def _listing(values: dict[int, float]) -> str:
    """Per-seed values as the spread notes print them: "s0 65.32, s1 79.44"."""
    return ", ".join(f"s{seed} {v:.2f}" for seed, v in sorted(values.items()))


def build_cells(spec: TableSpec, frame: pd.DataFrame, scale: str) -> list[dict[str, Any]]:
    """Long form: one entry per (row, column, source) with the text to print and the numbers behind it."""
    reference = load_reference(
        Path(spec.reference) if spec.reference else HERE / "reference" / f"{spec.name}.csv"
    )
    out = []
    for row in spec.rows:
        for col in spec.columns:
            where = {"row": row.label, "column": col.header}
            if col.static:
                out.append({**where, "source": "label", "text": row.labels.get(col.header, "")})
                continue
            if spec.paper:
                quoted = reference.get((row.label, col.header), MISSING)
                out.append({**where, "source": "quoted", "text": quoted})
            measured = None
            if row.match is None:
                text = "not implemented here"
            else:
                override = row.metrics.get(col.header) if isinstance(row.metrics, dict) else row.metrics
                measured = measure(
                    select(frame, {**row.match, **col.match}),
                    override or col.metrics,
                    scale,
                    f"table cell ({row.label!r}, {col.header!r})",
                )
                if measured:
                    text = measured.text(col.digits)
                elif any(MetricName.parse(m).against == "control" for m in col.metrics):  # needs the control
                    text = "(the control)" if row.match.get("method") == CONTROL else "no control cell"
                else:
                    text = "not run"
            out.append({**where, "source": "measured", "text": text, "measured": measured})
    return out


def grid(cells: list[dict[str, Any]]) -> pd.DataFrame:
    """The table as the paper lays it out: one row per spec row, quoted and measured columns side by side."""
    suffix = {"label": "", "quoted": " (paper, quoted)", "measured": " (ours)"}
    rows: dict[str, dict[str, str]] = {}
    for c in cells:
        rows.setdefault(c["row"], {"Method": c["row"]})[c["column"] + suffix[c["source"]]] = c["text"]
    return pd.DataFrame(list(rows.values()))


def resolution(cells: list[dict[str, Any]], claims: list[Interval] = ()) -> str | None:
    """The median 95% CI half-width of the measured gaps, per metric (a tight top-5 must not flatter a
    wide top-1), and of the claims' paired differences (what the claims test)."""
    halves: dict[str, list[float]] = {}
    for c in cells:
        if c.get("measured") is None:
            continue
        for name, interval in zip(c["measured"].metrics, c["measured"].intervals, strict=True):
            metric = MetricName.parse(name)
            if metric.kind == "gap" and math.isfinite(interval.half):
                halves.setdefault(metric.subject, []).append(interval.half)
    if not halves:
        return None
    parts = [f"{name} {statistics.median(h):.2f} pt over {len(h)} cells" for name, h in halves.items()]
    paired = [d.half for d in claims if math.isfinite(d.half)]
    tested = (
        f"; of the claims' paired differences (what the claims test): {statistics.median(paired):.2f} pt "
        f"over {len(paired)} claims"
        if paired
        else ""
    )
    return f"Resolution: median 95% CI half-width of the measured gaps: {'; '.join(parts)}{tested}."


def provenance(frame: pd.DataFrame) -> list[str]:
    if frame.empty:
        return []
    lines = [
        f"measured on model {m}, dataset {d} (fingerprint {f})"
        for (m, d, f), _ in frame.groupby(["model", "dataset", "dataset_fingerprint"])
    ]
    if "refits" in frame:
        refits = frame["refits"]
        lines.append(
            f"Algorithm 1 re-fits after the initial fit, per cell (all layers): median "
            f"{refits.median():g}, max {refits.max():g}, {int((refits == 0).sum())} of {len(refits)} "
            "cells none (the paper: from a pretrained model, about once)"
        )
    arithmetic = frame["precision"].value_counts() if "precision" in frame else pd.Series(dtype=int)
    if set(arithmetic.index) - {"fp32"}:  # plain fp32 is the default and goes unsaid
        mixed = " (one recipe in each, computed in different arithmetic)" if len(arithmetic) > 1 else ""
        lines.append(
            "training arithmetic: "
            + ", ".join(f"{p} ({n} cells)" for p, n in sorted(arithmetic.items()))
            + mixed
        )
    seeds = sorted(frame["seed"].unique().tolist())
    lines.append(
        f"training seeds: {', '.join(map(str, seeds))}; code version(s): "
        + ", ".join(sorted(frame["code_version"].unique()))
    )
    return lines


def to_markdown(spec: TableSpec, table: pd.DataFrame, scale: str, notes: list[str]) -> str:
    source = "quoted numbers are the paper's, not ours" if spec.paper else "the paper has no such table"
    head = f"# {spec.title}\n\nMeasured at scale **{scale}**; {source}.\n\n"
    return head + table.to_markdown(index=False) + "\n\n" + "".join(f"- {n}\n" for n in notes)


def to_latex(spec: TableSpec, table: pd.DataFrame, scale: str) -> str:
    escaped = table.map(_tex_escape).rename(columns=_tex_escape)
    body = escaped.to_latex(index=False, escape=False)
    caption = _tex_escape(
        f"{spec.title} (measured: {scale} scale" + ("; quoted: paper)" if spec.paper else ")")
    )
    return f"\\begin{{table}}[t]\n\\centering\n\\scriptsize\n\\caption{{{caption}}}\n{body}\\end{{table}}\n"


def _tex_escape(text: str) -> str:
    for a, b in (
        ("\\", r"\textbackslash{}"),
        ("&", r"\&"),
        ("%", r"\%"),
        ("_", r"\_"),
        ("#", r"\#"),
        ("±", r"$\pm$"),
        ("*", r"$^{*}$"),
        ("+", r"$^{+}$"),
    ):
        text = text.replace(a, b)
    return text


def to_csv(spec: TableSpec, cells: list[dict[str, Any]], scale: str) -> str:
    """Long form: one line per (row, column, source), with mean, CI half-width and n for measured cells."""
    rows = []
    for c in cells:
        if c["source"] == "label":
            continue
        m: Measured | None = c.get("measured")
        rows.append(
            {
                "table": spec.name,
                "row": c["row"],
                "column": c["column"],
                "source": c["source"],
                "scale": "paper" if c["source"] == "quoted" else scale,
                "n_seeds": m.seeds if m else "",
                "draws": m.draws if m else "",
                "mean": "/".join(f"{i.mean:.4f}" for i in m.intervals) if m else "",
                "ci95_half": "/".join("" if math.isnan(i.half) else f"{i.half:.4f}" for i in m.intervals)
                if m
                else "",
                "text": c["text"],
            }
        )
    return pd.DataFrame(rows).to_csv(index=False)


def load_spec(name: str) -> TableSpec:
    try:
        return importlib.import_module(f"tables.specs.{name}").SPEC
    except ModuleNotFoundError as exc:
        specs = sorted(p.stem for p in (HERE / "specs").glob("*.py") if p.stem != "__init__")
        known = ", ".join(specs)
        raise ValueError(f"no table spec {name!r} (tables/specs/{name}.py); known: {known}") from exc


def common_seeds(
    spec: TableSpec, frame: pd.DataFrame, two_stage: bool = False
) -> tuple[pd.DataFrame, list[str]]:
    """The records of the seeds every measured cell of the spec has, and a note naming the seeds left out:
    a table's cells and its claims then rest on the same seeds (under a two-stage design the claims use
    their registered seeds instead, and the note says so)."""
    seen: list[set[int]] = []
    for row in spec.rows:
        for col in spec.columns:
            if row.match is not None and not col.static:
                seeds = set(select(frame, {**row.match, **col.match})["seed"].tolist())
                if seeds:
                    seen.append(seeds)
    if not seen:
        return frame, []
    common, every = set.intersection(*seen), set.union(*seen)
    if not common:
        return frame, [
            "Seeds: no seed is common to every measured cell; each cell uses its own seeds (its n) and each "
            "claim only the seeds both its arms have."
        ]
    if common == every:
        return frame, []
    left = ", ".join(map(str, sorted(every - common)))
    kept = ", ".join(map(str, sorted(common)))
    note = (
        f"Seeds: {left} left out (not every cell has them; rerun the table with them to use them): cells and "
        f"claims use seeds {kept}."
    )
    if two_stage:
        note = (
            f"Seeds: the cells use seeds {kept}, the seeds every cell has; {left} are a two-stage design's "
            "second stage, used by the claim lines on their registered seeds (each gives its n)."
        )
    return frame[frame["seed"].isin(common)], [note]


def render(
    spec: TableSpec,
    scale: str,
    results: str | Path = "results",
    out: str | Path = HERE / "out",
    margin: float | None = None,
    adjust: bool = True,
) -> list[Path]:
    """Write <out>/<scale>/<name>.md, .tex and .csv; returns the paths written."""
    full = with_control_gaps(load(spec.experiment, scale, results))
    design = load_design(results, spec.experiment, scale) if spec.claims else None
    frame, seed_notes = common_seeds(spec, full, design is not None)
    spec = spec.with_extra_rows(set(frame["method"]) if not frame.empty else set())
    cells = build_cells(spec, frame, scale)
    table = grid(cells)
    if margin is None:
        margin = spec.claim_margin
    tests = [paired_difference(*c.arms(frame)) for c in spec.claims if _paired(c, frame)]
    notes = [*spec.notes, *seed_notes, *([r] if (r := resolution(cells, tests)) else [])]
    if not frame.empty:
        notes += control_notes(frame)
        diagnosis = DIAGNOSES.get(spec.experiment)
        recheck = (diagnosis[1], load(diagnosis[0], scale, results)) if diagnosis else None
        notes += spread_notes(spec, frame, recheck)
        notes += claim_lines(spec.claims, full if design else frame, margin, adjust, spec.unit, design)
        notes += provenance(pd.concat([select(frame, row.match) for row in spec.rows if row.match]))
    folder = Path(out) / scale
    texts: dict[Path, str | bytes | memoryview] = {
        folder / f"{spec.name}.md": to_markdown(spec, table, scale, notes),
        folder / f"{spec.name}.tex": to_latex(spec, table, scale),
        folder / f"{spec.name}.csv": to_csv(spec, cells, scale),
    }
    return atomic_write_all(texts, kind="table")  # the three whole, or the old three kept


def _paired(claim: PaperClaim, frame: pd.DataFrame) -> bool:
    a, b = claim.arms(frame)
    return not claim.construction and bool(set(a) & set(b))


def main(argv: list[str] | None = None) -> int:
    from benchmarks.experiments import SCALES

    parser = argparse.ArgumentParser(prog="python -m tables.render", description=__doc__.splitlines()[0])
    parser.add_argument("tables", nargs="+", help="spec names, e.g. table3 (tables/specs/table3.py)")
    parser.add_argument("--scale", default="proxy", choices=SCALES)
    parser.add_argument("--results", default="results")
    parser.add_argument("--out", default=str(HERE / "out"))
    parser.add_argument(
        "--margin", type=float, default=None, help="claims' equivalence margin (default: the table's, 0.5 pt)"
    )
    parser.add_argument("--no-adjust", action="store_true", help="raw p-values, no Holm adjustment")
    args = parser.parse_args(argv)
    if args.margin is not None and not args.margin > 0:
        parser.error(f"--margin must be > 0 (e.g. --margin 0.5), got {args.margin}")
    try:  # every name and record is checked before the first table is written
        specs = [load_spec(name) for name in args.tables]
        for spec in specs:
            load(spec.experiment, args.scale, args.results)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for spec in specs:
        try:
            paths = render(spec, args.scale, args.results, args.out, args.margin, not args.no_adjust)
        except ValueError as exc:  # e.g. a selection matching two cells per seed
            print(f"error: {spec.name}: {exc}", file=sys.stderr)
            return 2
        except OSError as exc:  # a full disk, a read-only --out: the old md/tex/csv are kept whole
            print(
                f"error: {spec.name}: cannot write {exc.filename or args.out}: {exc.strerror or exc}; free "
                "space or pass a writable --out (the tables already there are unchanged)",
                file=sys.stderr,
            )
            return 2
        for path in paths:
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
