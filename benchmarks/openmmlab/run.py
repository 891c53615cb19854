"""Run Table 4 (SSD300, mmdet) or Table 5 (PSPNet, mmseg) with CacimHook and write one record per cell.

    python -m benchmarks.openmmlab.run table4 --scale proxy [--data DIR] [--results results] [--force]
    python -m benchmarks.openmmlab.run fig4b --scale proxy [--conductances FILE]   # Figure 4(b), SSD bars

Algorithm 1's flow: the float model is trained once (its weights cached in the results store), then each
quantized cell fine-tunes from it with the hook and is tested (with `trials` noise draws when it was
trained with noise). A finished cell is skipped; an interrupted cell restarts from the float weights.
At smoke/proxy scale DATA is where the generated VOC-format dataset is written (default
.cache/voc_shapes/<scale>); at paper scale DATA must hold a real VOCdevkit/.
"""

from __future__ import annotations

import argparse
import copy
import numbers
import os
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.openmmlab.experiments import EXPERIMENTS, Cell, Experiment, Scale
from benchmarks.openmmlab.voc_shapes import write_voc_shapes
from benchmarks.results import (
    checkpoint_path,
    code_version,
    fingerprint_files,
    is_finished,
    load_records,
    now_iso,
    save_checkpoint,
    write_record,
)

CONFIGS = Path(__file__).resolve().parent / "configs"
PACKAGED_ROOT = "data/VOCdevkit"  # the packaged configs' data_root prefix
# What a real VOCdevkit must hold for each table (paper scale).
REQUIRED = {
    "table4": ("VOC2007/ImageSets/Main/trainval.txt", "VOC2007/ImageSets/Main/test.txt",
               "VOC2012/ImageSets/Main/trainval.txt"),
    "table5": ("VOC2012/ImageSets/Segmentation/train.txt", "VOC2012/ImageSets/Segmentation/aug.txt",
               "VOC2012/ImageSets/Segmentation/val.txt"),
}  # fmt: skip


def prepare_data(exp: Experiment, scale: Scale, scale_name: str, data: str | None) -> tuple[Path, str]:
    """(folder holding VOCdevkit/, dataset fingerprint); writes the generated dataset if needed."""
    if scale.data is not None:
        root = Path(data or f".cache/voc_shapes/{scale_name}")
        return root, write_voc_shapes(root, scale.data)
    if not data:
        raise SystemExit(f"error: {exp.name} at scale {scale_name} needs DATA=<folder holding VOCdevkit/>")
    root = Path(data)
    missing = [p for p in REQUIRED[exp.name] if not (root / "VOCdevkit" / p).is_file()]
    if missing:
        raise SystemExit(
            f"error: {root}/VOCdevkit lacks {', '.join(missing)}; point DATA at a full PASCAL VOC copy"
        )
    lists = [root / "VOCdevkit" / p for p in REQUIRED[exp.name]]
    return root, fingerprint_files(lists)


def _rewrite(node: Any, key: str, fn) -> None:
    """Apply fn to every value stored under `key` anywhere in a nested config."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                node[k] = fn(v)
            else:
                _rewrite(v, key, fn)
    elif isinstance(node, list):
        for v in node:
            _rewrite(v, key, fn)


def build_config(
    exp: Experiment, scale: Scale, data_root: Path, work_dir: Path, phase: dict[str, Any], hook: dict | None
):
    """The scale's config with the phase schedule, the data location and the hook (None: float model)."""
    from mmengine.config import Config

    cfg = Config.fromfile(str(CONFIGS / scale.config))
    cfg.merge_from_dict(copy.deepcopy(phase))
    cfg.merge_from_dict(copy.deepcopy(scale.extra))
    new_root = str(data_root.resolve() / "VOCdevkit")
    for loader in ("train_dataloader", "val_dataloader", "test_dataloader"):
        _rewrite(cfg[loader], "data_root", lambda v: v.replace(PACKAGED_ROOT, new_root).rstrip("/"))
    # The packaged dataloaders hold copies of the base pipelines: push the config's own ones down.
    _rewrite(cfg.train_dataloader, "pipeline", lambda _: copy.deepcopy(cfg.train_pipeline))
    test_pipeline = cfg.tta_pipeline if exp.tta else cfg.test_pipeline
    _rewrite(cfg.test_dataloader, "pipeline", lambda _: copy.deepcopy(test_pipeline))
    cfg.val_dataloader = cfg.val_evaluator = cfg.val_cfg = None
    cfg.work_dir = str(work_dir)
    cfg.experiment_name = f"{work_dir.name}_{time.strftime('%Y%m%d_%H%M%S')}"
    cfg.randomness = {"seed": 0}
    hooks = [h for h in cfg.custom_hooks if h.get("type") != "CacimHook"]
    cfg.custom_hooks = hooks + ([hook] if hook else [])
    return cfg


