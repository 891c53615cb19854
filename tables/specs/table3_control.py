"""Table 3's layout with the gap against the control arm: quantization alone, the fine-tune taken out."""

from dataclasses import replace

from tables.specs.table3 import SPEC as TABLE3

SPEC = replace(
    TABLE3,
    name="table3_control",
    title="Table 3 vs the control arm: top-1/top-5 gap (%) against the float model fine-tuned with the same "
    "recipe (no paper numbers)",
    columns=tuple(replace(c, metrics=("gap_vs_control_top1", "gap_vs_control_top5")) for c in TABLE3.columns),
    rows=tuple(r for r in TABLE3.rows if r.match and r.metrics is None),
    claims=(),
    reference="/dev/null",
    notes=(
        *TABLE3.notes[:2],
        "Gap vs control = the control arm's accuracy (the seed's float model fine-tuned with the quantized "
        "cells' recipe and no quantizer) - quantized accuracy; table3 shows the paper's gap (pretrained "
        "float - quantized). A claim's paired difference is the same under both (a seed's two arms share "
        "its float and control models), so the claims are tested once, in table3.",
    ),
)
