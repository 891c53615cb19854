import csv
import statistics

import pandas as pd
import pytest
from scipy import stats
from test_bench_results import make_record

from benchmarks.compare import PaperClaim
from benchmarks.results import Metric, write_record
from tables.render import HERE, Column, Row, TableSpec, load_reference, load_spec, render


def test_reference_csvs_hold_the_papers_numbers():
    t1 = load_reference(HERE / "reference" / "table1.csv")
    assert t1[("Ours 3L w/ 1% noise", "Quan")] == "91.08 ± 0.19"
    t3 = load_reference(HERE / "reference" / "table3.csv")
    assert (
        t3[("Ours", "R50 8L")] == "-0.3/-0.3" and t3[("LQ-Net * (Zhang et al. 2018)", "R18 8L")] == "1.0/0.7"
    )
    t2 = load_reference(HERE / "reference" / "table2.csv")
    assert t2[("Ours (from scratch)", "Accuracy")] == "89.67 ± 0.14"


def test_render_marks_quoted_and_measured(tmp_path):
    results = tmp_path / "results"
    for seed, top1 in enumerate([80.0, 84.0]):
        write_record(results, make_record(f"s{seed}", experiment="toy", scale="proxy", top1=top1, seed=seed))
    for seed, top1 in enumerate([70.0, 72.0]):  # the same seeds as Ours: a table rests on common seeds
        noisy = make_record(f"noisy{seed}", experiment="toy", scale="proxy", method="uniform", seed=seed)
        noisy.metrics["top1"] = Metric(top1, 0.5, 4)
        write_record(results, noisy)
    ref = tmp_path / "toy.csv"
    ref.write_text("row,column,value\nOurs,Quan,91.06\n")
    spec = TableSpec(
        name="toy",
        title="Toy",
        experiment="toy",
        reference=str(ref),
        columns=(Column("Levels", static=True), Column("Quan", ("top1",))),
        rows=(
            Row("Ours", {"method": "lloyd"}, {"Levels": "3"}),
            Row("Uniform", {"method": "uniform"}),
            Row("LAT"),
        ),
    )
    md, tex, out_csv = render(spec, "proxy", results, tmp_path / "out")
    text = md.read_text()
    cells = [[c.strip() for c in line.split("|")[1:-1]] for line in text.splitlines() if line.startswith("|")]
    assert cells[0] == ["Method", "Levels", "Quan (paper, quoted)", "Quan (ours)"]
    # mean over seeds ± the 95% t interval: t(0.975, 1) * s / sqrt(2), s = sd of (80, 84)
    half = stats.t.ppf(0.975, 1) * statistics.stdev([80.0, 84.0]) / 2**0.5
    assert cells[2] == ["Ours", "3", "91.06", f"82.00 ± {half:.2f} [proxy, 95% CI, n=2 seeds]"]
    assert cells[3] == ["Uniform", "", "-", f"71.00 ± {half / 2:.2f} [proxy, 95% CI, n=2 seeds]"]
    assert cells[4] == ["LAT", "", "-", "not implemented here"]
    assert rf"82.00 $\pm$ {half:.2f}" in tex.read_text()
    rows = list(csv.DictReader(out_csv.open()))
    quoted = [r for r in rows if r["source"] == "quoted" and r["row"] == "Ours"][0]
    assert quoted["scale"] == "paper" and quoted["text"] == "91.06"
    measured = [r for r in rows if r["source"] == "measured" and r["row"] == "Ours"][0]
    assert measured["scale"] == "proxy" and measured["n_seeds"] == "2" and measured["mean"] == "82.0000"
    assert float(measured["ci95_half"]) == pytest.approx(half, abs=1e-4)
    assert md.parent.name == "proxy"  # outputs are per scale


def test_all_specs_render_without_results(tmp_path):
    for name in ("table1", "table2", "table3", "table3_ptq", "delta"):
        md, _, _ = render(load_spec(name), "smoke", tmp_path / "none", tmp_path / "out")
        assert "not run" in md.read_text()


