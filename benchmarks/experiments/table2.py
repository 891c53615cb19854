"""Table 2: Hou & Kwok's VGG-like net on CIFAR-10, ternary: Lloyd from scratch and fine-tuned, TWN, TTQ."""

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

# Paper (as Hou & Kwok 2018): Adam, batch 50, lr 0.002 halved every 15 epochs, 200 epochs, T = 0.1,
# squared hinge loss; mean ± std over five trials. Hou & Kwok's data pipeline (cifar10_hou): global contrast
# normalisation + ZCA whitening, no augmentation, 45k/5k train/validation, and the test accuracy of the
# last epoch whose validation accuracy is at least the best so far.
PAPER = Recipe(
    epochs=200,
    batch_size=50,
    lr=0.002,
    optimizer="adam",
    schedule=Schedule(every=(15, 15, 0.5)),
    refit_threshold=0.1,
    loss="squared_hinge",
)
# Proxy and smoke: the paper's recipe, shorter, for the float model and the fine-tuning alike.
PROXY = replace(PAPER, epochs=8, schedule=Schedule(every=(3, 3, 0.5)))
SMOKE = replace(PAPER, epochs=1, schedule=Schedule())
SETUPS = {
    "paper": Setup(
        {"vgg_like": "vgg_like"}, "cifar10_hou", PAPER, fp_recipe=PAPER, trials=10, seeds=(0, 1, 2, 3, 4)
    ),
    "proxy": Setup(
        {"vgg_like": "vgg_like_narrow"},
        "digits16-noise30",
        PROXY,
        fp_recipe=PROXY,
        trials=5,
        seeds=(0, 1, 2, 3, 4),
    ),
    "smoke": Setup(
        {"vgg_like": "vgg_like_narrow"},
        "digits8",
        SMOKE,
        fp_recipe=SMOKE,
        trials=2,
        seeds=(0, 1),
        max_batches=2,
    ),
}
# TWN is trained from scratch as in Li et al. (2016); TTQ fine-tunes a float model as in Zhu et al. (2016).
ROWS = [
    Row("lloyd", 3, init="scratch"),
    Row("lloyd", 3, init="pretrained"),
    Row("twn", 3, init="scratch", all_seeds=False),
    Row("ttq", 3, init="pretrained", all_seeds=False),
    CONTROL_ROW,
]


@register_experiment("table2")
def cells(scale: str) -> list[Cell]:
    return expand("table2", SETUPS[scale], ROWS)
