"""OpenMMLab integration: CacimHook in a plain mmengine Runner, the generated VOC files in mmdet/mmseg,
the SSDHead fix, and smoke runs of Tables 4 and 5 (SSD and PSPNet trained a few iterations with the hook)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

mmengine = pytest.importorskip(
    "mmengine", reason="the openmmlab extra is not installed (scripts/setup_openmmlab.sh .venv/bin/python)"
)
pytestmark = pytest.mark.openmmlab  # `make test-fast` leaves these out

from mm_toy import ToyNet, toy_data  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

from cacim_core import export, quantized_layers  # noqa: E402
from cacim_core.integrations.mmengine import CacimHook  # noqa: E402


def _openmmlab():
    """mmdet + mmseg (they need mmcv with its compiled ops); skip with the reason when absent."""
    try:
        import mmdet  # noqa: F401
        import mmseg  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"mmdet/mmseg not importable ({exc}); run scripts/setup_openmmlab.sh .venv/bin/python")


def _loader(data: list[dict], train: bool) -> dict:
    # InfiniteSampler for training: mmengine's iteration loop sleeps 2 s at every epoch end otherwise.
    sampler = (
        {"type": "InfiniteSampler", "shuffle": True}
        if train
        else {"type": "DefaultSampler", "shuffle": False}
    )
    return {"dataset": data, "sampler": sampler, "batch_size": 16}


def test_hook_quantizes_refits_and_tests_under_noise(tmp_path) -> None:
    torch.manual_seed(0)
    runner = Runner(
        model=ToyNet(),
        work_dir=str(tmp_path),
        train_dataloader=_loader(toy_data(256, 0), True),
        train_cfg={"by_epoch": False, "max_iters": 40},
        optim_wrapper={"optimizer": {"type": "SGD", "lr": 0.1, "momentum": 0.9}},
        test_dataloader=_loader(toy_data(128, 1), False),
        test_evaluator={"type": "ToyMetric"},
        test_cfg={},
        default_hooks={"checkpoint": None, "logger": {"type": "LoggerHook", "interval": 1000}},
        custom_hooks=[{"type": "CacimHook", "levels": 3, "noise": 0.05, "trials": 4, "exclude": ["net.4"]}],
        randomness={"seed": 0},
    )
    runner.train()
    layers = quantized_layers(runner.model)
    assert [name for name, _, _ in layers] == ["net.0", "net.2"]
    runner.model.eval()
    for _, module, _ in layers:
        assert module.weight.unique().numel() <= 3  # eval mode, no noise: ternary weights
    metrics = runner.test()
    hook = next(h for h in runner.hooks if isinstance(h, CacimHook))
    assert metrics["acc"] > 80  # the task is linearly separable; the ternary net still learns it
    assert {"noisy/acc", "noisy/acc_std", "noisy/ce", "noisy/ce_std"} <= metrics.keys()
    assert metrics["noisy/ce_std"] > 0  # four different weight-noise draws
    assert metrics["noisy/ce"] == pytest.approx(hook.noisy["mean"]["ce"])

    # The noise-free test metric is exactly the metric of the exported (plain, quantized) weights.
    plain = export(runner.model)
    with torch.no_grad():
        x = torch.stack([d["inputs"] for d in toy_data(128, 1)])
        y = torch.stack([d["labels"] for d in toy_data(128, 1)])
        ce = float(F.cross_entropy(plain.net(x), y))
    assert metrics["ce"] == pytest.approx(ce, rel=1e-5)


def _conductances(path, std: float) -> str:
    """A wide conductance CSV: the paper's four target levels, 40 'measured' values each with this std."""
    targets = (-10.36, -0.57, 4.52, 15.75)
    g = torch.Generator().manual_seed(0)
    rows = [
        ",".join(f"{t + std * float(torch.randn((), generator=g)):.4f}" for t in targets) for _ in range(40)
    ]
    path.write_text(",".join(map(str, targets)) + "\n" + "\n".join(rows) + "\n")
    return str(path)


