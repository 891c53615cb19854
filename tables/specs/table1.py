"""Table 1: ResNet-20 on CIFAR-10 at 3 and 4 levels (accuracy %)."""

from benchmarks.compare import PaperClaim
from benchmarks.experiments import CONTROL
from cacim_core import quantizers
from tables.render import Column, Row, TableSpec


def _cell(method: str, levels: int, first_last: str = "quantize", noise: float = 0.0) -> dict:
    return {"method": method, "levels": levels, "first_last": first_last, "noise_train": noise}


def _row(label: str, method: str, levels: int, first_last: str = "quantize", noise: float = 0.0) -> Row:
    match = {"arch": "resnet20", **_cell(method, levels, first_last, noise)}
    used = quantizers.build(method, levels).effective_levels
    return Row(label, match, labels={"Levels": str(levels) if used == levels else f"{levels} ({used} used)"})


#: log2 at 3 levels fits the same grid as uniform ({-s, 0, s}, MSE-optimal s), so "lloyd < log2 at 3L" is
#: "lloyd < uniform at 3L" again: stated, not tested twice (a family must not count one test two times).
SAME_GRID = "log2 3L fits uniform 3L's grid {-s, 0, s} (same s), so this is the uniform 3L claim again"

CLAIMS = (
    *(
        PaperClaim(
            f"lloyd < {b} at {v}L",
            _cell("lloyd", v),
            _cell(b, v),
            construction=SAME_GRID if (b, v) == ("log2", 3) else "",
        )
        for v in (3, 4)
        for b in ("uniform", "log2")
    ),
    PaperClaim("lloyd 3L < TTQ* 3L (TTQ keeps first/last float)", _cell("lloyd", 3), _cell("ttq", 3, "fp")),
    PaperClaim("lloyd 3L < He & Fan 3L", _cell("lloyd", 3), _cell("hefan", 3)),
    PaperClaim("lloyd 4L < 3L", _cell("lloyd", 4), _cell("lloyd", 3)),
)

SPEC = TableSpec(
    name="table1",
    title="Table 1: ResNet-20, CIFAR-10, 3 and 4 levels (accuracy %)",
    experiment="table1",
    columns=(
        Column("Levels", static=True),
        Column("FP", ("fp_top1",)),
        Column("Quan", ("top1",)),
        Column("Gap", ("gap_top1",)),
        Column("Gap vs control", ("gap_vs_control_top1",)),
    ),
    rows=(
        _row("TTQ (Zhu et al. 2016) *", "ttq", 3, "fp"),
        _row("He & Fan (2019)", "hefan", 3),
        _row("Uniform 3L (not in the paper)", "uniform", 3),
        _row("Log2 3L (not in the paper)", "log2", 3),
        _row("Ours 3L", "lloyd", 3),
        _row("Ours 3L w/ 1% noise", "lloyd", 3, noise=0.01),
        _row("LQ-Net (Zhang et al. 2018) *", "lqnet", 4, "fp"),
        _row("Li et al. (2020) (APoT) +", "apot", 4, "8bit"),
        _row("Uniform 4L (not in the paper)", "uniform", 4),
        _row("Log2 4L (not in the paper)", "log2", 4),
        _row("Ours 4L", "lloyd", 4),
        _row("Ours 4L w/ 1% noise", "lloyd", 4, noise=0.01),
        Row(
            "Control: float, fine-tuned, no quantizer (not in the paper)",
            {"arch": "resnet20", "method": CONTROL},
            labels={"Levels": "float"},
        ),
    ),
    claims=CLAIMS,
    notes=(
        "Log2 at 3 levels is the same grid as uniform ({-s, 0, s}, MSE-optimal s): equal by construction.",
        "* first and last layer full precision; + first and last 8-bit; no mark: every layer quantized.",
        "Noise rows: trained and evaluated with relative weight noise delta = 1% (mean ± std over draws).",
        "Gap = FP - quantized accuracy, in percentage points (smaller is better): FP is the pretrained "
        "float model (the paper's gap); Gap vs control = the control arm's accuracy (the same float model "
        "fine-tuned with the same recipe, no quantizer) - quantized: quantization alone.",
    ),
)
