"""Render a table spec (data) + the results store + quoted reference numbers to Markdown, LaTeX and CSV.

A table is described by a `TableSpec` (rows and columns that select records by field values); every
measured number is printed with its scale and count (draws or seeds), every paper number is printed in a
column marked "paper (quoted)". Renderers read only the store; they never train.

    python -m tables.render table3 [table3_ptq ...] --scale proxy [--results results] [--out tables/out]

Specs live in `tables/specs/<name>.py` as a module-level `SPEC`; reference numbers in
`tables/reference/<name>.csv` with columns `row,column,value` (the value as printed in the paper).
"""

from __future__ import annotations

import argparse
import csv
import importlib
import io
import math
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from benchmarks.results import load_records

HERE = Path(__file__).resolve().parent
MISSING = "-"


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
    metrics: tuple[str, ...] | None = None  # overrides the columns' metrics (e.g. a full-precision row)


@dataclass(frozen=True)
class TableSpec:
    name: str
    title: str
    experiment: str
    columns: tuple[Column, ...]
    rows: tuple[Row, ...]
    notes: tuple[str, ...] = ()
    reference: str | None = None  # defaults to tables/reference/<name>.csv
    # rows for a method the spec does not list (e.g. a plugin's quantizer): method -> rows
    extra_rows: Callable[[str], tuple[Row, ...]] | None = None

    def with_extra_rows(self, records: list[dict[str, Any]]) -> TableSpec:
        """The spec plus rows for every measured method that no row lists."""
        listed = {row.match.get("method") for row in self.rows if row.match}
        extra = sorted({r["method"] for r in records} - listed)
        if not extra or self.extra_rows is None:
            return self
        return replace(self, rows=self.rows + tuple(row for m in extra for row in self.extra_rows(m)))


@dataclass
class Measured:
    means: list[float]
    stds: list[float | None]
    count: int
    unit: str  # "draws" (noise draws of one model), "seeds" (independently trained models) or "run"
    scale: str

    def text(self, digits: int) -> str:
        parts = []
        for mean, std in zip(self.means, self.stds, strict=True):
            parts.append(f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else ""))
        return "/".join(parts) + f" [{self.scale}, n={self.count} {self.unit}]"


def load_reference(path: Path) -> dict[tuple[str, str], str]:
    """(row label, column header) -> the value exactly as the paper prints it."""
    if not path.is_file():
        return {}
    with open(path, newline="") as f:
        return {(r["row"], r["column"]): r["value"] for r in csv.DictReader(f)}


def _matches(record: dict[str, Any], match: dict[str, Any]) -> bool:
    return all(record.get(key) == value for key, value in match.items())


def measure(records: list[dict[str, Any]], metrics: tuple[str, ...], scale: str) -> Measured | None:
    """Aggregate the selected records: one record -> its noise-draw mean ± std; several -> across seeds."""
    usable = [r for r in records if all(m in r["metrics"] for m in metrics)]
    if not usable:
        return None
    if len(usable) == 1:
        values = usable[0]["metrics"]
        stds = [values.get(f"{m}_std") for m in metrics]
        noisy = any(s is not None for s in stds) and usable[0]["trials"] > 1
        return Measured(
            [float(values[m]) for m in metrics],
            stds if noisy else [None] * len(stds),
            usable[0]["trials"] if noisy else 1,
            "draws" if noisy else "run",
            scale,
        )
    means, stds = [], []
    for m in metrics:
        per_seed = [float(r["metrics"][m]) for r in usable]
        mean = sum(per_seed) / len(per_seed)
        means.append(mean)
        stds.append(math.sqrt(sum((v - mean) ** 2 for v in per_seed) / (len(per_seed) - 1)))
    return Measured(means, stds, len(usable), "seeds", scale)


def build_rows(spec: TableSpec, records: list[dict[str, Any]], scale: str) -> list[dict[str, Any]]:
    """Long form: one entry per (row, column, source) with the text to print and the numbers behind it."""
    reference = load_reference(
        Path(spec.reference) if spec.reference else HERE / "reference" / f"{spec.name}.csv"
    )
    out = []
    for index, row in enumerate(spec.rows):
        for col in spec.columns:
            where = {"index": index, "row": row.label, "column": col.header}
            if col.static:
                out.append({**where, "source": "label", "text": row.labels.get(col.header, "")})
                continue
            out.append({**where, "source": "quoted", "text": reference.get((row.label, col.header), MISSING)})
            if row.match is None:
                text, measured = "not implemented here", None
            else:
                selected = [r for r in records if _matches(r, {**row.match, **col.match})]
                measured = measure(selected, row.metrics or col.metrics, scale)
                text = measured.text(col.digits) if measured else "not run"
            out.append({**where, "source": "measured", "text": text, "measured": measured})
    return out


