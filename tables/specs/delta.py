"""The noise-level search of section 4: ternary ResNet-18b trained and evaluated with delta = 1..4%."""

from tables.render import Column, Row, TableSpec

SPEC = TableSpec(
    name="delta",
    title="Delta search: ternary ResNet-18b, NATS delta 1..4% (top-1/top-5 gap %, noisy evaluation)",
    experiment="delta",
    columns=(Column("Gap top-1/top-5", ("gap_top1", "gap_top5")), Column("Quan top-1", ("top1",))),
    rows=tuple(
        Row(f"delta = {d}%", {"arch": "resnet18b", "method": "lloyd", "levels": 3, "noise_train": d / 100})
        for d in (1, 2, 3, 4)
    ),
    notes=(
        "The paper reports no significant difference across delta in 1..4% and uses 2% afterwards "
        "(no numbers printed).",
        "Each model is evaluated under the same delta it was trained with (per seed the mean over "
        "noise draws; one seed: ± their std).",
    ),
)