def test_resolution_line_is_the_median_t_half_width_per_gap_metric(tmp_path):
    """Top-5's tight intervals must not flatter top-1's: one median per metric, each against scipy."""
    results = tmp_path / "results"
    top1 = {"lloyd": [2.0, 3.0, 7.0], "uniform": [3.0, 3.5, 4.5], "log2": [1.0, 5.0, 2.0]}
    for method, gaps in top1.items():
        for seed, gap in enumerate(gaps):
            record = make_record(f"{method}{seed}", experiment="toy", scale="proxy", seed=seed, method=method)
            record.metrics.update(gap_top1=Metric(gap), gap_top5=Metric(gap / 10))
            write_record(results, record)
    spec = TableSpec(
        name="toy",
        title="Toy",
        experiment="toy",
        reference=None,
        columns=(Column("Gap", ("gap_top1", "gap_top5")),),
        rows=tuple(Row(m, {"method": m}) for m in top1),
    )
    text = render(spec, "proxy", results, tmp_path / "out")[0].read_text()

    def half(values):
        return stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / len(values) ** 0.5

    want1 = statistics.median(half(g) for g in top1.values())
    want5 = statistics.median(half([x / 10 for x in g]) for g in top1.values())
    line = next(x for x in text.splitlines() if "Resolution" in x)
    assert f"top1 {want1:.2f} pt over 3 cells; top5 {want5:.2f} pt over 3 cells" in line


def test_a_row_overrides_each_columns_metric_by_header(tmp_path):
    """A float row beside two metric columns (Table 5: mIoU, pAcc) shows each column's own float metric."""
    results = tmp_path / "results"
    record = make_record("s0", experiment="toy", scale="proxy")
    record.metrics.update(fp_top1=Metric(91.0), fp_top5=Metric(99.0))
    write_record(results, record)
    spec = TableSpec(
        name="toy",
        title="Toy",
        experiment="toy",
        reference=str(tmp_path / "none.csv"),
        columns=(Column("Top-1", ("top1",)), Column("Top-5", ("top5",))),
        rows=(Row("float", {"method": "lloyd"}, metrics={"Top-1": ("fp_top1",), "Top-5": ("fp_top5",)}),),
    )
    md, _, _ = render(spec, "proxy", results, tmp_path / "out")
    (line,) = [line for line in md.read_text().splitlines() if line.startswith("| float")]
    cells = [c.strip() for c in line.split("|")[1:-1]]
    assert cells == ["float", "-", "91.00 [proxy, 1 run]", "-", "99.00 [proxy, 1 run]"]


