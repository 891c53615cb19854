"""Table 4: SSD300 (VGG16) on PASCAL VOC 07+12 -> VOC07 test at 3, 4 and 8 levels, with and without 1% NATS.

Runs in mmengine's Runner with CacimHook (benchmarks/backends/mmengine.py), config
benchmarks/openmmlab/configs/<config>. The paper says only that all methods "were fine-tuned on the same
pre-trained VGG16 network" with one 120k-iteration schedule, which reads two ways (docs/openmmlab.md):

- two-stage (`table4`, the default): the float SSD is trained once from the ImageNet VGG16 backbone (120k
  iterations at paper scale), then each quantized cell fine-tunes from it (Algorithm 1) for another
  schedule of the same length.
- one-stage (`table4_one_stage`, `make table4 SSD_READING=one-stage`): no float SSD; each quantized cell
  trains with CacimHook from the first iteration, from the config's own init (the ImageNet VGG16 backbone
  of its `init_cfg` at paper scale, a local file under --weights), for the float phase's schedule. At
  smoke/proxy scale there is no pretrained VGG16: the float phase starts from random init, so one-stage
  cells start from that same random init (the seed's) and train the float phase's schedule (3000 proxy
  steps) quantized. Without a float model these records have no FP or gap metrics.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from benchmarks.experiments import Cell, MMRecipe, Row, Setup, expand, register_experiment
from benchmarks.openmmlab.voc_shapes import PROXY, SMOKE

METRICS = (("mAP", "pascal_voc/mAP", 100.0),)
SHAPES = "voc-shapes (generated)"
# Smoke runs only check that every stage works end to end: a few iterations, small batches, no workers.
SMOKE_EXTRA = {
    "train_dataloader": {"batch_size": 2, "num_workers": 0, "persistent_workers": False},
    "test_dataloader": {"batch_size": 1, "num_workers": 0, "persistent_workers": False},
}


def multistep(iters: int, lr: float, warmup: int) -> dict[str, Any]:
    """SSD's schedule shape from the paper: lr for 2/3 of the iterations, then /10 and /100 for 1/6 each."""
    return {
        "train_cfg": {"max_iters": iters},
        "optim_wrapper": {"optimizer": {"lr": lr}},
        "param_scheduler": [
            {"type": "LinearLR", "start_factor": 0.01, "by_epoch": False, "begin": 0, "end": warmup},
            {
                "type": "MultiStepLR",
                "by_epoch": False,
                "begin": 0,
                "end": iters,
                "milestones": [iters * 2 // 3, iters * 5 // 6],
                "gamma": 0.1,
            },
        ],
    }


def _setup(
    config: str, model: str, dataset: str, fp: dict, quant: dict, trials: int, data, extra=None
) -> Setup:
    def recipe(phase: dict) -> MMRecipe:
        return MMRecipe(config, phase, METRICS, data, extra or {})

    return Setup({"ssd300": model}, dataset, recipe(quant), recipe(fp), trials)


SLIM = ("ssd300_slim_vocshapes_cacim.py", "ssd300-vgg16 x1/8 width", SHAPES)  # config, model, dataset
SETUPS = {
    "smoke": _setup(*SLIM, multistep(4, 1e-3, 2), multistep(2, 1e-4, 1), 2, SMOKE, SMOKE_EXTRA),
    # AdamW from random init (see the proxy config): 3000 float steps, 300 per quantized cell; 3 seeds,
    # each its own float SSD, so every number has a 95% CI over seeds (`SEEDS=0`: one run, 1/3 the time)
    "proxy": replace(
        _setup(*SLIM, multistep(3000, 1e-3, 100), multistep(300, 1e-4, 10), 5, PROXY), seeds=(0, 1, 2)
    ),
    "paper": _setup(
        "ssd300_vgg16_voc0712_cacim.py",
        "ssd300-vgg16",
        "voc0712",
        multistep(120000, 1e-3, 500),
        multistep(120000, 1e-3, 500),
        5,
        None,
    ),
}
ROWS = [Row("lloyd", levels, noise=noise) for levels in (3, 4, 8) for noise in (0.0, 0.01)]


def one_stage(setup: Setup) -> Setup:
    """No float phase: the quantized cells train with the float phase's recipe, from the config's init."""
    return replace(setup, recipe=setup.fp_recipe, fp_recipe=None)


@register_experiment("table4")
def cells(scale: str) -> list[Cell]:
    return expand("table4", SETUPS[scale], ROWS)


@register_experiment("table4_one_stage")
def one_stage_cells(scale: str) -> list[Cell]:
    rows = [replace(row, init="init_cfg") for row in ROWS]
    return expand("table4_one_stage", one_stage(SETUPS[scale]), rows)
