"""Table 3's ResNet-50b 3-level cells with BatchNorm statistics re-estimated after the fine-tune
(experiment table3_bn): the diagnosis of the proxy's seed spread, beside table3's own cells."""

from dataclasses import replace

from tables.specs.table3 import CLAIMS
from tables.specs.table3 import SPEC as TABLE3

SPEC = replace(
    TABLE3,
    name="table3_bn",
    experiment="table3_bn",
    title="Table 3, ResNet-50b 3L, BatchNorm statistics re-estimated after the fine-tune: top-1/top-5 "
    "gap (%) (a proxy diagnosis, no paper numbers)",
    columns=tuple(c for c in TABLE3.columns if c.header == "R50 3L"),
    rows=tuple(r for r in TABLE3.rows if r.match and r.match["method"] in ("lloyd", "uniform")),
    claims=tuple(c for c in CLAIMS if c.text == "lloyd < uniform at R50 3L (every layer)"),
    reference="/dev/null",
    notes=(
        "Same float models, data, seeds and fine-tune as table3; after the fine-tune every BatchNorm's "
        "running statistics are recomputed over 8 unaugmented training batches of 128 "
        "(Recipe.bn_reestimate), "
        "noise-free, before evaluation. table3 evaluates with the statistics the 2-epoch fine-tune left.",
        *TABLE3.notes[1:3],
    ),
)
