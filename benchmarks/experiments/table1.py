"""Table 1: ResNet-20 on CIFAR-10, 3 and 4 levels, Lloyd with and without 1% noise, and the baselines."""

from benchmarks.experiments import Cell, Recipe, Row, Schedule, Setup, expand, register_experiment

# Paper: fine-tune a pretrained float ResNet-20 for 200 epochs, lr 0.1 scaled by 0.1, 0.1, 0.5 at epochs
# 80, 120, 160, T = 1.5; SGD momentum 0.9, weight decay 1e-4, batch 128 as He et al. (2016).
PAPER = Recipe(
    epochs=200,
    batch_size=128,
    lr=0.1,
    momentum=0.9,
    weight_decay=1e-4,
    schedule=Schedule(milestones=((80, 0.1), (120, 0.1), (160, 0.5))),
    refit_threshold=1.5,
)
# The float model: a user-supplied checkpoint (e.g. akamaster's resnet20 .th), else He et al.'s recipe:
# 64k iterations at batch 128 (182 epochs), lr 0.1 divided by 10 at 32k and 48k iterations.
HE_2016 = Recipe(
    epochs=182,
    batch_size=128,
    lr=0.1,
    weight_decay=1e-4,
    schedule=Schedule(milestones=((91, 0.1), (136, 0.1))),
)
SETUPS = {
    "paper": Setup({"resnet20": "resnet20"}, "cifar10", PAPER, fp_recipe=HE_2016, trials=10),
    "proxy": Setup(
        {"resnet20": "resnet20_narrow"},
        "digits16-noise30",
        Recipe(
            epochs=6,
            batch_size=64,
            lr=0.02,
            weight_decay=1e-4,
            schedule=Schedule(milestones=((3, 0.2), (5, 0.2))),
            refit_threshold=1.5,
        ),
        fp_recipe=Recipe(
            epochs=20,
            batch_size=64,
            lr=0.1,
            weight_decay=1e-4,
            schedule=Schedule(milestones=((10, 0.1), (15, 0.1))),
        ),
        trials=5,
    ),
    "smoke": Setup(
        {"resnet20": "resnet20_narrow"},
        "digits8",
        Recipe(epochs=1, batch_size=64, lr=0.02, refit_threshold=1.5),
        fp_recipe=Recipe(epochs=2, batch_size=64, lr=0.1),
        trials=2,
        max_batches=2,
    ),
}
# Footnote marks: TTQ * and LQ-Net * keep first/last float, APoT + uses 8-bit, the rest quantize all.
ROWS = [
    Row("ttq", 3, "fp"),
    Row("hefan", 3),
    Row("lqnet", 4, "fp"),
    Row("apot", 4, "8bit"),
    *(Row(method, levels) for levels in (3, 4) for method in ("uniform", "log2")),
    *(Row("lloyd", levels, noise=noise) for levels in (3, 4) for noise in (0.0, 0.01)),
]


@register_experiment("table1")
def cells(scale: str) -> list[Cell]:
    return expand("table1", SETUPS[scale], ROWS)
