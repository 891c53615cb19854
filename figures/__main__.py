"""`python -m figures [fig2|fig3|fig4|all]`: draw the paper's figures from the results store; never trains."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from cacim_core.registry import load_installed_plugins, load_plugin
from figures import fig2, fig3, fig4, style
from figures.context import DEFAULT_CONDUCTANCES, Context, Rendered

FIGURES: dict[str, Callable[[Context], Rendered]] = {
    "fig2": fig2.render,
    "fig3": fig3.render,
    "fig4": fig4.render,
}


def parse_args(argv: list[str] | None) -> tuple[list[str], Context]:
    parser = style.common_parser("python -m figures", __doc__)
    parser.add_argument("figure", nargs="?", default="all", choices=[*FIGURES, "all"])
    parser.add_argument(
        "--checkpoint",
        type=Path,
        help="state_dict .pt for Figures 2 and 4(a) (default: newest float model in --results)",
    )
    parser.add_argument(
        "--conductances",
        type=Path,
        default=DEFAULT_CONDUCTANCES,
        help="CSV of measured conductances (uS) for Figure 4 (default: generated example)",
    )
    parser.add_argument(
        "--methods",
        default="",
        help="quantizers to draw, comma-separated: Figure 2's panels, the bars of Figures 3 and 4(b)"
        " (default: uniform,log2,lloyd; lloyd and every other method in the records)",
    )
    parser.add_argument(
        "--plugin", action="append", default=[], help="module or .py file to import (repeatable)"
    )
    args = parser.parse_args(argv)
    try:
        load_installed_plugins()  # pip-installed plugin packages (entry-point group `cacim.plugins`)
        for plugin in args.plugin:
            load_plugin(plugin)
    except ImportError as exc:
        parser.exit(2, f"error: {exc}\n")
    names = list(FIGURES) if args.figure == "all" else [args.figure]
    methods = tuple(m for m in args.methods.split(",") if m)
    return names, Context(args.results, args.out, args.scale, args.checkpoint, args.conductances, methods)


def main(argv: list[str] | None = None) -> int:
    """Render each requested figure; exit 1 if one had none of its measured inputs, 2 on bad input."""
    names, ctx = parse_args(argv)
    not_drawn = []
    for name in names:
        try:
            rendered = FIGURES[name](ctx)
        except (ValueError, FileNotFoundError, KeyError) as exc:
            print(f"error: {name}: {exc}", file=sys.stderr)
            return 2
        for line in rendered.missing.lines(name):
            print(line, file=sys.stderr)
        if rendered.figure is None:
            not_drawn.append(name)
            continue
        paths = style.save(rendered.figure, ctx.out / ctx.scale, name)  # per scale, like the tables
        print(f"{name}: wrote {', '.join(str(p) for p in paths)}")
    if not_drawn:
        print(f"not drawn (no measured inputs yet): {', '.join(not_drawn)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
