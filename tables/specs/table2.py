"""Table 2: the VGG-like net of Hou & Kwok (2018) on CIFAR-10, ternary (accuracy %)."""

from benchmarks.experiments import CONTROL
from tables.render import Column, Row, TableSpec

_VGG = {"arch": "vgg_like", "levels": 3, "first_last": "quantize"}

SPEC = TableSpec(
    name="table2",
    title="Table 2: VGG-like, CIFAR-10, 3 levels (accuracy %)",
    experiment="table2",
    columns=(Column("Accuracy", ("top1",)), Column("FP", ("fp_top1",))),
    rows=(
        Row("TWN (Li et al. 2016)", {**_VGG, "method": "twn"}),
        Row("LAT (Hou & Kwok 2018)"),
        Row("TTQ (Zhu et al. 2016)", {**_VGG, "method": "ttq"}),
        Row("Ours (from scratch)", {**_VGG, "method": "lloyd", "init": "scratch"}),
        Row("Ours (fine tuning)", {**_VGG, "method": "lloyd", "init": "pretrained"}),
        Row(
            "Control: float, fine-tuned, no quantizer (not in the paper)",
            {"arch": "vgg_like", "method": CONTROL},
        ),
    ),
    notes=(
        "Ours: mean ± 95% CI over independently trained seeds (the paper: mean ± std over five trials).",
        "FP (paper, quoted) is the caption's 89.62 for every row; a from-scratch row's FP is the float model "
        "trained with the same recipe.",
        "LAT is quoted only: its proximal-Newton training is not implemented here.",
    ),
)