def test_hook_evaluates_on_measured_conductances(tmp_path) -> None:
    """eval_noise_file: the noisy trials draw from the measured devices; wider spread -> larger loss."""
    results = {}
    for std in (0.05, 2.0):
        torch.manual_seed(0)
        hook = {
            "type": "CacimHook",
            "levels": 4,
            "trials": 3,
            "exclude": ["net.4"],
            "eval_noise_file": _conductances(tmp_path / f"g{std}.csv", std),
        }
        runner = Runner(
            model=ToyNet(),
            work_dir=str(tmp_path / str(std)),
            train_dataloader=_loader(toy_data(256, 0), True),
            train_cfg={"by_epoch": False, "max_iters": 30},
            optim_wrapper={"optimizer": {"type": "SGD", "lr": 0.1, "momentum": 0.9}},
            test_dataloader=_loader(toy_data(128, 1), False),
            test_evaluator={"type": "ToyMetric"},
            test_cfg={},
            default_hooks={"checkpoint": None, "logger": {"type": "LoggerHook", "interval": 1000}},
            custom_hooks=[hook],
            randomness={"seed": 0},
        )
        runner.train()
        results[std] = runner.test()
        assert next(h for h in runner.hooks if isinstance(h, CacimHook)).eval_noise == 0.0
    quiet, loud = results[0.05], results[2.0]
    assert quiet["ce"] == pytest.approx(loud["ce"])  # same training (no training noise), same clean test
    assert quiet["noisy/ce_std"] > 0 and loud["noisy/ce_std"] > quiet["noisy/ce_std"]
    # 0.05 uS on a 26 uS range barely moves the loss; 2 uS (8% of the range) clearly does.
    assert abs(quiet["noisy/ce"] - quiet["ce"]) < 0.02 < loud["noisy/ce"] - loud["ce"]


def test_hook_rejects_bad_measured_setup(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="conductance file"):
        CacimHook(trials=2, eval_noise_file=str(tmp_path / "missing.csv"))
    good = _conductances(tmp_path / "g.csv", 0.3)
    with pytest.raises(ValueError, match="trials > 0"):
        CacimHook(eval_noise_file=good)
    with pytest.raises(ValueError, match="not both"):
        CacimHook(trials=2, eval_noise=0.01, eval_noise_file=good)


def test_hook_rejects_patterns_that_match_nothing(tmp_path) -> None:
    runner = Runner(
        model=ToyNet(),
        work_dir=str(tmp_path),
        test_dataloader=_loader(toy_data(32, 1), False),
        test_evaluator={"type": "ToyMetric"},
        test_cfg={},
        default_hooks={"checkpoint": None},
        custom_hooks=[{"type": "CacimHook", "levels": 3, "include": ["backbone.*"]}],
    )
    with pytest.raises(ValueError, match="no layer matched"):
        runner.test()


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory):
    from benchmarks.openmmlab.voc_shapes import SMOKE, write_voc_shapes

    root = tmp_path_factory.mktemp("voc")
    write_voc_shapes(root, SMOKE)
    return root


def test_generated_voc_loads_in_mmdet_and_mmseg(voc_root) -> None:
    _openmmlab()
    import numpy as np
    from mmdet.datasets import VOCDataset
    from mmseg.datasets import PascalVOCDataset
    from mmseg.datasets.transforms import LoadAnnotations
    from PIL import Image

    from benchmarks.openmmlab.voc_shapes import SMOKE

    det = VOCDataset(
        data_root=str(voc_root / "VOCdevkit"),
        ann_file="VOC2007/ImageSets/Main/trainval.txt",
        data_prefix={"sub_data_root": "VOC2007/"},
        pipeline=[],
    )
    assert len(det) == SMOKE.voc2007_trainval
    assert det.metainfo["dataset_type"] == "VOC2007"
    info = det.get_data_info(0)
    image = np.asarray(Image.open(info["img_path"]))
    assert image.shape[:2] == (info["height"], info["width"])
    assert 1 <= len(info["instances"]) <= SMOKE.max_objects
    for inst in info["instances"]:
        x0, y0, x1, y1 = inst["bbox"]
        assert 0 <= x0 < x1 <= info["width"] and 0 <= y0 < y1 <= info["height"]
        assert 0 <= inst["bbox_label"] < SMOKE.num_classes

    seg = PascalVOCDataset(
        data_root=str(voc_root / "VOCdevkit/VOC2012"),
        data_prefix={"img_path": "JPEGImages", "seg_map_path": "SegmentationClass"},
        ann_file="ImageSets/Segmentation/val.txt",
        pipeline=[LoadAnnotations()],
    )
    assert len(seg) == SMOKE.voc2012_seg_val
    labels = seg[0]["gt_seg_map"]
    assert set(np.unique(labels)) <= {0, 255, *range(1, SMOKE.num_classes + 1)}
    assert (labels == 255).any() and (labels == 0).any()  # void borders and background, as in VOC