def _grid(spec: TableSpec, cells: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    header = ["Method"]
    for col in spec.columns:
        header += [col.header] if col.static else [f"{col.header} (paper, quoted)", f"{col.header} (ours)"]
    lookup = {(c["row"], c["column"], c["source"]): c["text"] for c in cells}
    body = []
    for row in spec.rows:
        line = [row.label]
        for col in spec.columns:
            if col.static:
                line.append(lookup[(row.label, col.header, "label")])
            else:
                line += [
                    lookup[(row.label, col.header, "quoted")],
                    lookup[(row.label, col.header, "measured")],
                ]
        body.append(line)
    return header, body


def to_markdown(spec: TableSpec, cells: list[dict[str, Any]], scale: str, provenance: list[str]) -> str:
    header, body = _grid(spec, cells)
    lines = [
        f"# {spec.title}",
        "",
        f"Measured at scale **{scale}**; quoted numbers are the paper's, not ours.",
        "",
    ]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(line) + " |" for line in body]
    lines += [""] + [f"- {note}" for note in (*spec.notes, *provenance)]
    return "\n".join(lines) + "\n"


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


def to_latex(spec: TableSpec, cells: list[dict[str, Any]], scale: str) -> str:
    header, body = _grid(spec, cells)
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        r"\scriptsize",
        rf"\caption{{{_tex_escape(spec.title)} (measured: {scale} scale; quoted: paper)}}",
        r"\begin{tabular}{" + "l" * len(header) + "}",
        r"\toprule",
        " & ".join(_tex_escape(h) for h in header) + r" \\",
        r"\midrule",
    ]
    lines += [" & ".join(_tex_escape(c) for c in line) + r" \\" for line in body]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def to_csv(spec: TableSpec, cells: list[dict[str, Any]], scale: str) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["table", "row", "column", "source", "scale", "n", "unit", "value", "std", "text"])
    for c in cells:
        if c["source"] == "label":
            continue
        m: Measured | None = c.get("measured")
        if m is None:
            writer.writerow(
                [
                    spec.name,
                    c["row"],
                    c["column"],
                    c["source"],
                    "paper" if c["source"] == "quoted" else scale,
                    "",
                    "",
                    "",
                    "",
                    c["text"],
                ]
            )
            continue
        value = "/".join(f"{x:.4f}" for x in m.means)
        std = "/".join("" if s is None else f"{s:.4f}" for s in m.stds)
        writer.writerow(
            [spec.name, c["row"], c["column"], "measured", scale, m.count, m.unit, value, std, c["text"]]
        )
    return buf.getvalue()


def _provenance(records: list[dict[str, Any]]) -> list[str]:
    pairs = sorted({(r["model"], r["dataset"], r["dataset_fingerprint"]) for r in records})
    versions = sorted({r["code_version"] for r in records})
    lines = [f"measured on model {m}, dataset {d} (fingerprint {f})" for m, d, f in pairs]
    if versions:
        lines.append("code version(s): " + ", ".join(versions))
    return lines


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def load_spec(name: str) -> TableSpec:
    try:
        return importlib.import_module(f"tables.specs.{name}").SPEC
    except ModuleNotFoundError as exc:
        specs = sorted(p.stem for p in (HERE / "specs").glob("*.py") if p.stem != "__init__")
        raise SystemExit(
            f"error: no table spec {name!r} (tables/specs/{name}.py); known: {', '.join(specs)}"
        ) from exc


def render(
    spec: TableSpec, scale: str, results: str | Path = "results", out: str | Path = HERE / "out"
) -> list[Path]:
    """Write out/<name>.md, .tex and .csv; returns the paths written."""
    records = load_records(results, spec.experiment, scale)
    spec = spec.with_extra_rows(records)
    cells = build_rows(spec, records, scale)
    used = [r for r in records if any(row.match is not None and _matches(r, row.match) for row in spec.rows)]
    out = Path(out)
    paths = [out / f"{spec.name}.md", out / f"{spec.name}.tex", out / f"{spec.name}.csv"]
    _write(paths[0], to_markdown(spec, cells, scale, _provenance(used)))
    _write(paths[1], to_latex(spec, cells, scale))
    _write(paths[2], to_csv(spec, cells, scale))
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tables.render", description=__doc__.splitlines()[0])
    parser.add_argument("tables", nargs="+", help="spec names, e.g. table3 (tables/specs/table3.py)")
    parser.add_argument("--scale", default="proxy", choices=["smoke", "proxy", "paper"])
    parser.add_argument("--results", default="results")
    parser.add_argument("--out", default=str(HERE / "out"))
    args = parser.parse_args(argv)
    for name in args.tables:
        for path in render(load_spec(name), args.scale, args.results, args.out):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