def _train_and_test(cfg, tta: bool) -> tuple[Any, dict[str, float]]:
    from mmengine.registry import MODELS
    from mmengine.runner import Runner

    runner = Runner.from_cfg(cfg)
    runner.train()
    if tta:
        runner.model = MODELS.build({**cfg.tta_model, "module": runner.model})
    metrics = runner.test()
    # numbers.Real: mmseg reports numpy float32, which is not a Python float.
    return runner, {k: float(v) for k, v in metrics.items() if isinstance(v, numbers.Real)}


def _percent(exp: Experiment, metrics: dict[str, float], prefix: str = "") -> dict[str, float]:
    return {name: metrics[prefix + key] * factor for name, (key, factor) in exp.metrics.items()}


def _record(exp: Experiment, scale: Scale, scale_name: str, cell_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "experiment": exp.name,
        "cell": cell_id,
        "scale": scale_name,
        "model": scale.model,
        "dataset": scale.dataset,
        "seed": 0,
        "first_last": "quantize",
        "code_version": code_version(),
        "finished_at": now_iso(),
        **fields,
    }


def float_phase(
    exp: Experiment, scale: Scale, scale_name: str, data_root: Path, fingerprint: str, results: Path
):
    """Train (or reuse) the float model; returns (checkpoint path, float metrics in percent)."""
    if exp.float_from:
        source = EXPERIMENTS[exp.float_from]
        return float_phase(source, source.scales[scale_name], scale_name, data_root, fingerprint, results)
    ckpt = checkpoint_path(results, exp.name, scale_name, "float")
    records = [r for r in load_records(results, exp.name, scale_name) if r["cell"] == "float"]
    if records:
        if not ckpt.is_file() or records[0]["dataset_fingerprint"] != fingerprint:
            raise SystemExit(
                f"error: the float model of {exp.name} [{scale_name}] is missing or from other data; "
                "rerun with --force (FORCE=1) to retrain it and its cells"
            )
        return ckpt, {name: records[0]["metrics"][name] for name in exp.metrics}
    start = time.time()
    work = results / exp.name / scale_name / ".work" / "float"
    runner, metrics = _train_and_test(
        build_config(exp, scale, data_root, work, scale.float_phase, None), exp.tta
    )
    from cacim_core.integrations.mmengine import unwrap

    save_checkpoint(ckpt, {"state_dict": unwrap(runner.model).state_dict()})
    fp = _percent(exp, metrics)
    record = _record(
        exp, scale, scale_name, "float", method="float", levels=None, noise_train=0.0, noise_eval=0.0,
        trials=1, metrics=fp, refits={}, dataset_fingerprint=fingerprint,
        wall_time_s=round(time.time() - start, 1),
    )  # fmt: skip
    write_record(results, record)
    return ckpt, fp


def run_cell(
    exp, scale, scale_name, cell: Cell, data_root, fingerprint, results, ckpt, fp, conductances: str = ""
) -> dict[str, Any]:
    """Fine-tune one quantized cell from the float weights with CacimHook, test it, write its record."""
    from cacim_core.integrations.mmengine import CacimHook, unwrap
    from cacim_core.training import refit_counts

    start = time.time()
    cell_id = exp.cell_id(cell)
    trials = scale.trials if cell.noise > 0 or cell.measured else 0
    hook = dict(
        type="CacimHook", method=cell.method, levels=cell.levels, noise=cell.noise, trials=trials, seed=0
    )
    if cell.measured:
        hook["eval_noise_file"] = conductances
    template = next(h for h in _config_hooks(scale) if h.get("type") == "CacimHook")
    hook = {**template, **hook}
    work = results / exp.name / scale_name / ".work" / cell_id
    cfg = build_config(exp, scale, data_root, work, scale.quant_phase, hook)
    cfg.load_from = str(ckpt)
    runner, metrics = _train_and_test(cfg, exp.tta)
    clean = _percent(exp, metrics)
    out: dict[str, float] = {f"{k}_clean": v for k, v in clean.items()}
    out.update({f"fp_{k}": v for k, v in fp.items()})
    if trials:
        noisy = _percent(exp, metrics, prefix="noisy/")
        stds = {name: metrics[f"noisy/{key}_std"] * factor for name, (key, factor) in exp.metrics.items()}
        for name in exp.metrics:
            out.update({name: noisy[name], f"{name}_std": stds[name], f"gap_{name}": fp[name] - noisy[name],
                        f"gap_{name}_std": stds[name]})  # fmt: skip
    else:
        for name in exp.metrics:
            out.update({name: clean[name], f"gap_{name}": fp[name] - clean[name]})
    hook_obj = next(h for h in runner.hooks if isinstance(h, CacimHook))
    record = _record(
        exp, scale, scale_name, cell_id, method=cell.method, levels=cell.levels, noise_train=cell.noise,
        noise_eval=hook_obj.eval_noise if trials else 0.0, noise_eval_file=hook_obj.eval_noise_file or "",
        trials=max(trials, 1), metrics=out, refits=refit_counts(unwrap(runner.model)),
        float_model=f"{exp.float_from or exp.name}/{scale_name}/float", dataset_fingerprint=fingerprint,
        wall_time_s=round(time.time() - start, 1),
    )  # fmt: skip
    write_record(results, record)
    return record


