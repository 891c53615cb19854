"""Table 3's layout, measured right after conversion (before fine-tuning): the quantizers alone."""

from dataclasses import replace

from tables.specs.table3 import SPEC as TABLE3

SPEC = replace(
    TABLE3,
    name="table3_ptq",
    title="Table 3 before fine-tuning: top-1/top-5 gap (%) right after quantize_model (no paper numbers)",
    columns=tuple(replace(c, metrics=("gap_ptq_top1", "gap_ptq_top5")) for c in TABLE3.columns),
    reference="/dev/null",
    notes=(
        *TABLE3.notes[:2],
        "The paper reports no such numbers; this view isolates each quantizer's error from fine-tuning.",
    ),
)