def test_ssd_head_fixed_predicts() -> None:
    _openmmlab()
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config

    import benchmarks.openmmlab.modules  # noqa: F401  (registers SSDHeadFixed, SlimSSDVGG)
    from benchmarks.backends.mmengine import CONFIGS

    register_all_modules()
    cfg = Config.fromfile(str(CONFIGS / "ssd300_slim_vocshapes_cacim.py"))
    torch.manual_seed(0)
    model = MODELS.build(cfg.model).eval()
    from mmdet.structures import DetDataSample

    sample = DetDataSample(
        metainfo={"img_shape": (160, 160), "ori_shape": (160, 160), "scale_factor": (1.0, 1.0)}
    )
    with torch.no_grad():
        out = model.predict(torch.randn(1, 3, 160, 160), [sample])
    assert out[0].pred_instances.bboxes.shape[1] == 4
    assert (
        len(out[0].pred_instances.scores)
        == len(out[0].pred_instances.labels)
        <= cfg.model.test_cfg.max_per_img
    )

    # The bug it works around (mmdetection #11063 / #11780): the packaged SSDHead cannot predict.
    plain = MODELS.build({**cfg.model, "bbox_head": {**cfg.model.bbox_head, "type": "SSDHead"}}).eval()
    with pytest.raises(AttributeError, match="loss_cls"), torch.no_grad():
        plain.predict(torch.randn(1, 3, 160, 160), [sample])


def _options(voc_root, results, methods=None):
    """The run options of the OpenMMLab smoke tests: the VOC fixture, a store, no progress bars."""
    from benchmarks import runner

    return runner.RunOptions(results=results, data=str(voc_root), methods=methods, progress=False)


@pytest.mark.parametrize("table", ["table4", "table5"])
def test_table_smoke_run_and_render(table, voc_root, tmp_path, monkeypatch) -> None:
    """SSD / PSPNet trained a few iterations (float, then each quantized cell with CacimHook), evaluated by
    mmdet's VOCMetric / mmseg's IoUMetric on the generated VOC files, and rendered; Table 4 also runs a
    plugin quantizer beside ours (same cells), Figure 4(b) and the one-stage reading in the same store."""
    _openmmlab()
    from benchmarks import runner
    from benchmarks.experiments import cells
    from benchmarks.results import float_path, load_records
    from tables.render import load_spec, render

    methods = ["lloyd", "maxabs_grid"] if table == "table4" else None
    runner.load_plugin(str(Path(__file__).parent / "cacim_test_plugin.py"))
    listed = cells(table, "smoke", methods)
    results = tmp_path / "results"
    runner.run(table, "smoke", _options(voc_root, results, methods))
    records = {r.cell: r for r in load_records(results, table, "smoke")}
    assert set(records) == {c.id for c in listed}
    names = [name for name, _, _ in listed[0].recipe.metrics]
    fp = {name: {r.metrics[f"fp_{name}"].mean for r in records.values()} for name in names}
    assert all(len(values) == 1 for values in fp.values())  # one float model (seed 0) for every cell
    for cell in listed:
        record = records[cell.id]
        assert (record.levels, record.noise_train, record.method) == (
            cell.levels,
            cell.noise_train,
            cell.method,
        )
        assert record.refits and all(v >= 0 for v in record.refits.values())
        for name in names:
            m = record.metrics[name]
            assert 0.0 <= m.mean <= 100.0
            assert record.metrics[f"gap_{name}"].mean == pytest.approx(
                record.metrics[f"fp_{name}"].mean - m.mean
            )
            assert m.n == (cell.trials if cell.noise_eval > 0 else 1) and m.std >= 0
    if table == "table4":  # backbone only, minus the first conv and the final 1x1 conv
        layers = set(records[listed[0].id].refits)
        assert all(name.startswith("backbone.features.") for name in layers)
        assert not {name.split(".")[2] for name in layers} & {"0", "33"}  # features.0(.0), features.33(.0)
        assert len(layers) == 13  # VGG16's 15 convs (13 + conv6 + conv7) minus the two kept float

    # A second run finds every cell finished and trains nothing.
    assert runner.run(table, "smoke", _options(voc_root, results, methods)) == []
    paths = render(load_spec(table), "smoke", results, tmp_path / "out")
    text = paths[0].read_text()
    assert f"{records[listed[0].id].metrics[names[0]].mean:.1f}" in text and "[smoke" in text
    if table == "table4":
        plugin_rows = [line for line in text.splitlines() if "maxabs_grid" in line]
        assert len(plugin_rows) == 2 and not any("not run" in line for line in plugin_rows)
        floats = list(float_path(results, "smoke", "x").parent.glob("*.pt"))
        _fig4b_smoke(voc_root, results, {p: p.stat().st_mtime_ns for p in floats})
        _one_stage_smoke(voc_root, results, tmp_path / "out", monkeypatch)


