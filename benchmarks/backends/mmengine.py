"""The mmengine backend (Tables 4/5, Figure 4(b) SSD): mmengine's Runner on a packaged-config-derived
config with CacimHook, nothing forked.

Algorithm 1's flow (cells with init="pretrained"): the float model is trained once per (model, data, float
schedule, seed) and cached in the store; each quantized cell fine-tunes from it (`load_from`) with the hook
and is tested (with `trials` noise draws when noisy). Cells with init="init_cfg" (Table 4's one-stage
reading) have no float phase: the hook quantizes the config's own init (its pretrained backbone) from the
first iteration, and their records carry no FP or gap. Every phase checkpoints into its own work_dir, and an
interrupted one resumes there through mmengine's own `resume`. At smoke/proxy scale DATA is where the
generated VOC-format dataset is written (default .cache/voc_shapes/<scale>); at paper scale DATA must hold
a real VOCdevkit/, and the configs' pretrained backbones (init_cfg `Pretrained`, mmseg's `pretrained`) are
read from --weights (default DATA/weights): nothing is downloaded.
"""

from __future__ import annotations

import copy
import numbers
import time
from pathlib import Path
from typing import Any

from benchmarks.backends import Context, Outcome, SetupError, gap_metrics, produce_once, trained_float_key
from benchmarks.experiments import Cell, MMRecipe
from benchmarks.metrics import clean_of
from benchmarks.openmmlab.voc_shapes import write_voc_shapes
from benchmarks.results import (
    Metric,
    fingerprint_files,
    float_path,
    load_checkpoint,
    save_checkpoint,
    work_dir,
)

CONFIGS = Path(__file__).resolve().parents[1] / "openmmlab" / "configs"
PACKAGED_ROOT = "data/VOCdevkit"  # the packaged configs' data_root prefix
# What a real VOCdevkit must hold, by the datasets the paper-scale cells name.
REQUIRED = {
    "voc0712": (
        "VOC2007/ImageSets/Main/trainval.txt",
        "VOC2007/ImageSets/Main/test.txt",
        "VOC2012/ImageSets/Main/trainval.txt",
    ),
    "voc12aug": (
        "VOC2012/ImageSets/Segmentation/train.txt",
        "VOC2012/ImageSets/Segmentation/aug.txt",
        "VOC2012/ImageSets/Segmentation/val.txt",
    ),
}


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


def pretrained_file(name: str, weights: Path | None) -> str:
    """A config's pretrained checkpoint as a local file: the path itself, else its file name under `weights`
    (`open-mmlab://vgg16_caffe` -> vgg16_caffe-292e1171.pth); nothing is downloaded here."""
    if Path(name).is_file():
        return name
    scheme, _, rest = name.partition("://")
    url = name
    if scheme in ("open-mmlab", "openmmlab"):
        from mmengine.runner.checkpoint import get_deprecated_model_names, get_external_models

        rest = get_deprecated_model_names().get(rest, rest)
        url = get_external_models().get(rest, name)
    file = url.rstrip("/").rsplit("/", 1)[-1]
    if weights is not None and (weights / file).is_file():
        return str(weights / file)
    where = f"in {weights}" if weights is not None else "in a folder and pass it as --weights DIR"
    raise SetupError(
        f"pretrained checkpoint {name} is not a local file and is not downloaded here: put {file} {where} "
        "(--weights DIR or WEIGHTS=DIR; default DATA/weights)"
    )


def localize_pretrained(model_cfg: Any, weights: Path | None, keep: bool) -> None:
    """Point the model's pretrained inits (init_cfg type Pretrained, mmseg's `pretrained`) at local files;
    `keep=False` drops them instead: a phase that loads a whole checkpoint needs neither file nor download."""

    def init_cfg(value: Any) -> Any:
        if isinstance(value, list):
            kept = [v for v in map(init_cfg, value) if v is not None]
            return kept or None
        if isinstance(value, dict) and value.get("type") == "Pretrained":
            return {**value, "checkpoint": pretrained_file(value["checkpoint"], weights)} if keep else None
        return value

    _rewrite(model_cfg, "init_cfg", init_cfg)
    _rewrite(
        model_cfg,
        "pretrained",
        lambda v: (pretrained_file(v, weights) if keep else None) if isinstance(v, str) else v,
    )


