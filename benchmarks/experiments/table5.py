"""Table 5: PSPNet (ResNet-50-D8) on PASCAL VOC 2012 val, mIoU and pixel accuracy at 3, 4 and 8 levels.

mmengine Runner with CacimHook; multi-scale + flip test (mmseg's tta_pipeline / SegTTAModel).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from benchmarks.experiments import Cell, MMRecipe, Row, Setup, expand, register_experiment
from benchmarks.experiments.table4 import SHAPES, SMOKE_EXTRA
from benchmarks.openmmlab.voc_shapes import PROXY, SMOKE

METRICS = (("mIoU", "mIoU", 1.0), ("pAcc", "aAcc", 1.0))


def poly(iters: int, lr: float) -> dict[str, Any]:
    """PSPNet's schedule from the paper: poly decay with power 0.9."""
    return {
        "train_cfg": {"max_iters": iters},
        "optim_wrapper": {"optimizer": {"lr": lr}},
        "param_scheduler": [
            {"type": "PolyLR", "eta_min": lr / 100, "power": 0.9, "begin": 0, "end": iters, "by_epoch": False}
        ],
    }


def _setup(config: str, model: str, dataset: str, fp: dict, quant: dict, data, extra=None) -> Setup:
    def recipe(phase: dict) -> MMRecipe:
        return MMRecipe(config, phase, METRICS, data, extra or {}, tta=True)

    return Setup({"pspnet": model}, dataset, recipe(quant), recipe(fp), trials=1)


SLIM = ("pspnet_r18-slim_vocshapes_cacim.py", "pspnet-r18-d8 x1/4 width", SHAPES)  # config, model, dataset
SETUPS = {
    "smoke": _setup(*SLIM, poly(4, 1e-2), poly(2, 1e-3), SMOKE, SMOKE_EXTRA),
    # 3 seeds, each its own float PSPNet: every number has a 95% CI over seeds (`SEEDS=0`: one run)
    "proxy": replace(_setup(*SLIM, poly(2000, 1e-2), poly(300, 1e-3), PROXY), seeds=(0, 1, 2)),
    "paper": _setup(
        "pspnet_r50-d8_voc12aug_cacim.py",
        "pspnet-r50-d8",
        "voc12aug",
        poly(20000, 1e-2),
        poly(20000, 1e-2),
        None,
    ),
}
ROWS = [Row("lloyd", levels) for levels in (3, 4, 8)]


@register_experiment("table5")
def cells(scale: str) -> list[Cell]:
    return expand("table5", SETUPS[scale], ROWS)
