"""CLI for every table and figure result set:

python -m benchmarks run table3 --scale proxy [--data DIR] [--methods a,b] [--plugin mod_or_file.py]
python -m benchmarks list table4 --scale smoke
"""

from __future__ import annotations

import argparse
import re
import sys

from benchmarks.data import DatasetError
from benchmarks.experiments import SCALES, cells
from benchmarks.results import RecordExistsError, is_finished
from benchmarks.two_stage import RULES, run_two_stage


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "experiment",
        help="table1..table5, table4_one_stage, delta, robustness, drift, fig3, fig4b (or a plugin's)",
    )
    p.add_argument("--scale", default="proxy", choices=SCALES)
    p.add_argument("--methods", default="", help="comma-separated quantizer names (default: the table's)")
    p.add_argument(
        "--plugin", action="append", default=[], help="module or .py file to import first (repeatable)"
    )
    p.add_argument("--results", default="results", help="results store root (default: results)")
    p.add_argument("--seeds", default="", help="comma-separated training seeds (default: the scale's)")


SEED_RANGE = 2**32  # numpy's generators take seeds in [0, 2**32)


def parse_seeds(text: str) -> list[int] | None:
    """`--seeds 0,1,2` of every subcommand: distinct integers in [0, 2**32); None (the scale's) when empty."""
    parts = [s.strip() for s in text.split(",") if s.strip()]
    if not all(re.fullmatch(r"[+-]?[0-9]+", s) for s in parts):
        raise ValueError(f"--seeds takes comma-separated integers (0,1,2), got: {text}")
    seeds = [int(s) for s in parts]
    if any(not 0 <= s < SEED_RANGE for s in seeds):
        raise ValueError(f"--seeds must lie in 0..{SEED_RANGE - 1}, got: {text}")
    twice = sorted({s for s in seeds if seeds.count(s) > 1})
    if twice:
        raise ValueError(f"--seeds lists {', '.join(map(str, twice))} twice: give each seed once")
    return seeds or None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description="cacim benchmarks")
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="train and evaluate every unfinished cell")
    _common(run_p)
    _common(sub.add_parser("list", help="list cells and status"))
    plan_p = sub.add_parser("plan", help="cells, steps, images and GPU-hours of a run, before starting it")
    _common(plan_p)
    plan_p.set_defaults(scale="paper")
    plan_p.add_argument("--gpus", type=int, default=1)
    plan_p.add_argument("--data", default=None, help="needed only to count a proxy dataset")
    cmp_p = sub.add_parser("compare", help="better, worse, equivalent or inconclusive, from the store")
    cmp_p.add_argument("experiment")
    cmp_p.add_argument("--method", required=True, help="the quantizer to judge")
    cmp_p.add_argument("--against", required=True, help="comma-separated baselines")
    cmp_p.add_argument("--scale", default="proxy", choices=SCALES)
    cmp_p.add_argument(
        "--metric", default=None, help="default: gap_top1 (classification), else the first gap"
    )
    cmp_p.add_argument(
        "--margin", type=float, default=None, help="equivalence margin (default 0.5 pt; mAP, mIoU: 1)"
    )
    cmp_p.add_argument("--no-adjust", action="store_true", help="raw p-values: no Holm adjustment")
    cmp_p.add_argument("--results", default="results")
    cmp_p.add_argument(
        "--out", default="tables/out", help="writes <out>/<scale>/compare_<table>_<method>.md/.csv"
    )
    run_p.add_argument("--data", default=None, help="dataset root (cifar10 / imagenet / VOC layouts; README)")
    run_p.add_argument(
        "--weights", default=None, help="folder with float checkpoints (default: DATA/weights)"
    )
    run_p.add_argument("--force", action="store_true", help="recompute and overwrite every finished cell")
    run_p.add_argument(
        "--two-stage",
        type=int,
        default=None,
        metavar="CAP",
        help="adaptive seeds: after the first stage (the scale's seeds, or --seeds), each claim's arms get "
        "the seeds (at most CAP) its first-stage SD calls for (Stein's exact two-stage test)",
    )
    run_p.add_argument(
        "--seed-rule",
        choices=RULES,
        default=None,
        help="with --two-stage: stein (n from the first-stage SD, Stein's test) or fixed (every claim CAP "
        "seeds, the paired t on all; more power at a 3-seed first stage)",
    )
    run_p.add_argument("--rerun-stale", action="store_true", help="recompute cells whose code/recipe changed")
    run_p.add_argument("--workers", type=int, default=1, help="parallel worker processes on this machine")
    run_p.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda when visible")
    run_p.add_argument("--no-progress", action="store_true", help="no progress bars")
    run_p.add_argument(
        "--launcher", choices=("slurm", "local"), default=None, help="submitit: one job per cell"
    )
    run_p.add_argument("--gpus-per-cell", type=int, default=1, help="with --launcher: DDP inside a cell")
    run_p.add_argument("--partition", default=None, help="with --launcher slurm")
    run_p.add_argument("--time", type=int, default=24 * 60, help="with --launcher: minutes per job")
    run_p.add_argument(
        "--amp", choices=("bf16",), default=None, help="bf16 autocast in training (default fp32)"
    )
    run_p.add_argument("--channels-last", action="store_true", help="channels_last memory format in training")
    run_p.add_argument(
        "--reset-head",
        action="store_true",
        help="float checkpoint of another class count: train a fresh head",
    )
    args = parser.parse_args(argv)
    from cacim_core.registry import load_installed_plugins

    try:
        load_installed_plugins()  # pip-installed plugin packages (entry-point group `cacim.plugins`)
    except ImportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.command == "compare":
        return _compare(args)
    methods = [m for m in args.methods.split(",") if m] or None

    from benchmarks import runner  # imports torch and cacim_core: after argument errors are reported

    try:
        seeds = parse_seeds(args.seeds)
        for plugin in args.plugin:
            runner.load_plugin(plugin)
        if args.command == "plan":
            from benchmarks.plan import bill, render

            if args.gpus < 1:
                raise ValueError(f"--gpus must be >= 1 (GPUs the cells run on at once), got {args.gpus}")
            runner.check_data(args.data)

            costs = bill(args.experiment, args.scale, args.results, args.data, methods, seeds)
            print(render(costs, args.experiment, args.scale, args.gpus), end="")
            return 0
        if args.command == "list":
            for cell in cells(args.experiment, args.scale, methods, seeds):
                done = is_finished(args.results, cell.experiment, args.scale, cell.id)
                print(f"{'done' if done else 'todo'}  {cell.id}  ({cell.model} on {cell.dataset})")
            return 0
        if args.seed_rule is not None and args.two_stage is None:
            raise runner.SetupError("--seed-rule chooses a second stage: give --two-stage CAP with it")
        if args.two_stage is not None and (args.force or args.launcher):
            raise runner.SetupError("--two-stage resumes its stages: drop --force and --launcher")
        launcher = runner.Launcher(args.launcher or "slurm", args.gpus_per_cell, args.partition, args.time)
        options = runner.RunOptions(
            results=args.results,
            data=args.data,
            weights=args.weights,
            methods=methods,
            seeds=seeds,
            force=args.force,
            rerun_stale=args.rerun_stale,
            progress=not args.no_progress,
            workers=args.workers,
            device=args.device,
            reset_head=args.reset_head,
            amp=args.amp == "bf16",
            channels_last=args.channels_last,
            launcher=launcher if args.launcher else None,
        )
        if args.two_stage is None:
            runner.run(args.experiment, args.scale, options)
        else:
            run_two_stage(args.experiment, args.scale, args.two_stage, args.seed_rule or "stein", options)
    except (runner.SetupError, DatasetError, RecordExistsError, ValueError, KeyError) as exc:
        print(f"error: {str(exc).strip(chr(34) + chr(39))}", file=sys.stderr)
        return 2
    return 0


def _compare(args: argparse.Namespace) -> int:
    from pathlib import Path

    from benchmarks.compare import check_experiment, compare, to_frame, to_markdown
    from benchmarks.results import atomic_write, load

    try:
        check_experiment(args.experiment, args.scale, args.results)
        frame = load(args.experiment, args.scale, args.results)
        against = [m for m in args.against.split(",") if m]
        found = compare(frame, args.method, against, args.metric, args.margin, not args.no_adjust)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    text = to_markdown(args.experiment, args.scale, found)
    stem = Path(args.out) / args.scale / f"compare_{args.experiment}_{args.method}"
    atomic_write(stem.with_suffix(".md"), text)
    atomic_write(stem.with_suffix(".csv"), to_frame(found).to_csv(index=False))
    print(text + f"\nwrote {stem}.md, {stem}.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
