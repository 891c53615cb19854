"""Issue 24 item 6: every bad input is one line on stderr naming the fix, exit code 2, and nothing written.

Each case runs the CLI in-process; `{results}`, `{store}`, `{out}` and `{tmp}` in its argv are folders of
the test's tmp_path (`{store}` holds lloyd and ttq records of table1 [smoke] for compare).
"""

from pathlib import Path

import pytest
from test_bench_results import make_record

from benchmarks.__main__ import main
from benchmarks.results import Metric, write_record

SMOKE = ["--scale", "smoke", "--results", "{results}"]
RUN = ["run", "table1", *SMOKE, "--methods", "lloyd", "--seeds", "0", "--no-progress", "--device", "cpu"]
COMPARE = ["compare", "table1", "--scale", "smoke", "--method", "lloyd", "--against", "ttq"]
COMPARE += ["--results", "{store}", "--out", "{out}"]

CASES = {
    "plugin-syntax-error": (
        ["list", "table1", *SMOKE, "--plugin", "{tmp}/bad_syntax.py"],
        "cannot load plugin {tmp}/bad_syntax.py: SyntaxError at line 2: ",
    ),
    "plugin-raises": (
        ["list", "table1", *SMOKE, "--plugin", "{tmp}/bad_raises.py"],
        "cannot load plugin {tmp}/bad_raises.py: RuntimeError: no GPU here; fix the file",
    ),
    "plugin-imports-missing": (
        ["list", "table1", *SMOKE, "--plugin", "{tmp}/bad_import.py"],
        "ModuleNotFoundError: No module named 'no_such_dependency_xyz'; fix the file",
    ),
    "time-negative": ([*RUN, "--launcher", "local", "--time", "-5"], "--time must be > 0 minutes"),
    "time-zero": ([*RUN, "--time", "0"], "--time must be > 0 minutes"),
    "gpus-per-cell-zero": ([*RUN, "--gpus-per-cell", "0"], "--gpus-per-cell must be >= 1"),
    "gpus-per-cell-negative": ([*RUN, "--gpus-per-cell", "-1"], "--gpus-per-cell must be >= 1"),
    "data-is-a-file": ([*RUN, "--data", "{tmp}/a_file"], "--data {tmp}/a_file: not a folder"),
    "data-missing": ([*RUN, "--data", "{tmp}/nowhere"], "--data {tmp}/nowhere: no such folder"),
    "data-missing-table5": (
        ["run", "table5", *SMOKE, "--no-progress", "--data", "{tmp}/nowhere"],
        "--data {tmp}/nowhere: no such folder",
    ),
    "plan-data-is-a-file": (
        ["plan", "table1", *SMOKE, "--data", "{tmp}/a_file"],
        "--data {tmp}/a_file: not a folder",
    ),
    "plan-gpus-zero": (["plan", "table1", *SMOKE, "--gpus", "0"], "--gpus must be >= 1"),
    "plan-gpus-negative": (["plan", "table1", *SMOKE, "--gpus", "-2"], "--gpus must be >= 1"),
    "compare-metric-unknown": (
        [*COMPARE, "--metric", "nosuch"],
        "--metric nosuch: not measured in these records; the store has: fp_top1, gap_top1, top1",
    ),
    "compare-metric-not-a-metric": (
        [*COMPARE, "--metric", "refits"],
        "the store has: fp_top1, gap_top1, top1",
    ),
    "compare-experiment-unknown": (
        ["compare", "nosuch", *COMPARE[2:]],
        "unknown table/experiment 'nosuch'",
    ),
    "seeds-twice": (["list", "table1", *SMOKE, "--seeds", "1,1"], "--seeds lists 1 twice"),
    "seeds-twice-run": ([*RUN, "--seeds", "0,2,0"], "--seeds lists 0 twice"),
    "seeds-negative": (["list", "table1", *SMOKE, "--seeds", "0,-1"], "--seeds must lie in 0..4294967295"),
    "seeds-overflow": (
        ["plan", "table1", *SMOKE, "--seeds", "12345678901234567890"],
        "--seeds must lie in 0..4294967295",
    ),
    "seeds-2**32": (["list", "table1", *SMOKE, "--seeds", str(2**32)], "--seeds must lie in 0..4294967295"),
}


@pytest.fixture
def folders(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "bad_syntax.py").write_text('"""A plugin with a typo."""\ndef fit(:\n    pass\n')
    (tmp_path / "bad_raises.py").write_text('raise RuntimeError("no GPU\\nhere")\n')
    (tmp_path / "bad_import.py").write_text("import no_such_dependency_xyz\n")
    (tmp_path / "a_file").write_text("not a dataset\n")
    store = tmp_path / "store"
    for method in ("lloyd", "ttq"):
        for seed in range(3):
            record = make_record(f"{method}-s{seed}", method=method, seed=seed)
            record.metrics["gap_top1"] = Metric(1.0 + seed)
            write_record(store, record)
    names = ("results", "store", "out")
    return {"tmp": str(tmp_path)} | {name: str(tmp_path / name) for name in names}


@pytest.mark.parametrize(("argv", "phrase"), list(CASES.values()), ids=list(CASES))
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    argv: list[str], phrase: str, folders: dict[str, str], capsys: pytest.CaptureFixture
) -> None:
    stored = sorted(Path(folders["store"]).rglob("*"))
    code = main([arg.format(**folders) for arg in argv])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err and phrase.format(**folders) in err
    for written in (Path(folders["results"]), Path(folders["out"])):
        assert not any(p.is_file() for p in written.rglob("*"))
    assert sorted(Path(folders["store"]).rglob("*")) == stored
