"""Figures render from a tiny fake results store (schema of the project notes); the conductance parser."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from benchmarks.layers import Layer, load_layer  # noqa: E402
from benchmarks.results import Metric, Record  # noqa: E402
from benchmarks.results import write_record as store_record  # noqa: E402
from cacim_core import QuantConfig, quantize_model, weight_noise  # noqa: E402
from cacim_core.device import ConductanceMap  # noqa: E402
from cacim_core.measured import MeasuredConductances, MeasuredNoise  # noqa: E402
from figures import __main__ as cli  # noqa: E402
from figures import fig2, fig3, fig4, style  # noqa: E402
from figures.context import DEFAULT_CONDUCTANCES, Context  # noqa: E402
from figures.data import make_example_conductances  # noqa: E402
from figures.store import error_bars  # noqa: E402

SCALE = "proxy"


def write_record(
    root: Path,
    experiment: str,
    model: str,
    method: str,
    levels: int,
    noise_train: float,
    noise_eval: float | str,
    metrics: dict,
    first_last: str = "quantize",
    dataset: str = "digits",
) -> Record:
    """A record as the runner writes it; noise_eval "measured" means evaluated on a conductance file."""
    measured = noise_eval == "measured"
    cell = f"{model}-{method}-{levels}L-nt{noise_train}-ne{noise_eval}-{first_last}-{dataset}-s0"
    typed = {
        k: Metric(v, metrics.get(f"{k}_std", 0.0), 5 if f"{k}_std" in metrics else 1)
        for k, v in metrics.items()
        if not k.endswith("_std")
    }
    if "mAP" in typed and "gap_mAP" not in typed:
        typed["gap_mAP"] = Metric(typed["fp_mAP"].mean - typed["mAP"].mean, typed["mAP"].std, typed["mAP"].n)
    record = Record(
        experiment=experiment,
        cell=cell,
        scale=SCALE,
        seed=0,
        arch=model,
        model=model,
        dataset=dataset,
        method=method,
        levels=levels,
        first_last=first_last,
        noise_train=noise_train,
        noise_eval=0.0 if measured else noise_eval,
        noise_eval_file="chip.csv" if measured else "",
        metrics=typed,
        finished_at="2026-11-23T10:00:00",
    )
    store_record(root, record)
    return record


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """Ours for five of the six Figure 3 pairs (one with another delta), a measured LQ-Net, fig4b cells."""
    root = tmp_path / "results"
    for model, levels, noise, value in [
        ("resnet18", 3, 0.03, 2.6),
        ("resnet18", 8, 0.01, -0.1),
        ("resnet50", 3, 0.01, 1.4),
        ("resnet50", 4, 0.01, 0.5),
        ("resnet18", 4, 0.01, 1.2),
    ]:
        write_record(
            root, "table3", model, "lloyd", levels, noise, noise, {"gap_top1": value, "gap_top1_std": 0.2}
        )
    write_record(root, "table3", "resnet18", "lqnet", 8, 0.0, 0.0, {"gap_top1": 0.9}, first_last="fp")
    # a LQ-Net gap measured on other data must not stand beside ours: that pair stays quoted
    write_record(root, "table3", "resnet50", "lqnet", 4, 0.0, 0.0, {"gap_top1": 7.0}, "fp", dataset="other")
    for noise_train, noise_eval, gap in [(0.02, 0.02, 1.0), (0.02, "measured", 1.1), (0.0, "measured", 3.0)]:
        write_record(
            root,
            "fig4b",
            "resnet18",
            "lloyd",
            4,
            noise_train,
            noise_eval,
            {"gap_top1": gap, "gap_top1_std": 0.1},
        )
    write_record(
        root, "fig4b", "ssd300", "lloyd", 4, 0.02, 0.02, {"mAP": 70.0, "fp_mAP": 71.5, "mAP_std": 0.05}
    )
    return root


def context(tmp_path: Path, results: Path) -> Context:
    return Context(results=results, out=tmp_path / "out", scale=SCALE)


def bar_patches(ax: plt.Axes) -> list:
    return [patch for patch in ax.patches if patch.get_width() != 0 and patch.get_height() != 0]


def test_fig3_bars_come_from_records_or_are_marked_quoted(tmp_path: Path, store: Path) -> None:
    rendered = fig3.render(context(tmp_path, store))
    (ax,) = rendered.figure.axes
    widths = sorted(round(patch.get_width(), 6) for patch in bar_patches(ax))
    quoted = {pair.quoted_gap for pair in fig3.PAIRS if pair.other != "lqnet" or pair.levels != 8}
    assert widths == sorted(round(w, 6) for w in [2.6, -0.1, 1.4, 0.5, 1.2, 0.9, *quoted])  # SSD ours missing
    hatched = [patch for patch in bar_patches(ax) if patch.get_hatch()]
    assert sorted(round(p.get_width(), 6) for p in hatched) == sorted(round(w, 6) for w in quoted)
    labels = [tick.get_text() for tick in ax.get_yticklabels()]
    assert any("(paper: 2%)" in text for text in labels)  # the 4L R18 bar used delta 1%, and says so
    assert rendered.missing.items == [(f"{SCALE} record: lloyd 3L SSD with noise", "make table4")]


def test_fig4_panels_and_gap_bars(tmp_path: Path, store: Path) -> None:
    rendered = fig4.render(context(tmp_path, store))
    ax_a, ax_b = rendered.figure.axes
    assert "differential conductance" in ax_a.get_xlabel()
    heights = sorted(round(patch.get_height(), 6) for patch in bar_patches(ax_b))
    assert heights == [1.0, 1.1, 1.5, 3.0]
    targets = [target for what, target in rendered.missing.items if "fig4b record" in what]
    assert len(targets) == 3 * len(fig4.GROUPS) - 4  # 4 of the 12 bars are in the store
    assert set(targets) == {"make fig4b-results"}  # ResNet-18b and SSD bars both come from that target


def test_fig4_simulated_and_measured_spreads_match_their_models(tmp_path: Path) -> None:
    measured = MeasuredConductances.from_csv(DEFAULT_CONDUCTANCES)
    g = fig4.layer_conductances(load_layer(None, "first", root=tmp_path))
    assert g.abs().max().item() == pytest.approx(15.75)
    assert len(g.unique()) == fig4.LEVELS
    deviation = measured.sample_deviation(g, torch.Generator().manual_seed(1))
    assert deviation.std().item() == pytest.approx(0.32, abs=0.03)  # the generated file's stated std


def test_fig2_lloyd_has_least_error_on_a_checkpoint_layer(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    state = {
        "conv.weight": torch.randn(4, 3, 3, 3),
        "fc.weight": torch.from_numpy(rng.standard_t(3, (10, 200)) * 0.05 + rng.random((10, 200)) ** 4 * 0.1),
        "fc.bias": torch.zeros(10),
    }
    path = tmp_path / "model.pt"
    torch.save({"state_dict": state}, path)
    layer = load_layer(path, "last")
    assert layer.weight.shape == (10, 200) and not layer.synthetic
    fig = fig2.plot(layer)
    titles = [ax.get_title() for ax in fig.axes]
    assert len(titles) == len(fig2.METHODS)
    mse = {
        method: float(re.search(r"MSE = (\S+)", title).group(1))
        for method, title in zip(fig2.METHODS, titles, strict=True)
    }
    for method in fig2.METHODS:
        reference = fig2.quantization_mse(method, layer.weight.float(), fig2.LEVELS)[2]
        assert mse[method] == pytest.approx(reference, rel=1e-3)
    assert mse["lloyd"] <= min(mse["uniform"], mse["log2"])


def test_fig2_falls_back_to_a_labelled_synthetic_layer(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    layer = load_layer(None, "last", root=tmp_path)
    assert isinstance(layer, Layer) and layer.synthetic and "synthetic" in layer.source
    assert "--checkpoint" in capsys.readouterr().err


def test_cli_writes_every_figure_as_png_and_pdf(tmp_path: Path, store: Path) -> None:
    assert cli.main(["all", "--results", str(store), "--out", str(tmp_path / "out")]) == 0
    out = tmp_path / "out" / "proxy"  # per scale: a smoke run never replaces the proxy figures
    for name in cli.FIGURES:
        assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (out / f"{name}.pdf").read_bytes()[:5] == b"%PDF-"
        assert (out / f"{name}.png").stat().st_size > 10_000
    assert not list(out.glob(".*tmp*"))


def test_cli_names_missing_inputs_and_their_make_target(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "out"
    assert cli.main(["fig3", "--results", str(tmp_path / "empty"), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "make fig3-results" in err and "make table4" in err and "not drawn" in err
    assert not out.exists()


def test_cli_bad_conductance_file_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("level_a,level_b\n1,2\n")
    assert cli.main(["fig4", "--results", str(tmp_path), "--conductances", str(bad)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


# ---- conductance file parser and sampler ----


def test_wide_and_pair_layouts_parse_to_the_same_levels(tmp_path: Path) -> None:
    wide = tmp_path / "wide.csv"
    wide.write_text("# measured chip 3\n-1.5,2.0\n-1.4,2.2\n-1.7,1.9\n,2.3\n")
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("target_uS,measured_uS\n2.0,2.2\n-1.5,-1.4\n2.0,1.9\n-1.5,-1.7\n2.0,2.3\n")
    for path in (wide, pairs):
        measured = MeasuredConductances.from_csv(path)
        assert measured.targets.tolist() == [-1.5, 2.0]
        assert [len(dev) for dev in measured.deviations] == [2, 3]
        assert measured.mean_shift.tolist() == pytest.approx([(0.1 - 0.2) / 2, (0.2 - 0.1 + 0.3) / 3])
        assert sorted(measured.measured().tolist()) == pytest.approx([-1.7, -1.4, 1.9, 2.2, 2.3])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no header line"),
        ("# only a comment\n", "no header line"),
        ("a,b,c\n1,2,3\n", "neither 'target_uS,measured_uS'"),
        ("1.0,2.0\n1.1,x\n1.2,2.1\n", ":2: 'x' is not a number"),
        ("1.0,2.0\n1.1,2.1,3.1\n", ":2: 3 fields but the header names 2 levels"),
        ("1.0,2.0\n1.1,2.1\n1.2,nan\n", ":3: 'nan' is not finite"),
        ("1.0,2.0\n1.1,2.1\n1.2,\n", "target 2 uS has 1 measured value"),
        ("1.0,1.0\n1.1,1.2\n", "appears twice"),
        ("target,measured\n1.0,1.1\n1.0\n", ":3: expected 'target,measured'"),
    ],
)
def test_malformed_conductance_files_name_the_problem(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "g.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=re.escape(message)) as info:
        MeasuredConductances.from_csv(path)
    assert "\n" not in str(info.value)


def test_missing_conductance_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        MeasuredConductances.from_csv(tmp_path / "nope.csv")


def test_sample_deviation_resamples_the_nearest_levels_measurements(tmp_path: Path) -> None:
    path = tmp_path / "g.csv"
    path.write_text("0,10\n1,8\n-1,7\n")  # level 0 deviations {1, -1}; level 10 deviations {-2, -3}
    measured = MeasuredConductances.from_csv(path)
    targets = torch.tensor([0.2, 4.9, 5.1, 30.0] * 500, dtype=torch.float32)
    deviation = measured.sample_deviation(targets, torch.Generator().manual_seed(0))
    assert deviation.dtype == torch.float32 and deviation.shape == targets.shape
    near_zero, near_ten = deviation[targets < 5], deviation[targets > 5]
    assert set(near_zero.tolist()) == {1.0, -1.0} and set(near_ten.tolist()) == {-2.0, -3.0}
    assert near_zero.mean().item() == pytest.approx(0.0, abs=0.1)  # both values drawn about equally often
    again = measured.sample_deviation(targets, torch.Generator().manual_seed(0))
    assert torch.equal(deviation, again)


def test_example_file_is_reproducible_and_has_the_papers_statistics(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(make_example_conductances, "OUT", tmp_path / "example.csv")
    make_example_conductances.main()
    assert (tmp_path / "example.csv").read_bytes() == DEFAULT_CONDUCTANCES.read_bytes()
    measured = MeasuredConductances.from_csv(DEFAULT_CONDUCTANCES)
    assert measured.targets.tolist() == list(make_example_conductances.TARGETS_US)
    assert measured.std.tolist() == pytest.approx([0.32] * 4, abs=0.04)
    assert fig4.is_generated(DEFAULT_CONDUCTANCES)


def test_measured_noise_plugs_into_quantize_model(tmp_path: Path) -> None:
    path = tmp_path / "g.csv"
    levels = ",".join(f"{g:g}" for g in (-15.75, -5.0, 5.0, 15.75))
    path.write_text(levels + "\n" + "\n".join(["-15.25,-4.5,5.5,16.25"] * 3) + "\n")  # every device +0.5 uS
    model = torch.nn.Sequential(torch.nn.Linear(16, 8))
    noise = MeasuredNoise(MeasuredConductances.from_csv(path))
    quantize_model(model, QuantConfig(method="lloyd", levels=4, noise=noise))
    model.eval()
    clean = model[0].weight.detach().clone()
    with weight_noise(model, seed=0):
        noisy = model[0].weight.detach().clone()
    expected = 0.5 / ConductanceMap().scale * clean.abs().max()
    assert torch.allclose(noisy - clean, torch.full_like(clean, expected.item()), atol=1e-6)


def test_fig3_experiment_adds_the_noisy_cells_table3_and_delta_lack() -> None:
    from benchmarks.experiments import cells

    got = {(c.arch, c.levels, c.noise_train, c.noise_eval, c.method) for c in cells("fig3", "smoke")}
    assert got == {
        ("resnet18b", 8, 0.01, 0.01, "lloyd"),
        ("resnet50b", 3, 0.01, 0.01, "lloyd"),
        ("resnet50b", 4, 0.01, 0.01, "lloyd"),
        ("resnet18b", 4, 0.02, 0.02, "lloyd"),
    }


def test_default_checkpoint_is_the_runners_cached_float_model(tmp_path: Path) -> None:
    results = tmp_path / "results"
    float_state = {
        "conv1.weight": torch.randn(4, 3, 3, 3),
        "fc.weight": torch.randn(10, 16),
        "fc.bias": torch.zeros(10),
    }
    for relative, state in [
        ("_float/proxy/resnet18b_narrow-digits16-abc.pt", {"model": float_state, "metrics": {"top1": 90.0}}),
        ("_float/smoke/resnet18b_narrow-digits8-abc.pt", {"model": {"fc.weight": torch.zeros(3, 3)}}),
        (
            "table3/proxy/.ckpt/resnet18b-lloyd.pt",
            {"model": {"fc.parametrizations.weight.original": torch.ones(2, 2)}},
        ),
    ]:
        (results / relative).parent.mkdir(parents=True, exist_ok=True)
        torch.save(state, results / relative)
    layer = load_layer(None, "last", results, "proxy")
    assert torch.equal(layer.weight, float_state["fc.weight"])
    assert layer.source == "resnet18b_narrow-digits16-abc.pt: fc.weight"
    assert torch.equal(load_layer(None, "first", results, "proxy").weight, float_state["conv1.weight"])
    with pytest.raises(ValueError, match="choose one of: conv1.weight, fc.weight"):
        load_layer(results / "_float/proxy/resnet18b_narrow-digits16-abc.pt", "layer4.weight")


def test_fig2_takes_any_number_of_methods(tmp_path: Path) -> None:
    layer = Layer(torch.randn(64, 32), "random", synthetic=True)
    methods = ("uniform", "log2", "lloyd", "lloyd_exact", "uniform_maxabs")
    fig = fig2.plot(layer, 4, methods)
    assert len(fig.axes) == len(methods) and fig.axes[-1].get_title().startswith("(e)")
    plt.close(fig)


@pytest.mark.parametrize(
    ("seeds", "expected"),
    [
        ([1, 1], "std over noise draws (one seed)"),
        ([3, 3], "95% CI over 3 seeds"),
        ([3, 6], "95% CI over 3-6 seeds"),
        ([1, 3], "95% CI over 3 seeds; one seed: std over noise draws"),
    ],
)
def test_error_bar_label_says_what_the_bars_are(seeds: list[int], expected: str) -> None:
    """Several seeds give CIs, one seed the spread of its noise draws: the figure titles say which."""
    assert error_bars(seeds) == expected


PLUGIN = Path(__file__).parent / "cacim_test_plugin.py"


def test_a_plugin_quantizer_is_drawn_in_every_figure(tmp_path: Path, store: Path) -> None:
    """--plugin FILE and --methods: Figure 2 gets the plugin's panel; Figures 3 and 4(b) draw every method
    with records (a plugin's copies of our cells) beside ours, each method's bars from its own records."""
    assert (
        cli.main(["fig2", "--results", str(store), "--out", str(tmp_path / "out"), "--plugin", str(PLUGIN)])
        == 0
    )
    methods = ("uniform", "lloyd", "maxabs_grid")
    fig = fig2.render(Context(store, tmp_path / "out", SCALE, methods=methods)).figure
    titles = [ax.get_title().split("\n")[0] for ax in fig.axes]
    assert titles == [f"({letter}) {style.label(m)}" for letter, m in zip("abc", methods, strict=True)]
    assert style.color("maxabs_grid") not in {style.color(m) for m in style.METHODS}

    gaps = {"table3": (3, 0.03, 4.4), "fig4b": (4, 0.02, 2.2)}  # the plugin's copies of two of our cells
    for experiment, (levels, noise, gap) in gaps.items():
        metrics = {"gap_top1": gap, "gap_top1_std": 0.1}
        write_record(store, experiment, "resnet18", "maxabs_grid", levels, noise, noise, metrics)
    rendered = fig3.render(context(tmp_path, store))  # no --methods: lloyd and every noisy method
    (ax,) = rendered.figure.axes
    labels = [tick.get_text() for tick in ax.get_yticklabels()]
    assert len(labels) == 3 * len(fig3.PAIRS)
    assert sum("maxabs_grid w/" in text for text in labels) == len(fig3.PAIRS)
    assert 4.4 in [round(patch.get_width(), 6) for patch in bar_patches(ax)]
    what = f"{SCALE} record: maxabs_grid 8L ResNet-18b with noise"
    assert (what, "make fig3-results METHODS=maxabs_grid") in rendered.missing.items

    rendered = fig3.render(Context(store, tmp_path / "out", SCALE, methods=methods))
    assert len(rendered.figure.axes[0].get_yticklabels()) == 3 * len(fig3.PAIRS)  # uniform has no noisy cell
    absent = (f"{SCALE} records of uniform with noise", "make fig3-results METHODS=uniform")
    assert absent in rendered.missing.items

    ax_b = fig4.render(context(tmp_path, store)).figure.axes[1]
    assert sorted(round(patch.get_height(), 6) for patch in bar_patches(ax_b)) == [1.0, 1.1, 1.5, 2.2, 3.0]
    ticks = [tick.get_text() for tick in ax_b.get_xticklabels()]
    assert ticks[:2] == [f"4L ResNet-18b\n{style.label(m)}" for m in ("lloyd", "maxabs_grid")]


def test_cli_bad_plugin_or_method_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["fig2", "--plugin", str(tmp_path / "nope.py")])
    assert info.value.code == 2 and "cannot import plugin" in capsys.readouterr().err
    assert cli.main(["fig2", "--results", str(tmp_path), "--methods", "lloyd,nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nope" in err and "registered" in err


def test_make_figures_passes_methods_and_plugins() -> None:
    """`make figures METHODS=... PLUGIN=a,b` hands both to every figure command and the 5.1 table."""
    import shutil
    import subprocess

    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    cmd = ["make", "-n", "figures", "METHODS=lloyd,mine", "PLUGIN=mine.py,other_module"]
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=60, check=True).stdout
    commands = [line for line in out.splitlines() if "-m figures" in line or "-m tables.digital_cost" in line]
    assert len(commands) == 2
    for line in commands:
        assert "--methods lloyd,mine --plugin mine.py --plugin other_module" in line