def build_config(
    recipe: MMRecipe,
    data_root: Path,
    work: Path,
    seed: int,
    hook: dict | None,
    weights: Path | None = None,
    from_checkpoint: bool = False,
):
    """The recipe's config with its schedule, the data location, checkpoints for resume, the hook, and its
    pretrained backbone from `weights` (none when the phase starts `from_checkpoint`, a float model)."""
    from mmengine.config import Config

    cfg = Config.fromfile(str(CONFIGS / recipe.config))
    localize_pretrained(cfg.model, weights, keep=not from_checkpoint)
    template = next((h for h in cfg.custom_hooks if h.get("type") == "CacimHook"), {})
    cfg.merge_from_dict(copy.deepcopy(recipe.phase))
    cfg.merge_from_dict(copy.deepcopy(recipe.extra))
    new_root = str(data_root.resolve() / "VOCdevkit")
    for loader in ("train_dataloader", "val_dataloader", "test_dataloader"):
        _rewrite(cfg[loader], "data_root", lambda v: v.replace(PACKAGED_ROOT, new_root).rstrip("/"))
    # The packaged dataloaders hold copies of the base pipelines: push the config's own ones down.
    _rewrite(cfg.train_dataloader, "pipeline", lambda _: copy.deepcopy(cfg.train_pipeline))
    test_pipeline = cfg.tta_pipeline if recipe.tta else cfg.test_pipeline
    _rewrite(cfg.test_dataloader, "pipeline", lambda _: copy.deepcopy(test_pipeline))
    cfg.val_dataloader = cfg.val_evaluator = cfg.val_cfg = None
    cfg.work_dir = str(work)
    cfg.experiment_name = f"{work.name}_{time.strftime('%Y%m%d_%H%M%S')}"
    cfg.randomness = {"seed": seed}
    iters = cfg.train_cfg.max_iters
    cfg.default_hooks.checkpoint = dict(
        type="CheckpointHook", by_epoch=False, interval=max(1, iters // 10), max_keep_ckpts=1, save_last=True
    )
    hooks = [h for h in cfg.custom_hooks if h.get("type") != "CacimHook"]
    cfg.custom_hooks = hooks + ([{**template, **hook}] if hook else [])
    if (work / "last_checkpoint").is_file():  # an interrupted phase: mmengine resumes from its checkpoint
        cfg.resume, cfg.load_from = True, None
    return cfg


def _train_and_test(cfg, tta: bool) -> tuple[Any, dict[str, float], bool]:
    from mmengine.registry import MODELS
    from mmengine.runner import Runner

    resumed = bool(cfg.get("resume"))
    runner = Runner.from_cfg(cfg)
    runner.train()
    if tta:
        runner.model = MODELS.build({**cfg.tta_model, "module": runner.model})
    metrics = runner.test()
    # numbers.Real: mmseg reports numpy float32, which is not a Python float.
    return runner, {k: float(v) for k, v in metrics.items() if isinstance(v, numbers.Real)}, resumed


def _percent(recipe: MMRecipe, metrics: dict[str, float]) -> dict[str, float]:
    return {name: metrics[key] * factor for name, key, factor in recipe.metrics}


def _drop_checkpoints(work: Path) -> None:
    """A finished phase keeps its logs (mmengine's visualizer may still write there), not its weights."""
    for path in work.glob("*.pth"):
        path.unlink(missing_ok=True)
    (work / "last_checkpoint").unlink(missing_ok=True)


INITS = ("pretrained", "init_cfg")  # from the cached float model (Algorithm 1) | from the config's own init


class MMEngine:
    name = "mmengine"
    supports = frozenset({"options", "measured_eval"})
    hints = {
        "amp": "OpenMMLab cells train as their config says (mixed precision: AmpOptimWrapper in the config)",
        "channels_last": "OpenMMLab cells train as their config says; drop --channels-last",
        "reset_head": "it applies to classification cells only; drop --reset-head",
        "distributed": "OpenMMLab cells run one process each here; launch mmengine's own DDP instead",
        "sweep": "it evaluates each cell under its own noise only (sweeps run in the torch loop)",
    }

    def __init__(self) -> None:
        self.data: dict[tuple[str, str], tuple[Path, str]] = {}

    def _data(self, cell: Cell, ctx: Context) -> tuple[Path, str]:
        """(folder holding VOCdevkit/, dataset fingerprint); writes the generated dataset if needed."""
        key = (cell.dataset, ctx.scale)
        if key in self.data:
            return self.data[key]
        if cell.recipe.data is not None:
            root = ctx.data or Path(f".cache/voc_shapes/{ctx.scale}")
            self.data[key] = (root, write_voc_shapes(root, cell.recipe.data))
        elif ctx.data is None:
            raise SetupError(f"{cell.experiment} at scale {ctx.scale} needs DATA=<folder holding VOCdevkit/>")
        else:
            lists = [ctx.data / "VOCdevkit" / p for p in REQUIRED[cell.dataset]]
            missing = [str(p) for p in lists if not p.is_file()]
            if missing:
                raise SetupError(f"{', '.join(missing)} missing: point DATA at a full PASCAL VOC copy")
            self.data[key] = (ctx.data, fingerprint_files(lists))
        return self.data[key]

    def prepare(self, cells: list[Cell], ctx: Context) -> None:
        try:
            import mmdet  # noqa: F401
            import mmseg  # noqa: F401
        except ImportError as exc:
            raise SetupError(f"OpenMMLab is not installed ({exc}): run `make setup`") from exc
        from mmengine.config import Config

        checked: set[str] = set()
        for cell in cells:
            self._data(cell, ctx)
            if cell.init not in INITS or (cell.init == "pretrained") != (cell.fp_recipe is not None):
                raise SetupError(
                    f"cell {cell.id}: init {cell.init!r} with fp_recipe {cell.fp_recipe is not None}; an "
                    "mmengine cell is init='pretrained' with a float recipe or init='init_cfg' without one"
                )
            # the phase that starts from the config's init: the cell itself, or a float model not cached yet
            first = cell.recipe if cell.init == "init_cfg" else cell.fp_recipe
            if cell.init == "pretrained" and self._float_cache(cell, ctx).is_file():
                first = None
            if isinstance(first, MMRecipe) and first.config not in checked:
                checked.add(first.config)  # a missing pretrained backbone fails before any training
                localize_pretrained(Config.fromfile(str(CONFIGS / first.config)).model, ctx.weights, True)

    def _float_cache(self, cell: Cell, ctx: Context) -> Path:
        """Where the float model of this (model, data, float recipe, seed) is cached: its float key."""
        _, fingerprint = self._data(cell, ctx)
        return float_path(ctx.results, ctx.scale, trained_float_key(cell, fingerprint))

    def float_model(self, cell: Cell, ctx: Context) -> tuple[Path, dict[str, float]]:
        """Train (or reuse, or resume) the float model: (checkpoint path, float metrics in percent)."""
        data_root, _ = self._data(cell, ctx)
        cache = self._float_cache(cell, ctx)

        def produce() -> None:
            work = cache.with_name(f"{cache.stem}-work")
            cfg = build_config(cell.fp_recipe, data_root, work, cell.seed, None, ctx.weights)
            runner, metrics, _ = _train_and_test(cfg, cell.fp_recipe.tta)
            from cacim_core.integrations.mmengine import unwrap

            state = {k: v.cpu() for k, v in unwrap(runner.model).state_dict().items()}
            save_checkpoint(cache, {"state_dict": state, "metrics": _percent(cell.fp_recipe, metrics)})
            _drop_checkpoints(work)

        produce_once(cache, ctx, produce)
        cached = load_checkpoint(cache)
        return cache, cached["metrics"]

    def finetune_and_evaluate(self, cell: Cell, ctx: Context) -> Outcome:
        from cacim_core.integrations.mmengine import CacimHook, unwrap
        from cacim_core.training import refit_counts

        start = time.time()
        data_root, fingerprint = self._data(cell, ctx)
        from_float = cell.init == "pretrained"
        ckpt, fp = self.float_model(cell, ctx) if from_float else (None, None)
        recipe: MMRecipe = cell.recipe  # type: ignore[assignment]
        noisy = cell.noise_eval > 0 or bool(cell.noise_eval_file)
        hook: dict[str, Any] = dict(
            type="CacimHook",
            method=cell.method,
            levels=cell.levels,
            noise=cell.noise_train,
            first_last=cell.first_last,
            trials=cell.trials if noisy else 0,
            seed=cell.seed,
        )
        if cell.options:  # the cell's extra QuantConfig fields (adc_bits, tile, ...), as the torch loop's
            hook["quant"] = dict(cell.options)
        if cell.noise_eval_file:
            hook["eval_noise_file"] = cell.noise_eval_file
        else:
            hook["eval_noise"] = cell.noise_eval
        work = work_dir(ctx.results, cell.experiment, ctx.scale, cell.id)
        cfg = build_config(recipe, data_root, work, cell.seed, hook, ctx.weights, from_checkpoint=from_float)
        if ckpt is not None and not cfg.get("resume"):
            cfg.load_from = str(ckpt)
        runner, raw, resumed = _train_and_test(cfg, recipe.tta)
        hook_obj = next(h for h in runner.hooks if isinstance(h, CacimHook))
        clean = _percent(recipe, raw)
        metrics: dict[str, Metric] = {}
        for name, key, factor in recipe.metrics:
            if noisy:
                result = Metric(
                    raw[f"noisy/{key}"] * factor, raw[f"noisy/{key}_std"] * factor, hook_obj.trials
                )
            else:
                result = Metric(clean[name])
            metrics.update(gap_metrics(name, fp[name], result) if fp is not None else {name: result})
            metrics[clean_of(name)] = Metric(clean[name])
        refits = refit_counts(unwrap(runner.model))
        return Outcome(metrics, fingerprint, time.time() - start, resumed, refits)  # checkpoints: `discard`

    def discard(self, cell: Cell, ctx: Context) -> None:
        """Drop a finished cell's checkpoints (its logs stay): called once its record is durable."""
        _drop_checkpoints(work_dir(ctx.results, cell.experiment, ctx.scale, cell.id))


BACKEND = MMEngine()
