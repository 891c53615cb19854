"""Table 3's ResNet-50b 3-level cells with the BatchNorm statistics the fine-tune left (experiment
table3_nobn, the paper's protocol): the diagnosis behind the proxy's re-estimation, beside table3's cells."""

from dataclasses import replace

from tables.specs.table3 import CLAIMS
from tables.specs.table3 import SPEC as TABLE3

SPEC = replace(
    TABLE3,
    name="table3_nobn",
    experiment="table3_nobn",
    title="Table 3, ResNet-50b 3L, BatchNorm statistics as the fine-tune left them: top-1/top-5 gap (%) "
    "(a proxy diagnosis, no paper numbers)",
    columns=tuple(c for c in TABLE3.columns if c.header == "R50 3L"),
    rows=tuple(r for r in TABLE3.rows if r.match and r.match["method"] in ("lloyd", "uniform")),
    claims=tuple(c for c in CLAIMS if c.text == "lloyd < uniform at R50 3L (every layer)"),
    reference="/dev/null",
    notes=(
        "Same float models, data, seeds and fine-tune as table3, evaluated with the BatchNorm running "
        "statistics the 2-epoch fine-tune left (the paper's protocol); table3 recomputes them over 8 "
        "unaugmented training batches of 128 (Recipe.bn_reestimate), noise-free, before evaluation.",
        *TABLE3.notes[1:3],
    ),
)
