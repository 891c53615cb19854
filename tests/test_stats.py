"""Confidence intervals against scipy, and `compare` on synthetic records with a known difference."""

import numpy as np
import pytest
from scipy import stats
from test_bench_results import make_record

from benchmarks.__main__ import main
from benchmarks.compare import PaperClaim, compare
from benchmarks.results import Metric, load, write_record
from benchmarks.stats import paired_difference, seeds_needed, t_interval


@pytest.mark.parametrize("n", [2, 5, 10, 30])
def test_t_interval_matches_scipy(n):
    values = np.random.default_rng(n).normal(3.0, 1.5, n)
    low, high = stats.t.interval(0.95, n - 1, loc=values.mean(), scale=stats.sem(values))
    got = t_interval(values.tolist())
    assert got.mean == pytest.approx(values.mean()) and got.n == n
    assert (got.low, got.high) == pytest.approx((low, high), rel=1e-12)


def test_paired_difference_is_the_t_interval_of_per_seed_differences():
    a = {0: 1.0, 1: 2.5, 2: 0.5, 3: 4.0}
    b = {0: 0.2, 1: 1.0, 2: 1.5, 3: 2.0, 9: 7.0}  # seed 9 has no partner: dropped
    diffs = [a[s] - b[s] for s in range(4)]
    res = stats.ttest_rel([a[s] for s in range(4)], [b[s] for s in range(4)])
    ci = res.confidence_interval(0.95)
    got = paired_difference(a, b)
    assert got.mean == pytest.approx(np.mean(diffs)) and (got.low, got.high) == pytest.approx(
        (ci.low, ci.high)
    )


def test_seeds_needed_is_the_smallest_n_with_that_half_width():
    n = seeds_needed(1.0, 0.5)
    half = lambda k: stats.t.ppf(0.975, k - 1) / np.sqrt(k)  # noqa: E731
    assert half(n) <= 0.5 < half(n - 1)


def _store(tmp_path, gaps: dict[str, list[float]]):
    for method, values in gaps.items():
        for seed, gap in enumerate(values):
            record = make_record(f"{method}-s{seed}", method=method, seed=seed)
            record.metrics["gap_top1"] = Metric(gap)
            write_record(tmp_path, record)
    return load("table1", "smoke", tmp_path)


def test_compare_detects_one_point_at_ten_seeds(tmp_path):
    rng = np.random.default_rng(0)
    base = rng.normal(2.0, 1.0, 10)  # seed-to-seed spread shared by both methods (same float model)
    frame = _store(tmp_path, {"mine": (base + 1.0 + rng.normal(0, 0.2, 10)).tolist(), "lloyd": base.tolist()})
    (found,) = compare(frame, "mine", ["lloyd"])
    assert found.diff.n == 10 and found.diff.resolved and 0.7 < found.diff.mean < 1.3
    assert found.verdict().startswith("mine's gap is larger than lloyd's by")


def test_compare_says_not_detectable_when_there_is_no_difference(tmp_path, capsys):
    rng = np.random.default_rng(1)
    base = rng.normal(2.0, 1.0, 10)
    frame = _store(tmp_path, {"mine": (base + rng.normal(0, 0.5, 10)).tolist(), "lloyd": base.tolist()})
    (found,) = compare(frame, "mine", ["lloyd"])
    assert (
        not found.diff.resolved
        and "no difference between mine and lloyd detectable at n=10" in found.verdict()
    )
    mine = frame[frame.method == "mine"].sort_values("seed")["gap_top1"].to_numpy()
    diffs = mine - base
    half = stats.t.ppf(0.975, 9) * diffs.std(ddof=1) / np.sqrt(10)
    assert f"a difference beyond ±{half:.2f} pt would have been detected" in found.verdict()
    args = ["compare", "table1", "--scale", "smoke", "--method", "mine", "--against", "lloyd"]
    assert main([*args, "--results", str(tmp_path), "--out", str(tmp_path / "out")]) == 0
    assert "no difference between mine and lloyd" in capsys.readouterr().out
    assert (tmp_path / "out" / "smoke" / "compare_table1_mine.csv").is_file()
    assert main([*args[:-1], "nope", "--results", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("error: no records of nope")
    assert main([*args[:-1], "mine", "--results", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("error: mine compared with itself")


def test_compare_says_how_many_seeds_a_noisy_pair_needs(tmp_path):
    frame = _store(tmp_path, {"mine": [1.0, 3.0, 2.0], "lloyd": [2.0, 1.0, 2.5]})
    (found,) = compare(frame, "mine", ["lloyd"])
    need = seeds_needed(float(np.std([-1.0, 2.0, -0.5], ddof=1)), 0.5)
    assert need > 3 and f"about {need} seeds would resolve 0.5 pt" in found.verdict()


def test_paper_claim_verdicts_come_from_the_records(tmp_path):
    frame = _store(tmp_path, {"lloyd": [1.0, 1.2, 0.9, 1.1], "uniform": [3.0, 3.1, 2.8, 3.3]})
    holds = PaperClaim("lloyd < uniform", {"method": "lloyd"}, {"method": "uniform"})
    assert holds.verdict(frame).startswith("lloyd < uniform: yes, by 2.00 pt")
    assert (
        PaperClaim("uniform < lloyd", {"method": "uniform"}, {"method": "lloyd"})
        .verdict(frame)
        .startswith("uniform < lloyd: no, the opposite, by 2.00 pt")
    )
    assert "not measured" in PaperClaim("x", {"method": "log2"}, {"method": "lloyd"}).verdict(frame)
