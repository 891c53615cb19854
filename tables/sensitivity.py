"""Which of a table's claims depend on the proxy recipe: the claims' verdicts under each variant side by side.

    python -m tables.sensitivity table1 [--scale proxy] [--results results] [--out tables/out]

The variants are the main table and the same claim columns rerun with another recipe (fine-tune length x4,
a second synthetic-data generator seed: `benchmarks.experiments.SENSITIVITY`). Each variant's claims are
their own Holm family (`compare.claim_verdicts`); a claim whose verdict kind differs between the variants
that measured it is "recipe-dependent": at proxy scale it says as much about the recipe as the quantizers.
Reads only the store; writes <out>/<scale>/<table>_sensitivity.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from benchmarks.compare import ANSWER, claim_verdicts
from benchmarks.stats import Verdict
from tables.render import HERE, TableSpec, common_seeds, load_spec

WORDS = {**ANSWER, "inconclusive": "inconclusive", "one seed": "one seed", "zero variance": "zero variance"}


def _word(v: Verdict | str) -> str:
    if isinstance(v, str):
        return "by construction" if v.startswith("by construction") else "not measured"
    return WORDS[v.kind]


def sensitivity(
    spec: TableSpec, frames: dict[str, pd.DataFrame], margin: float | None = None, adjust: bool = True
) -> tuple[pd.DataFrame, list[str]]:
    """(claim x variant table of verdict words, one line per claim: stable or recipe-dependent)."""
    if not spec.claims:
        raise ValueError(f"{spec.name} has no claims to test")
    margin = margin or spec.claim_margin
    found = {
        label: claim_verdicts(spec.claims, common_seeds(spec, f)[0], margin, adjust)
        for label, f in frames.items()
    }
    table = pd.DataFrame(
        {label: {c.text: _word(v[c.text]) for c in spec.claims} for label, v in found.items()}
    )
    table.index.name = "claim"
    lines = []
    for claim in spec.claims:
        words = {label: table.loc[claim.text, label] for label in frames}
        measured = {k: w for k, w in words.items() if w not in ("not measured", "by construction")}
        if claim.construction:
            lines.append(f"{claim.text}: by construction, not tested")
        elif len(measured) < 2:
            lines.append(f"{claim.text}: measured under {len(measured)} variant(s): cannot tell")
        elif len(set(measured.values())) > 1:
            moved = ", ".join(f"{k}: {w}" for k, w in measured.items())
            lines.append(f"{claim.text}: recipe-dependent ({moved})")
        else:
            lines.append(
                f"{claim.text}: the same under {len(measured)} variants ({next(iter(measured.values()))})"
            )
    return table, lines


def to_markdown(spec: TableSpec, scale: str, table: pd.DataFrame, lines: list[str], margin: float) -> str:
    head = "| claim | " + " | ".join(table.columns) + " |"
    rule = "|---" * (len(table.columns) + 1) + "|"
    rows = [f"| {claim} | " + " | ".join(table.loc[claim]) + " |" for claim in table.index]
    return "\n".join(
        [
            f"# {spec.title}: recipe sensitivity of the claims [{scale}]",
            "",
            "Each variant's claims are one Holm family (verdicts as in the table: yes / no, the opposite / "
            "no "
            f"(equivalent within ±{margin:g} {spec.unit}) / inconclusive). A claim whose verdict differs "
            "between variants is recipe-dependent.",
            "",
            head,
            rule,
            *rows,
            "",
            *(f"- {line}" for line in lines),
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    from benchmarks.experiments import SCALES, SENSITIVITY
    from benchmarks.results import atomic_write, load

    parser = argparse.ArgumentParser(prog="python -m tables.sensitivity", description=__doc__)
    parser.add_argument("table")
    parser.add_argument("--scale", default="proxy", choices=SCALES)
    parser.add_argument("--results", default="results")
    parser.add_argument("--out", default=str(HERE / "out"))
    parser.add_argument("--margin", type=float, default=None)
    args = parser.parse_args(argv)
    try:
        spec = load_spec(args.table)
        variants = SENSITIVITY.get(spec.experiment)
        if variants is None:
            raise ValueError(
                f"no sensitivity variants for {spec.experiment}; known: {', '.join(SENSITIVITY)}"
            )
        frames = {"main": load(spec.experiment, args.scale, args.results)}
        frames |= {label: load(name, args.scale, args.results) for label, name in variants.items()}
        margin = args.margin or spec.claim_margin
        table, lines = sensitivity(spec, frames, margin)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    path = Path(args.out) / args.scale / f"{spec.name}_sensitivity.md"
    text = to_markdown(spec, args.scale, table, lines, margin)
    atomic_write(path, text)
    print(text + f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
