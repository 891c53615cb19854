import csv

from test_bench_results import make_record

from benchmarks.results import write_record
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
        rec = make_record(f"s{seed}", experiment="toy", scale="proxy", top1=top1)
        rec["seed"] = seed
        write_record(results, rec)
    noisy = make_record("noisy", experiment="toy", scale="proxy", top1=70.0)
    noisy.update(method="uniform", trials=4)
    noisy["metrics"].update(top1_std=0.5)
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
    assert "| Method | Levels | Quan (paper, quoted) | Quan (ours) |" in text
    assert "| Ours | 3 | 91.06 | 82.00 ± 2.83 [proxy, n=2 seeds] |" in text  # std over seeds, ddof=1
    assert "| Uniform |  | - | 70.00 ± 0.50 [proxy, n=4 draws] |" in text
    assert "| LAT |  | - | not implemented here |" in text
    assert r"82.00 $\pm$ 2.83" in tex.read_text()
    rows = list(csv.DictReader(out_csv.open()))
    quoted = [r for r in rows if r["source"] == "quoted" and r["row"] == "Ours"][0]
    assert quoted["scale"] == "paper" and quoted["text"] == "91.06"
    measured = [r for r in rows if r["source"] == "measured" and r["row"] == "Ours"][0]
    assert measured["scale"] == "proxy" and measured["n"] == "2" and measured["value"] == "82.0000"


def test_all_specs_render_without_results(tmp_path):
    for name in ("table1", "table2", "table3", "table3_ptq", "delta"):
        md, _, _ = render(load_spec(name), "smoke", tmp_path / "none", tmp_path / "out")
        assert "not run" in md.read_text()
