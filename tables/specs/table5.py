"""Table 5: PSPNet (ResNet-50) on PASCAL VOC 2012 val, mIoU and pixel accuracy (%) by weight levels."""

from tables.render import Column, Row, TableSpec

SPEC = TableSpec(
    name="table5",
    title="Table 5: PSPNet (ResNet-50-D8), PASCAL VOC 2012 val, multi-scale test, mIoU / pAcc (%)",
    experiment="table5",
    columns=(Column("mIoU", ("mIoU",), digits=1), Column("pAcc", ("pAcc",), digits=1)),
    rows=(
        *(Row(str(levels), {"method": "lloyd", "levels": levels}) for levels in (3, 4, 8)),
        Row("float", {"method": "lloyd", "levels": 3}, metrics={"mIoU": ("fp_mIoU",), "pAcc": ("fp_pAcc",)}),
    ),
    notes=(
        "Every conv layer quantized (Lloyd / GDQ), fine-tuned from the float model (Algorithm 1).",
        "Multi-scale test (paper scale): mmseg's packaged tta_pipeline, scales 0.5-1.75 and flips, averaged.",
        "Proxy scale: PSPNet with a ResNet-18-D8 backbone at 1/4 width, random init, on the generated "
        "VOC-format shapes dataset, tested at 0.75/1.0/1.25 of its training scale with flips: its numbers "
        "are not comparable to the paper's, only their ordering is.",
    ),
)