def test_cli_checks_every_table_and_record_before_writing(tmp_path, capsys):
    """An unknown spec or an unreadable record: one line, exit 2, no table written (none half-done)."""
    from tables.render import main

    out = tmp_path / "out"
    assert main(["table1", "nope", "--scale", "smoke", "--results", str(tmp_path), "--out", str(out)]) == 2
    assert "no table spec 'nope'" in capsys.readouterr().err and not out.exists()
    bad = tmp_path / "table1" / "smoke" / "x.json"
    bad.parent.mkdir(parents=True)
    bad.write_text('{"schema": 1}')
    assert main(["table1", "--scale", "smoke", "--results", str(tmp_path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "unreadable record" in err and "\n" not in err and not out.exists()
    assert main(["table1", "--scale", "smoke", "--results", str(tmp_path / "none"), "--out", str(out)]) == 0


def test_cells_and_claims_rest_on_the_same_seeds(tmp_path):
    """A seed only some cells have is left out of every cell and claim, and the table says which."""
    results = tmp_path / "results"
    for method, gaps in {"lloyd": [1.0, 1.5, 0.5], "uniform": [3.0, 3.2]}.items():
        for seed, gap in enumerate(gaps):
            record = make_record(f"{method}{seed}", experiment="toy", scale="proxy", seed=seed, method=method)
            record.metrics["gap_top1"] = Metric(gap)
            write_record(results, record)
    spec = TableSpec(
        name="toy",
        title="Toy",
        experiment="toy",
        reference=None,
        columns=(Column("Gap", ("gap_top1",)),),
        rows=tuple(Row(m, {"method": m}) for m in ("lloyd", "uniform")),
        claims=(PaperClaim("lloyd < uniform", {"method": "lloyd"}, {"method": "uniform"}),),
    )
    text = render(spec, "proxy", results, tmp_path / "out")[0].read_text()
    assert "Seeds: 2 left out (not every cell has them" in text and "claims use seeds 0, 1" in text
    half = stats.t.ppf(0.975, 1) * statistics.stdev([1.0, 1.5]) / 2**0.5
    assert f"1.25 ± {half:.2f} [proxy, 95% CI, n=2 seeds]" in text  # seed 2's 0.5 is not averaged in
    assert "Claim: lloyd < uniform: " in text and "n=2 seeds" in text.split("Claim: lloyd < uniform")[1]
    assert "Claims: family of 1 test, Holm-adjusted" in text


def test_a_duplicate_cell_at_one_seed_fails_the_render_in_one_line(tmp_path, capsys):
    from tables.render import main

    results = tmp_path / "results"
    for name, options in (("a", {}), ("b", {"adc_bits": 6})):  # two cells the selection cannot tell apart
        record = make_record(
            name, experiment="table1", scale="smoke", seed=0, method="lloyd", options=options
        )
        write_record(results, record)
    out = tmp_path / "out"
    assert main(["table1", "--scale", "smoke", "--results", str(results), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "matches 2 records at seed 0" in err and "\n" not in err and not out.exists()


def test_sensitivity_labels_a_claim_whose_verdict_moves_with_the_recipe(tmp_path):
    from tables.sensitivity import sensitivity

    claims = (
        PaperClaim("lloyd < uniform", {"method": "lloyd"}, {"method": "uniform"}),
        PaperClaim("lloyd < log2", {"method": "lloyd"}, {"method": "log2"}),
    )
    spec = TableSpec(
        name="toy",
        title="Toy",
        experiment="toy",
        reference=None,
        columns=(Column("Gap", ("gap_top1",)),),
        rows=tuple(Row(m, {"method": m}) for m in ("lloyd", "uniform", "log2")),
        claims=claims,
    )
    frames = {}
    # the log2 arm beats lloyd by 2 pt in the main recipe and ties it (within 0.05) in the long one
    for label, log2 in (("main", [3.0, 3.3, 2.8, 3.2]), ("long", [1.01, 1.22, 0.88, 1.1])):
        for method, gaps in {
            "lloyd": [1.0, 1.2, 0.9, 1.1],
            "uniform": [3.0, 3.1, 2.8, 3.3],
            "log2": log2,
        }.items():
            for seed, gap in enumerate(gaps):
                record = make_record(
                    f"{method}{seed}", experiment=label, scale="proxy", seed=seed, method=method
                )
                record.metrics["gap_top1"] = Metric(gap)
                write_record(tmp_path / label, record)
        from benchmarks.results import load

        frames[label] = load(label, "proxy", tmp_path / label)
    table, lines = sensitivity(spec, frames, 0.5)
    assert list(table.loc["lloyd < uniform"]) == ["yes", "yes"]
    assert list(table.loc["lloyd < log2"]) == ["yes", "no"]
    assert lines[0] == "lloyd < uniform: the same under 2 variants (yes)"
    assert lines[1] == "lloyd < log2: recipe-dependent (main: yes, long: no)"


def half_of(a: dict, b: dict) -> float:
    d = [a[s] - b[s] for s in a]
    return stats.t.ppf(0.975, len(d) - 1) * statistics.stdev(d) / len(d) ** 0.5


def test_gap_vs_control_is_the_seeds_control_minus_the_cell(tmp_path):
    """Each quantized cell's gap against its own seed's control cell (fine-tuned float, no quantizer),
    beside the paper's gap; the control's own row says it is the control; a second control at a seed fails."""
    from benchmarks.experiments import CONTROL
    from benchmarks.results import load
    from tables.render import control_notes, with_control_gaps

    control = {0: 93.0, 1: 92.0, 2: 94.5}
    lloyd = {0: 90.0, 1: 90.5, 2: 91.0}
    for seed in control:
        write_record(
            tmp_path,
            make_record(f"float-s{seed}", seed=seed, method=CONTROL, levels=0, top1=control[seed]),
        )
        write_record(tmp_path, make_record(f"lloyd-s{seed}", seed=seed, top1=lloyd[seed]))
    frame = with_control_gaps(load("table1", "smoke", tmp_path))
    quantized = frame[frame["method"] == "lloyd"].sort_values("seed")
    assert list(quantized["gap_vs_control_top1"]) == pytest.approx([control[s] - lloyd[s] for s in (0, 1, 2)])
    assert list(quantized["gap_top1"]) == pytest.approx([95.0 - lloyd[s] for s in (0, 1, 2)])
    assert frame[frame["method"] == CONTROL]["gap_vs_control_top1"].isna().all()
    change = [control[s] - 95.0 for s in (0, 1, 2)]
    half = stats.t.ppf(0.975, 2) * statistics.stdev(change) / 3**0.5
    (note,) = control_notes(frame)
    assert f"moved its top-1 by {statistics.mean(change):+.2f} ± {half:.2f} (95% CI, n=3 seeds)" in note

    spec = TableSpec(
        name="toy",
        title="Toy",
        experiment="table1",
        reference=None,
        columns=(Column("Gap", ("gap_top1",)), Column("Gap vs control", ("gap_vs_control_top1",))),
        rows=(Row("Ours", {"method": "lloyd"}), Row("Control", {"method": CONTROL})),
    )
    md = render(spec, "smoke", tmp_path, tmp_path / "out")[0].read_text()
    mean = statistics.mean(control[s] - lloyd[s] for s in (0, 1, 2))
    rows = {line.split("|")[1].strip(): line for line in md.splitlines() if line.startswith("| ")}
    expected = f"{mean:.2f} ± {half_of(control, lloyd):.2f} [smoke, 95% CI, n=3 seeds]"
    assert rows["Ours"].rstrip(" |").endswith(expected)
    assert rows["Control"].rstrip(" |").endswith("(the control)")

    write_record(tmp_path, make_record("float-s0-again", seed=0, method=CONTROL, levels=0, top1=93.0))
    # the store's validator names both files before any table sees them
    with pytest.raises(ValueError, match="float-s0-again.json: seed 0 of the same cell as float-s0.json"):
        with_control_gaps(load("table1", "smoke", tmp_path))


def _seeded(tmp_path, method: str, top1: dict, ptq: dict, fp: dict) -> None:
    for seed in top1:
        metrics = {
            "top1": Metric(top1[seed]),
            "ptq_top1": Metric(ptq[seed]),
            "fp_top1": Metric(fp[seed]),
            "gap_top1": Metric(fp[seed] - top1[seed]),
        }
        write_record(tmp_path, make_record(f"{method}-s{seed}", seed=seed, method=method, metrics=metrics))


def test_a_seed_spread_over_the_limit_gets_a_diagnostic_note(tmp_path):
    """A cell whose seeds range more than SPREAD_LIMIT is named with its per-seed values and what the
    farthest seed's float model / quantized start / fine-tune says; a tight cell gets no note."""
    from benchmarks.results import load
    from tables.render import SPREAD_LIMIT, spread_notes

    fp = dict.fromkeys(range(4), 93.0)
    _seeded(tmp_path, "collapse", {0: 89.5, 1: 90.4, 2: 18.2, 3: 89.2}, {0: 20, 1: 21, 2: 20.5, 3: 20}, fp)
    _seeded(tmp_path, "badstart", {0: 89.5, 1: 90.4, 2: 80.0, 3: 89.2}, {0: 60, 1: 61, 2: 40, 3: 60}, fp)
    _seeded(
        tmp_path,
        "badfloat",
        {0: 89.5, 1: 90.4, 2: 80.0, 3: 89.2},
        {0: 60, 1: 61, 2: 58, 3: 60},
        {**fp, 2: 85.0},
    )
    _seeded(tmp_path, "broad", {0: 84.0, 1: 80.0, 2: 85.5, 3: 81.5}, {0: 14, 1: 15, 2: 16, 3: 14}, fp)
    _seeded(tmp_path, "tight", {0: 89.5, 1: 90.4, 2: 88.0, 3: 89.2}, {0: 20, 1: 21, 2: 20.5, 3: 20}, fp)
    _seeded(tmp_path, "lucky", {0: 80.0, 1: 80.5, 2: 84.5, 3: 80.2}, {0: 10, 1: 10, 2: 10, 3: 10}, fp)
    methods = ("collapse", "badstart", "badfloat", "broad", "tight", "lucky")
    spec = TableSpec(
        name="toy",
        title="Toy",
        experiment="table1",
        columns=(Column("Quan", ("top1",)), Column("Gap", ("gap_top1",))),
        rows=tuple(Row(m, {"method": m}) for m in methods),
    )
    notes = {n.split()[2]: n for n in spread_notes(spec, load("table1", "smoke", tmp_path))}
    assert set(notes) == {"collapse", "badstart", "badfloat", "broad", "lucky"}  # one each, not per column
    assert f"ranges {90.4 - 18.2:.2f} pt over 4 seeds (> {SPREAD_LIMIT:g} pt)" in notes["collapse"]
    assert "s2 18.20" in notes["collapse"] and "fine-tuning lost it" in notes["collapse"]
    assert "quantized start is off the same way (before fine-tuning 40.00" in notes["badstart"]
    assert "float model is off the same way (85.00" in notes["badfloat"]
    assert "no single outlier" in notes["broad"]
    assert "recovered more than theirs" in notes["lucky"] and "lost it" not in notes["lucky"]  # s2 is high
    md = render(spec, "smoke", tmp_path, tmp_path / "out")[0].read_text()
    assert md.count("- Seed spread: ") == 5


def test_a_spread_note_gives_what_the_diagnosis_run_read_for_the_same_seeds(tmp_path):
    """experiments.DIAGNOSES: the same cells rerun under one protocol change; the note under the table adds
    their per-seed values there and the spread (computed here from the diagnosis records)."""
    from benchmarks.results import load
    from tables.render import spread_notes

    fp = dict.fromkeys(range(3), 93.0)
    _seeded(tmp_path, "collapse", {0: 65.3, 1: 79.4, 2: 79.8}, {0: 10, 1: 10, 2: 10}, fp)
    _seeded(tmp_path / "bn", "collapse", {0: 79.8, 1: 82.5, 2: 82.8}, {0: 10, 1: 10, 2: 10}, fp)
    spec = TableSpec(
        name="toy",
        title="Toy",
        experiment="table1",
        columns=(Column("Gap", ("gap_top1",)),),
        rows=(Row("collapse", {"method": "collapse"}),),
    )
    frame = load("table1", "smoke", tmp_path)
    (note,) = spread_notes(spec, frame, ("BN re-estimated", load("table1", "smoke", tmp_path / "bn")))
    assert "s0 65.30" in note and "fine-tuning lost it" in note
    assert note.endswith(
        "With BN re-estimated, the same seeds read s0 79.80, s1 82.50, s2 82.80 "
        f"(spread {82.8 - 79.8:.2f} pt)."
    )
    (alone,) = spread_notes(spec, frame)
    assert "With" not in alone


@pytest.mark.parametrize(
    "match, named",
    [({"method": "lloyd", "firstlast": "fp"}, "'firstlast'"), ({"method": "loyd"}, "unknown method 'loyd'")],
)
def test_a_misspelt_field_or_method_in_a_spec_fails_naming_it(tmp_path, capsys, match, named):
    """A typo in a row's selection was an empty "not run" row; now it is an error naming the field (and the
    known ones), for an empty store as for a full one, through render and through its CLI (one line)."""
    results = tmp_path / "results"
    spec = TableSpec(
        name="toy",
        title="Toy",
        experiment="toy",
        columns=(Column("Quan", ("top1",)),),
        rows=(Row("Ours", match),),
    )
    with pytest.raises(ValueError, match=named) as empty:
        render(spec, "proxy", results, tmp_path / "out")
    assert "first_last" in str(empty.value) or "lloyd" in str(empty.value)  # the known ones are listed
    write_record(results, make_record("s0", experiment="toy", scale="proxy", top1=80.0))
    with pytest.raises(ValueError, match=named):
        render(spec, "proxy", results, tmp_path / "out")
    assert not (tmp_path / "out" / "proxy" / "toy.md").exists()  # nothing half-written


def test_a_table_says_when_its_cells_trained_in_another_arithmetic(tmp_path):
    """Plain fp32 goes unsaid (outputs unchanged); channels_last, or a store mixing two paths (make's
    default changed between stages), is named with its cell counts."""
    from dataclasses import replace

    from tables.render import provenance

    def frame(precisions):
        rows = []
        for i, p in enumerate(precisions):
            r = replace(make_record(f"s{i}", seed=i), precision=p)
            rows.append({**r.__dict__, "cell": r.cell, "refits": 0})  # load() sums a cell's re-fits
        return pd.DataFrame(rows)

    assert not any("arithmetic" in line for line in provenance(frame(["fp32", "fp32"])))
    (line,) = [x for x in provenance(frame(["fp32+channels_last"] * 2)) if "arithmetic" in x]
    assert line == "training arithmetic: fp32+channels_last (2 cells)"
    (line,) = [x for x in provenance(frame(["fp32", "fp32+channels_last", "fp32"])) if "arithmetic" in x]
    assert line.startswith("training arithmetic: fp32 (2 cells), fp32+channels_last (1 cells) (one recipe")
