"""Table 3: ResNet-18b / ResNet-50b on ImageNet, top-1/top-5 gap (%) at 3, 4 and 8 levels."""

from benchmarks.compare import PaperClaim
from tables.render import Column, Row, TableSpec

_COLUMNS = tuple(
    Column(f"{short} {levels}L", ("gap_top1", "gap_top5"), {"arch": arch, "levels": levels}, digits=2)
    for short, arch in (("R18", "resnet18b"), ("R50", "resnet50b"))
    for levels in (3, 4, 8)
)


def _row(label: str, method: str | None, first_last: str = "quantize") -> Row:
    if method is None:
        return Row(label)
    return Row(label, {"method": method, "first_last": first_last, "noise_train": 0.0})


def _cell(method: str, arch: str, levels: int) -> dict:
    return {"method": method, "arch": arch, "levels": levels, "first_last": "quantize", "noise_train": 0.0}


CLAIMS = (
    *(
        PaperClaim(f"{a} < {b} at {short} {v}L (every layer)", _cell(a, arch, v), _cell(b, arch, v))
        for short, arch in (("R18", "resnet18b"), ("R50", "resnet50b"))
        for v in (3, 4)
        for a, b in (("lloyd", "uniform"), ("uniform", "log2"))
    ),
    *(
        PaperClaim(f"lloyd {hi}L < {lo}L at {short}", _cell("lloyd", arch, hi), _cell("lloyd", arch, lo))
        for short, arch in (("R18", "resnet18b"), ("R50", "resnet50b"))
        for lo, hi in ((3, 4), (4, 8))
    ),
)

SPEC = TableSpec(
    name="table3",
    title="Table 3: ImageNet, top-1/top-5 gap (%), ResNet-18b and ResNet-50b",
    experiment="table3",
    columns=_COLUMNS,
    rows=(
        _row("TTQ-B * (Zhu et al. 2016)", "ttq", "fp"),
        _row("ABC-Net * (Lin et al. 2017)", None),
        _row("LQ-Net * (Zhang et al. 2018)", "lqnet", "fp"),
        _row("Jung * (Jung et al. 2019) (QIL)", None),
        _row("He & Fan (2019) *", "hefan", "fp"),
        _row("He & Fan (2019)", "hefan"),
        _row("Yang et al. (2019) *", None),
        _row("Uniform * (not in the paper)", "uniform", "fp"),
        _row("Uniform (not in the paper)", "uniform"),
        _row("Log2 * (not in the paper)", "log2", "fp"),
        _row("Log2 (not in the paper)", "log2"),
        _row("Ours *", "lloyd", "fp"),
        _row("Ours", "lloyd"),
        Row(
            "Full precision top-1/top-5 (accuracy, not gap)",
            {"method": "lloyd", "first_last": "quantize", "noise_train": 0.0},
            metrics=("fp_top1", "fp_top5"),
        ),
    ),
    claims=CLAIMS,
    notes=(
        "Log2 at 3 levels is the same grid as uniform ({-s, 0, s}, MSE-optimal s): equal by construction.",
        "* first and last layer full precision; no mark: every layer quantized.",
        "Gap = FP - quantized accuracy (top-1/top-5), percentage points; negative: quantized beats float.",
        "ABC-Net, QIL and Yang et al. are quoted only (not implemented here).",
    ),
)