def _config_hooks(scale: Scale) -> list[dict]:
    from mmengine.config import Config

    return list(Config.fromfile(str(CONFIGS / scale.config)).custom_hooks)


def default_conductances() -> str:
    """$CONDUCTANCES, else the shipped example file (generated from the paper's statistics, not measured)."""
    from figures.context import DEFAULT_CONDUCTANCES

    return os.environ.get("CONDUCTANCES") or str(DEFAULT_CONDUCTANCES)


def run(
    name: str,
    scale_name: str,
    data: str | None,
    results: str | Path,
    force: bool = False,
    conductances: str | None = None,
) -> list[dict]:
    code_version()  # the code as loaded now, before any later commit
    exp = EXPERIMENTS[name]
    scale = exp.scales[scale_name]
    results = Path(results)
    conductances = conductances or default_conductances()
    if any(cell.measured for cell in exp.cells):
        from cacim_core.measured import MeasuredConductances

        MeasuredConductances.from_csv(conductances)  # a bad file fails before any training
    data_root, fingerprint = prepare_data(exp, scale, scale_name, data)
    if force:  # this experiment's own records only (fig4b shares its folder with the classification cells)
        for path in (results / name / scale_name).glob(f"{exp.prefix}*.json"):
            path.unlink()
        if not exp.float_from:
            checkpoint_path(results, name, scale_name, "float").unlink(missing_ok=True)
    ckpt, fp = float_phase(exp, scale, scale_name, data_root, fingerprint, results)
    print(f"{name} [{scale_name}] float: " + ", ".join(f"{k} {v:.2f}" for k, v in fp.items()), flush=True)
    done = []
    for cell in exp.cells:
        if is_finished(results, name, scale_name, exp.cell_id(cell)):
            print(f"{name} [{scale_name}] {exp.cell_id(cell)}: finished earlier, skipped", flush=True)
            continue
        record = run_cell(
            exp, scale, scale_name, cell, data_root, fingerprint, results, ckpt, fp, conductances
        )
        summary = ", ".join(
            f"{k} {record['metrics'][k]:.2f}"
            + (f" ± {record['metrics'][k + '_std']:.2f}" if record["trials"] > 1 else "")
            for k in exp.metrics
        )
        print(
            f"{name} [{scale_name}] {record['cell']}: {summary} ({record['wall_time_s']:.0f} s)", flush=True
        )
        done.append(record)
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.openmmlab.run", description=__doc__.splitlines()[0]
    )
    parser.add_argument("table", choices=sorted(EXPERIMENTS))
    parser.add_argument("--scale", default="proxy", choices=["smoke", "proxy", "paper"])
    parser.add_argument(
        "--data", default=None, help="folder holding VOCdevkit/ (generated there at smoke/proxy)"
    )
    parser.add_argument("--results", default="results")
    parser.add_argument("--force", action="store_true", help="delete this table's finished records first")
    parser.add_argument(
        "--conductances",
        default=None,
        help="measured-conductance CSV for fig4b's measured cells (default: $CONDUCTANCES or the example)",
    )
    args = parser.parse_args(argv)
    try:
        import mmdet  # noqa: F401
        import mmseg  # noqa: F401
    except ImportError as exc:
        raise SystemExit(
            f"error: OpenMMLab is not installed ({exc}); run scripts/setup_openmmlab.sh .venv/bin/python"
        ) from exc
    run(args.table, args.scale, args.data, args.results, args.force, args.conductances)
    return 0


if __name__ == "__main__":
    sys.exit(main())