def _fig4b_smoke(voc_root, results, floats) -> None:
    """Figure 4(b): ResNet-18b (torch loop) and SSD (mmengine, fine-tuned from Table 4's float SSD, not
    retrained) in one experiment; B and C evaluate on the measured-conductance model."""
    from benchmarks import runner
    from benchmarks.results import load_records
    from figures import fig4

    runner.run("fig4b", "smoke", _options(voc_root, results))
    assert all(path.stat().st_mtime_ns == mtime for path, mtime in floats.items())
    records = load_records(results, "fig4b", "smoke")
    table = fig4.gap_table(records)
    for group in fig4.GROUPS:
        for wtype in fig4.WEIGHT_TYPES:
            assert table[group.label, "lloyd", wtype] is not None
    measured = [r for r in records if r.noise_eval_file]
    assert len(records) == 12 and len(measured) == 8
    for r in measured:
        name = "mAP" if r.arch == "ssd300" else "top1"
        assert r.metrics[name].n > 1 and r.metrics[name].std >= 0


def _one_stage_smoke(voc_root, results, out, monkeypatch) -> None:
    """Table 4's one-stage reading in a store that holds the two-stage one: it trains and reads no float
    model (each cell starts from the config's init and trains the float phase's schedule with the hook),
    its records and table are its own, and each table's footnote names its reading."""
    from benchmarks import runner
    from benchmarks.backends import mmengine
    from benchmarks.experiments import cells
    from benchmarks.results import float_path, load_records
    from tables.render import load_spec, render

    one, two = cells("table4_one_stage", "smoke"), cells("table4", "smoke")
    assert not {c.id for c in one} & {c.id for c in two}
    assert all(c.init == "init_cfg" and c.fp_recipe is None and c.recipe == two[0].fp_recipe for c in one)
    floats = float_path(results, "smoke", "x").parent
    before = {p.name: p.stat().st_mtime_ns for p in floats.iterdir()}
    started = []  # what each phase starts from, as mmengine's Runner gets it
    train_and_test = mmengine._train_and_test

    def spy(cfg, tta):
        assert "CacimHook" in [h["type"] for h in cfg.custom_hooks]  # quantized from the first iteration
        init = cfg.model.backbone.init_cfg
        started.append((cfg.load_from, cfg.get("resume"), cfg.train_cfg.max_iters, init))
        return train_and_test(cfg, tta)

    monkeypatch.setattr(mmengine, "_train_and_test", spy)
    runner.run("table4_one_stage", "smoke", _options(voc_root, results))
    assert {p.name: p.stat().st_mtime_ns for p in floats.iterdir()} == before  # no float model touched
    float_iters = two[0].fp_recipe.phase["train_cfg"]["max_iters"]
    assert started == [(None, False, float_iters, None)] * len(one)  # the slim config's init: random

    records = {r.cell: r for r in load_records(results, "table4_one_stage", "smoke")}
    assert set(records) == {c.id for c in one}
    for cell in one:
        record = records[cell.id]
        assert (record.experiment, record.init) == ("table4_one_stage", "init_cfg")
        assert set(record.metrics) == {"mAP", "mAP_clean"}  # no float model: no FP, no gap
        assert record.metrics["mAP"].n == (cell.trials if cell.noise_eval > 0 else 1)
    assert all(r.init == "pretrained" for r in load_records(results, "table4", "smoke"))

    text = render(load_spec("table4_one_stage"), "smoke", results, out)[0].read_text()
    assert "one-stage reading" in text and "- Reading: one-stage" in text and "Full precision" not in text
    assert f"{records[one[0].id].metrics['mAP'].mean:.1f} [smoke" in text
    two_text = render(load_spec("table4"), "smoke", results, out)[0].read_text()
    assert "- Reading: two-stage" in two_text and "Full precision" in two_text


