"""Table 3: ResNet-18b / ResNet-50b on ImageNet at 3, 4, 8 levels; every layer quantized and the * variant."""

from dataclasses import replace

from benchmarks.experiments import (
    CONTROL_ROW,
    Cell,
    Recipe,
    Row,
    Schedule,
    Setup,
    expand,
    register_experiment,
)
from benchmarks.experiments.table1 import PROXY_FP, PROXY_FT

# Paper: torchvision pretrained weights; SGD momentum 0.9, batch 64, weight decay 1e-4, up to 90 epochs;
# lr 1e-4, 2e-5 at epoch 30, 4e-6 at epoch 40, then x0.5 every 5 epochs; T = 0.1.
PAPER = Recipe(
    epochs=90,
    batch_size=64,
    lr=1e-4,
    momentum=0.9,
    weight_decay=1e-4,
    schedule=Schedule(milestones=((30, 0.2), (40, 0.2)), every=(45, 5, 0.5)),
    refit_threshold=0.1,
)
# Proxy (ours): synth32 with Table 1's proxy recipes (T = 0.1 as the paper's Table 3); 3 seeds, each its own
# float model. After the 2-epoch fine-tune every BatchNorm's running statistics are re-estimated over 8
# unaugmented training batches (not the paper's protocol): without it ResNet-50b's 3-4 level seeds spread
# 4-22 pt from stale statistics alone (table3_nobn, the paper's protocol on those cells). Measured (`make
# table3`, 2 workers, this 2-core CPU, empty store, 2026-12-04): channels_last (make's default) 53 min 50 s
# wall, 91.2 CPU-minutes with the fixed second stage (each tested claim's arms to 8 seeds, 60 cells); NCHW
# 60 min 25 s, 114 CPU-minutes. Each run decided 8 of the 10 tested claims, not the same 8 (README).
PROXY = replace(PROXY_FT, refit_threshold=0.1, bn_reestimate=8)
SETUPS = {
    "paper": Setup({"resnet18b": "resnet18b", "resnet50b": "resnet50b"}, "imagenet", PAPER, None, trials=10),
    "proxy": Setup(
        {"resnet18b": "resnet18b_proxy", "resnet50b": "resnet50b_proxy"},
        "synth32",
        PROXY,
        PROXY_FP,
        trials=5,
        seeds=(0, 1, 2),
    ),
    "smoke": Setup(
        {"resnet18b": "resnet18b_narrow", "resnet50b": "resnet50b_narrow"},
        "digits8",
        Recipe(epochs=1, batch_size=64, lr=0.01),
        Recipe(epochs=1, batch_size=64, lr=0.1),
        trials=2,
        max_batches=2,
    ),
}
# Baselines where the paper quotes them and we implement the quantizer (same footnote policies).
ROWS = [
    *(
        Row(method, levels, first_last)
        for method in ("lloyd", "uniform", "log2")
        for first_last in ("quantize", "fp")
        for levels in (3, 4, 8)
    ),
    Row("ttq", 3, "fp", archs=("resnet18b",)),
    Row("hefan", 3, "fp", archs=("resnet18b",)),
    Row("hefan", 3),
    Row("lqnet", 4, "fp"),
    Row("lqnet", 8, "fp", archs=("resnet18b",)),
    CONTROL_ROW,
]


@register_experiment("table3")
def cells(scale: str) -> list[Cell]:
    return expand("table3", SETUPS[scale], ROWS)


#: ResNet-50b's 3-level rows, where the proxy's seeds spread most without BN re-estimation, and the control
NOBN_ROWS = [
    *(Row(m, 3, fl, archs=("resnet50b",)) for m in ("lloyd", "uniform") for fl in ("quantize", "fp")),
    replace(CONTROL_ROW, archs=("resnet50b",)),
]


@register_experiment("table3_nobn")
def nobn_cells(scale: str) -> list[Cell]:
    """Table 3's ResNet-50b 3-level rows evaluated with the BatchNorm statistics the 2-epoch fine-tune left
    (the paper's protocol, `bn_reestimate=0`); float models, data and seeds are table3's. The diagnosis
    behind the proxy's re-estimation: these cells' seeds spread 4-14 pt, table3's 1-3."""
    if scale == "paper":
        raise ValueError("table3_nobn is a proxy-recipe diagnosis: run it with --scale proxy or smoke")
    setup = SETUPS[scale]
    return expand("table3_nobn", replace(setup, recipe=replace(setup.recipe, bn_reestimate=0)), NOBN_ROWS)
