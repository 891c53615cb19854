"""The transformer track: all-MiniLM-L6-v2, every Linear and Embedding weight quantized; sentence-embedding
fidelity to the float model (cosine x 100, nearest-neighbour agreement@10 in %), PTQ and distilled."""

from benchmarks.compare import PaperClaim
from benchmarks.experiments.transformers import ARCH, LEVELS, METHODS, NATS
from tables.render import Column, Row, TableSpec
from tables.specs.table1 import SAME_GRID


def _cell(method: str, levels: int, first_last: str = "quantize", noise: float = 0.0) -> dict:
    return {"arch": ARCH, "method": method, "levels": levels, "first_last": first_last, "noise_train": noise}


def _row(label: str, method: str, levels: int, first_last: str = "quantize", noise: float = 0.0) -> Row:
    return Row(label, _cell(method, levels, first_last, noise), labels={"Levels": str(levels)})


MARKS = {"quantize": "", "fp": " *", "8bit": " +"}
ROWS = (
    *(_row(f"{m} {v}L", m, v) for v in LEVELS for m in METHODS[v]),
    *(_row(f"{m} {v}L, NATS {NATS:.0%}", m, v, noise=NATS) for v in (3, 8) for m in ("lloyd", "uniform")),
    *(_row(f"lloyd 3L{MARKS[p]}", "lloyd", 3, first_last=p) for p in ("fp", "8bit")),
)
#: our hypotheses on this model (not the paper's claims): GDQ keeps the embeddings closer than the grids,
#: and more levels help; tested on the fine-tuned neighbour agreement, paired by seed
CLAIMS = (
    *(
        PaperClaim(
            f"lloyd < {b} at {v}L (NN@10 gap)",
            _cell("lloyd", v),
            _cell(b, v),
            metric="gap_nn10",
            construction=SAME_GRID if (b, v) == ("log2", 3) else "",
        )
        for v in LEVELS
        for b in ("uniform", "log2")
    ),
    PaperClaim("lloyd 8L < 3L (NN@10 gap)", _cell("lloyd", 8), _cell("lloyd", 3), metric="gap_nn10"),
)

SPEC = TableSpec(
    name="transformers",
    title="Transformer track: all-MiniLM-L6-v2, sentence-embedding fidelity to the float model",
    experiment="transformers",
    columns=(
        Column("Levels", static=True),
        Column("PTQ cosine", ("ptq_cos",)),
        Column("PTQ NN@10 (%)", ("ptq_nn10",), digits=1),
        Column("Fine-tuned cosine", ("cos",)),
        Column("Fine-tuned NN@10 (%)", ("nn10",), digits=1),
        Column("Gap NN@10", ("gap_nn10",), digits=1),
        Column("Weights quantized (%)", ("weights_quantized",), digits=1),
    ),
    rows=ROWS,
    claims=CLAIMS,
    margin=1.0,
    paper=False,
    notes=(
        "Cosine: 100 x mean cosine similarity of each retrieval sentence's quantized embedding to its float "
        "embedding (mean pooling + L2 normalisation, as sentence-transformers). NN@10: for each retrieval "
        "sentence, the share of its 10 nearest neighbours under the float embeddings that are also among its "
        "10 nearest under the quantized ones. The float model scores 100 on both; Gap = 100 - quantized.",
        "PTQ: right after quantize_model, noise-free. Fine-tuned: after the short distillation to the float "
        "embeddings (1 - cosine, straight-through, NATS noise in training), evaluated under the row's noise "
        "(NATS rows: mean over seeded chips at that delta).",
        "Every Linear (attention query/key/value/output, feed-forward) and Embedding (word, position, "
        "token type) weight is quantized; left float: the 13 LayerNorms (element-wise, digital) and the "
        "Linear biases (added digitally). BERT's pooler is not loaded (sentence-transformers never uses it).",
        "* word embeddings and the last feed-forward layer (first and last by execution order) kept float; "
        "+ those two at 8 bits (255 levels, noise-free); no mark: every layer quantized.",
        "Seeds draw the distillation/retrieval split of the corpus, the batches and the noise; the "
        "pretrained float model is the same at every seed. Claims are our hypotheses for this model, not "
        "the paper's.",
        "No control arm: distilling the float model to itself would change nothing.",
    ),
)
