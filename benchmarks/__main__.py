"""CLI: `python -m benchmarks run table3 --scale proxy [--data DIR] [--methods a,b] [--plugin mod]`."""

from __future__ import annotations

import argparse
import sys

from benchmarks.data import DatasetError
from benchmarks.experiments import SCALES, cells, experiment_names
from benchmarks.results import RecordExistsError, is_finished


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description="cacim classification benchmarks"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, helptext in (
        ("run", "train and evaluate every unfinished cell"),
        ("list", "list cells and status"),
    ):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("experiment", help="table1, table2, table3, delta (or one a plugin registers)")
        p.add_argument("--scale", default="proxy", choices=SCALES)
        p.add_argument("--methods", default="", help="comma-separated quantizer names (default: the table's)")
        p.add_argument("--plugin", action="append", default=[], help="module to import first (repeatable)")
        p.add_argument("--results", default="results", help="results store root (default: results)")
    run_p = sub.choices["run"]
    run_p.add_argument("--data", default=None, help="dataset root (cifar10 / imagenet layouts; see README)")
    run_p.add_argument(
        "--weights", default=None, help="folder with float checkpoints (default: DATA/weights)"
    )
    run_p.add_argument("--force", action="store_true", help="recompute and overwrite finished cells")
    run_p.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m] or None

    from benchmarks import runner  # imports torch and cacim_core: after argument errors are reported

    try:
        for plugin in args.plugin:
            runner.load_plugin(plugin)
        if args.experiment not in experiment_names():
            raise runner.SetupError(
                f"unknown experiment {args.experiment!r}; known: {', '.join(experiment_names())}"
            )
        if args.command == "list":
            for cell in cells(args.experiment, args.scale, methods):
                done = is_finished(args.results, cell.experiment, args.scale, cell.id)
                print(f"{'done' if done else 'todo'}  {cell.id}  ({cell.model} on {cell.dataset})")
            return 0
        runner.run(
            args.experiment,
            args.scale,
            args.data,
            args.weights,
            args.results,
            methods,
            args.force,
            progress=not args.no_progress,
        )
    except (runner.SetupError, DatasetError, RecordExistsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