def test_one_stage_starts_from_the_float_phase_init(voc_root, tmp_path, monkeypatch) -> None:
    """At smoke/proxy scale a one-stage cell starts from exactly the weights the two-stage float model starts
    from (same seed; the hook changes nothing before training), as its docstring says."""
    _openmmlab()
    from benchmarks.backends.mmengine import build_config
    from benchmarks.experiments import cells

    class Started(Exception):
        pass

    starts = []

    def load_or_resume(runner) -> None:  # called right after init_weights: what training would start from
        starts.append({k: v.clone() for k, v in runner.model.state_dict().items()})
        raise Started

    monkeypatch.setattr(Runner, "load_or_resume", load_or_resume)
    one, two = cells("table4_one_stage", "smoke")[1], cells("table4", "smoke")[0]
    hook = {"type": "CacimHook", "method": "lloyd", "levels": 3, "noise": 0.01, "trials": 2, "seed": 0}
    for recipe, cacim in ((two.fp_recipe, None), (one.recipe, hook)):
        with pytest.raises(Started):
            Runner.from_cfg(build_config(recipe, voc_root, tmp_path / str(len(starts)), 0, cacim)).train()
    floats, quantized = starts
    assert floats.keys() == quantized.keys()
    assert all(torch.equal(floats[k], quantized[k]) for k in floats)


def test_paper_pretrained_backbone_is_a_local_file(tmp_path) -> None:
    """At paper scale both readings start a phase from the config's ImageNet VGG16 (init_cfg
    open-mmlab://vgg16_caffe): it is read from --weights, never downloaded, and a missing file is a
    one-line error before any training; a phase that loads the float model drops it."""
    _openmmlab()
    from benchmarks.backends import Context, SetupError
    from benchmarks.backends.mmengine import REQUIRED, MMEngine, build_config
    from benchmarks.experiments import cells

    data, weights = tmp_path / "data", tmp_path / "weights"
    for listed in REQUIRED["voc0712"]:
        (data / "VOCdevkit" / listed).parent.mkdir(parents=True, exist_ok=True)
        (data / "VOCdevkit" / listed).write_text("000001\n")
    weights.mkdir()
    ctx = Context("paper", tmp_path / "results", data, weights)
    one, two = cells("table4_one_stage", "paper")[0], cells("table4", "paper")[0]
    for cell in (one, two):  # two-stage: its float phase, not cached yet
        with pytest.raises(SetupError) as err:
            MMEngine().prepare([cell], ctx)
        message = str(err.value)
        assert "vgg16_caffe-292e1171.pth" in message and "--weights" in message and "\n" not in message
    vgg = weights / "vgg16_caffe-292e1171.pth"
    vgg.write_bytes(b"")
    MMEngine().prepare([one, two], ctx)
    cfg = build_config(one.recipe, data, tmp_path / "work", 0, None, weights)
    assert cfg.model.backbone.init_cfg.checkpoint == str(vgg) and cfg.load_from is None
    assert cfg.train_cfg.max_iters == 120000 and one.fp_recipe is None
    cfg = build_config(two.recipe, data, tmp_path / "work", 0, None, weights, from_checkpoint=True)
    assert cfg.model.backbone.init_cfg is None


def test_torch_loop_options_are_refused_for_openmmlab_cells(tmp_path, monkeypatch) -> None:
    """--amp, --channels-last, --reset-head, and --device cpu where mmengine would use a GPU: a one-line
    error before any work, never a record that claims them."""
    from benchmarks import runner
    from benchmarks.backends import Context, SetupError, check_supported
    from benchmarks.backends.mmengine import MMEngine
    from benchmarks.experiments import cells

    cell = cells("table4", "smoke")[0]
    for option in ("amp", "channels_last", "reset_head"):
        with pytest.raises(SetupError) as err:
            ctx = Context("smoke", tmp_path / "results", None, None, **{option: True})
            check_supported(MMEngine(), [cell], ctx)
        assert option.replace("_", "-") in str(err.value) and "\n" not in str(err.value)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(SetupError, match="--device cpu: mmengine picks CUDA"):
        runner.run(
            "table4", "smoke", runner.RunOptions(results=tmp_path / "results", device="cpu", progress=False)
        )
    assert not (tmp_path / "results").exists()


