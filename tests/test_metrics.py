"""The metric-name grammar (benchmarks/metrics.py): every key the store and the specs hold reads back to
itself, a key outside the grammar is an error naming it, and the readers' questions have one answer."""

import dataclasses
from pathlib import Path

import pandas as pd
import pytest

from benchmarks.__main__ import main
from benchmarks.backends import gap_metrics, ptq_metrics
from benchmarks.backends.torch_loop import METRICS as TORCH_METRICS
from benchmarks.compare import primary_metric
from benchmarks.experiments.table4 import METRICS as VOC_METRICS
from benchmarks.experiments.table5 import METRICS as ADE_METRICS
from benchmarks.metrics import GRAMMAR, MetricName, clean_of, control_gap_of, fp_of, gap_of, ptq_of
from benchmarks.results import Metric, load_records
from benchmarks.stats import MARGIN, MARGINS, margin_for
from tables.render import load_spec

SPECS = sorted(p.stem for p in (Path(__file__).parent.parent / "tables" / "specs").glob("*.py"))
SPECS.remove("__init__")


def _round_trip(key: str) -> MetricName:
    name = MetricName.parse(key)
    assert name.key == key and MetricName.parse(name.key) == name
    return name


def test_every_key_of_a_smoke_store_reads_back(tmp_path):
    """The records the smallest smoke run writes (Table 2's TWN cell: values, fp, gaps, PTQ) round-trip."""
    assert (
        main(
            [
                "run",
                "table2",
                "--scale",
                "smoke",
                "--methods",
                "twn",
                "--results",
                str(tmp_path),
                "--no-progress",
            ]
        )
        == 0
    )
    keys = {k for r in load_records(tmp_path) for k in [*r.metrics, *(k for p in r.sweep for k in p.metrics)]}
    assert {"top1", fp_of("top1"), gap_of("top1"), ptq_of("top1"), gap_of("top1", "ptq")} <= keys
    for key in keys:
        _round_trip(key)


@pytest.mark.parametrize(
    "names", [TORCH_METRICS, [n for n, _, _ in VOC_METRICS + ADE_METRICS], ["cos", "nn10"]], ids=str
)
def test_every_key_a_backend_builds_reads_back(names):
    """What the torch loop, the OpenMMLab and the sentence backends write, from their metric names."""
    for base in names:
        keys = [
            *gap_metrics(base, 90.0, Metric(80.0, 1.0, 3)),
            *ptq_metrics(base, 90.0, 70.0),
            clean_of(base),
        ]
        parsed = [_round_trip(k) for k in keys]
        assert {n.base for n in parsed} == {base}
        assert [n.headline for n in parsed] == [False, False, True, False, False, False]


@pytest.mark.parametrize("spec", SPECS)
def test_every_key_a_table_spec_names_reads_back(spec):
    table = load_spec(spec)
    keys = {m for c in table.columns for m in c.metrics} | {c.metric for c in table.claims}
    for row in table.rows:
        overrides = row.metrics.values() if isinstance(row.metrics, dict) else [row.metrics or ()]
        keys |= {m for ms in overrides for m in ms}
    for key in keys:
        _round_trip(key)


def test_fields_spell_the_keys_stored_today():
    assert [fp_of("top1"), gap_of("mAP"), ptq_of("nn10"), gap_of("cos", "ptq")] == [
        "fp_top1",
        "gap_mAP",
        "ptq_nn10",
        "gap_ptq_cos",
    ]
    assert [clean_of("mIoU"), control_gap_of("top5")] == ["mIoU_clean", "gap_vs_control_top5"]
    assert MetricName.parse("weights_quantized") == MetricName("weights_quantized")
    assert [MetricName.parse(k).subject for k in ("gap_top1", "gap_ptq_top1", "gap_vs_control_top1")] == [
        "top1",
        "ptq_top1",
        "vs_control_top1",
    ]


@pytest.mark.parametrize(
    "key",
    ["", "gap_", "fp_ptq_top1", "gap_gap_top1", "gap_vs_control_x_clean", "ptq_top1_clean", "top1_std"]
    + ["top1_n", "noisy/top1", "top-1", "1top", "top1__x", "gap_vs_control_ptq_top1", "fp_vs_control_top1"],
)
def test_a_key_outside_the_grammar_is_an_error_naming_it(key):
    with pytest.raises(ValueError) as error:
        MetricName.parse(key)
    assert repr(key) in str(error.value) and GRAMMAR in str(error.value)


@pytest.mark.parametrize(
    "fields",
    [
        {"kind": "fp", "phase": "ptq"},
        {"kind": "value", "against": "control"},
        {"kind": "gap", "phase": "ptq", "against": "control"},
        {"kind": "gap", "clean": True},
        {"kind": "value", "phase": "ptq", "clean": True},
    ],
)
def test_no_name_for_a_combination_the_grammar_lacks(fields):
    with pytest.raises(ValueError):
        MetricName("top1", **fields)


def test_a_name_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        MetricName("top1").base = "top5"  # type: ignore[misc]


def test_primary_metric_is_the_headline_gap():
    columns = ["gap_ptq_top1", "gap_vs_control_top1", "gap_mAP", "mAP", "gap_top1", "fp_top1"]
    frame = pd.DataFrame({c: [1.0] for k in columns for c in (k, f"{k}_std", f"{k}_n")} | {"seed": [0]})
    assert primary_metric(frame) == "gap_top1"
    assert primary_metric(frame.drop(columns=["gap_top1"])) == "gap_mAP"
    with pytest.raises(ValueError, match="no gap metric"):
        primary_metric(frame[[c for c in frame if c.startswith(("gap_ptq", "gap_vs", "seed"))]])


@pytest.mark.parametrize("base", sorted(MARGINS))
def test_every_metric_of_a_base_has_its_margin(base):
    keys = [base, fp_of(base), gap_of(base), ptq_of(base), gap_of(base, "ptq"), clean_of(base)]
    assert [margin_for(k) for k in keys] == [MARGINS[base]] * len(keys)
    assert margin_for(gap_of("top1")) == MARGIN