def test_openmmlab_cells_pass_first_last_and_options_and_refuse_sweeps(tmp_path, monkeypatch) -> None:
    """The hook the mmengine backend configures carries the cell's first/last policy and its extra
    QuantConfig options (they used to be dropped, while the record claimed them); a sweep is refused."""
    import dataclasses

    from benchmarks.backends import Context, SetupError, check_supported
    from benchmarks.backends import mmengine as backend
    from benchmarks.experiments import Condition, cells

    cell = dataclasses.replace(
        cells("table4", "smoke")[0], init="scratch", first_last="8bit", options=(("adc_bits", 6),)
    )
    hooks: list[dict] = []

    def stop(recipe, data_root, work, seed, hook, *args, **kwargs):
        hooks.append(hook)
        raise SystemExit("stop before training")

    monkeypatch.setattr(backend.MMEngine, "_data", lambda self, cell, ctx: (tmp_path, "fp"))
    monkeypatch.setattr(backend, "build_config", stop)
    ctx = Context("smoke", tmp_path / "results", None, None)
    with pytest.raises(SystemExit, match="stop before training"):
        backend.MMEngine().finetune_and_evaluate(cell, ctx)
    (hook,) = hooks
    assert hook["first_last"] == "8bit" and hook["quant"] == {"adc_bits": 6}
    CacimHook(**{k: v for k, v in hook.items() if k != "type"})  # the hook takes them as given
    swept = dataclasses.replace(cell, sweep=(Condition(0.05),))
    with pytest.raises(SetupError, match="cannot carry out a sweep of read-out conditions"):
        check_supported(backend.MMEngine(), [swept], ctx)


def test_make_table4_picks_the_reading() -> None:
    """`make table4 SSD_READING=...` runs and renders that reading's experiment; an unknown reading is a
    one-line error naming the choices."""
    import shutil
    import subprocess

    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    root = Path(__file__).resolve().parent.parent

    def dry_run(reading: str) -> subprocess.CompletedProcess:
        cmd = ["make", "-n", "table4", f"SSD_READING={reading}"]
        return subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=60)

    bad = dry_run("three-stage")
    assert bad.returncode != 0 and len(bad.stderr.strip().splitlines()) == 1
    assert "SSD_READING=three-stage" in bad.stderr and "two-stage one-stage" in bad.stderr
    one, two = dry_run("one-stage").stdout, dry_run("two-stage").stdout
    assert "benchmarks run table4_one_stage " in one and "tables.render table4_one_stage " in one
    assert "benchmarks run table4 " in two and "tables.render table4 " in two


def test_mmengine_cell_resumes_after_sigkill(voc_root, tmp_path) -> None:
    """An OpenMMLab cell killed mid-fine-tune resumes through mmengine's own resume (CacimHook restores the
    quantized weights): the final record appears exactly once and says it resumed."""
    _openmmlab()
    import os
    import signal
    import subprocess
    import sys
    import time

    from benchmarks.results import load_records, work_dir

    root = Path(__file__).resolve().parent.parent
    results = tmp_path / "results"
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{root / 'tests'}"}
    cmd = [
        sys.executable,
        "-m",
        "benchmarks",
        "run",
        "mmkilltest",
        "--scale",
        "smoke",
        "--data",
        str(voc_root),
        "--plugin",
        "cacim_test_plugin",
        "--results",
        str(results),
        "--no-progress",
    ]
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    work = None
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        found = list((results / "mmkilltest" / "smoke" / ".work").glob("*/last_checkpoint"))
        if found and Path(found[0].read_text().strip()).is_file():
            work = found[0].parent
            break
        time.sleep(0.1)
    assert work is not None and proc.poll() is None, proc.communicate()[1].decode()[-3000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert load_records(results) == []
    done = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (record,) = load_records(results)
    assert record.resumed and work == work_dir(results, "mmkilltest", "smoke", record.cell)
    assert len(list((results / "mmkilltest" / "smoke").glob("*.json"))) == 1
