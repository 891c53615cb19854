"""CacimHook in mmengine's Runner: resume and load_from keep every trained tensor, float checkpoints are
re-fitted, EMAHook configs train, arguments are checked, noisy metrics reach the logs, coverage is listed."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

mmengine = pytest.importorskip(
    "mmengine", reason="the openmmlab extra is not installed (scripts/setup_openmmlab.sh .venv/bin/python)"
)
pytestmark = pytest.mark.openmmlab  # `make test-fast` leaves these out

from mm_toy import ToyNet, toy_data  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

from cacim_core import QuantConfig, float_weight, quantized_layers, quantizers  # noqa: E402
from cacim_core.integrations.mmengine import CacimHook, coverage, unwrap  # noqa: E402


def _runner(work_dir, hooks: list[dict], iters: int = 0, **kwargs) -> Runner:
    """A Runner as tools/train.py (iters > 0) or tools/test.py (iters == 0) builds it."""
    train = {}
    if iters:
        train = dict(
            train_dataloader={
                "dataset": toy_data(256, 0),
                "sampler": {"type": "InfiniteSampler"},
                "batch_size": 16,
            },
            train_cfg={"by_epoch": False, "max_iters": iters},
            optim_wrapper={"optimizer": {"type": "SGD", "lr": 0.05, "momentum": 0.9}},
        )
    torch.manual_seed(1)  # another init than the trained model's, so a lost load shows
    return Runner(
        model=ToyNet(batch_norm=True),
        work_dir=str(work_dir),
        test_dataloader={
            "dataset": toy_data(96, 1),
            "sampler": {"type": "DefaultSampler", "shuffle": False},
            "batch_size": 32,
        },  # fmt: skip
        test_evaluator={"type": "ToyMetric"},
        test_cfg={},
        default_hooks={
            "checkpoint": {"type": "CheckpointHook", "interval": 6, "by_epoch": False},
            "logger": {"type": "LoggerHook", "interval": 1000},
        },
        custom_hooks=hooks,
        randomness={"seed": 0},
        **train,
        **kwargs,
    )


def _hook(method: str = "lloyd", **kw) -> dict:
    levels = 4 if method == "lqnet" else 3
    return {
        "type": "CacimHook",
        "method": method,
        "levels": levels,
        "noise": 0.02,
        "exclude": ["net.5"],
        **kw,
    }


def _assert_state_equal(model: nn.Module, state: dict) -> None:
    mine = model.state_dict()
    assert mine.keys() == state.keys()
    for key, value in state.items():
        assert torch.equal(mine[key], value.to(mine[key].device)), key


@pytest.mark.parametrize("method", ["lloyd", "lsq"])
def test_resume_restores_every_tensor_and_the_optimizer(tmp_path, method) -> None:
    first = _runner(tmp_path, [_hook(method)], iters=12)
    first.train()
    ckpt = tmp_path / "iter_6.pth"
    saved = torch.load(ckpt, map_location="cpu")  # torch's weights-only default: HistoryBuffer allow-listed
    assert any(k.endswith("parametrizations.weight.original") for k in saved["state_dict"])

    # Resume at iteration 6, to iteration 6: nothing trains, so the model must be the checkpoint's.
    resumed = _runner(tmp_path / "b", [_hook(method)], iters=6, resume=True, load_from=str(ckpt))
    resumed.train()
    assert resumed.iter == 6
    model = unwrap(resumed.model)
    assert [n for n, _, _ in quantized_layers(model)] == ["net.0", "net.3"]
    _assert_state_equal(model, saved["state_dict"])
    # The optimizer state too: SGD momentum of every parameter, LSQ's steps in their own param group.
    state = resumed.optim_wrapper.optimizer.state_dict()
    assert (
        len(state["param_groups"]) == len(saved["optimizer"]["param_groups"]) == (2 if method == "lsq" else 1)
    )
    assert state["state"].keys() == saved["optimizer"]["state"].keys()
    for index, entry in saved["optimizer"]["state"].items():
        assert torch.equal(state["state"][index]["momentum_buffer"], entry["momentum_buffer"])

    # And the resumed run goes on training from there (iterations 6 -> 12), quantized and re-fitting.
    longer = _runner(tmp_path / "c", [_hook(method)], iters=12, resume=True, load_from=str(ckpt))
    longer.train()
    assert longer.iter == 12
    assert not torch.equal(
        float_weight(unwrap(longer.model).net[3]),
        saved["state_dict"]["net.3.parametrizations.weight.original"],
    )


def test_load_from_hooked_checkpoint_gives_the_training_runs_test_metrics(tmp_path) -> None:
    hook = _hook(trials=3, seed=4)
    trained = _runner(tmp_path / "train", [hook], iters=12)
    trained.train()
    expected = trained.test()
    assert expected["noisy/ce_std"] > 0

    # tools/test.py: a fresh model, the hook, load_from the last checkpoint, test.
    tester = _runner(tmp_path / "test", [hook], load_from=str(tmp_path / "train" / "iter_12.pth"))
    assert tester.test() == expected
    _assert_state_equal(unwrap(tester.model), unwrap(trained.model).state_dict())


def test_hooked_checkpoint_that_does_not_fit_fails(tmp_path) -> None:
    _runner(tmp_path / "train", [_hook()], iters=6).train()
    other = _runner(tmp_path / "t", [_hook(exclude=[])], load_from=str(tmp_path / "train" / "iter_6.pth"))
    with pytest.raises(
        ValueError, match=r"does not fit .* 4 missing keys .*1 unexpected keys \['net.5.weight'\]"
    ):
        other.test()


def test_float_checkpoint_loads_and_the_quantizers_fit_the_loaded_weights(tmp_path) -> None:
    _runner(tmp_path / "float", [], iters=6).train()
    ckpt = tmp_path / "float" / "iter_6.pth"
    weights = torch.load(ckpt, map_location="cpu")["state_dict"]
    assert "net.0.weight" in weights

    def reference(name: str) -> torch.Tensor:
        q = quantizers.build("lloyd", levels=3)
        q.fit(weights[f"{name}.weight"])
        return q.levels

    tester = _runner(tmp_path / "t", [_hook()], load_from=str(ckpt))
    tester.test()
    layers = quantized_layers(unwrap(tester.model))
    assert [n for n, _, _ in layers] == ["net.0", "net.3"]
    for name, module, p in layers:
        assert torch.equal(float_weight(module), weights[f"{name}.weight"])
        assert torch.equal(p.quantizer.levels, reference(name))

    # The same float checkpoint into a model quantized already (fitted on its random init): renamed, re-fit.
    late = _runner(tmp_path / "late", [_hook()])
    late.test()
    before = {n: p.quantizer.levels.clone() for n, _, p in quantized_layers(unwrap(late.model))}
    late.load_checkpoint(str(ckpt))
    late.test()
    for name, module, p in quantized_layers(unwrap(late.model)):
        assert torch.equal(float_weight(module), weights[f"{name}.weight"])
        assert torch.equal(p.quantizer.levels, reference(name))
        assert not torch.equal(p.quantizer.levels, before[name])


def test_ema_hook_config_trains_and_resumes(tmp_path) -> None:
    ema = {
        "type": "EMAHook",
        "ema_type": "ExponentialMovingAverage",
        "momentum": 0.2,
        "update_buffers": True,
        "priority": 49,
    }
    # docs/openmmlab.md's idiom: a child config appends the hook to its base's custom_hooks.
    (tmp_path / "base.py").write_text(f"custom_hooks = [{ema!r}]\n")
    (tmp_path / "child.py").write_text(
        '_base_ = "./base.py"\n'
        'custom_imports = dict(imports=["cacim_core.integrations.mmengine"], allow_failed_imports=False)\n'
        f"custom_hooks = _base_.custom_hooks + [{_hook()!r}]\n"
    )
    hooks = Config.fromfile(str(tmp_path / "child.py")).custom_hooks
    assert [h["type"] for h in hooks] == ["EMAHook", "CacimHook"]
    runner = _runner(tmp_path, hooks, iters=12)
    runner.train()
    ema_hook = next(h for h in runner.hooks if type(h).__name__ == "EMAHook")
    assert [n for n, _, _ in quantized_layers(ema_hook.ema_model.module)] == ["net.0", "net.3"]
    averaged = float_weight(ema_hook.ema_model.module.net[0])
    assert not torch.equal(averaged, float_weight(unwrap(runner.model).net[0]))  # an average, not a copy
    metrics = runner.test()  # EMAHook swaps the averaged weights in for the test
    assert metrics["acc"] > 70

    saved = torch.load(tmp_path / "iter_6.pth", map_location="cpu")
    resumed = _runner(
        tmp_path / "b", [ema, _hook()], iters=6, resume=True, load_from=str(tmp_path / "iter_6.pth")
    )
    resumed.train()
    # EMAHook saves the averaged weights as the model's and the trained ones under ema_state_dict.
    trained = {k.removeprefix("module."): v for k, v in saved["ema_state_dict"].items() if k != "steps"}
    _assert_state_equal(unwrap(resumed.model), trained)
    ema_resumed = next(h for h in resumed.hooks if type(h).__name__ == "EMAHook")
    _assert_state_equal(ema_resumed.ema_model.module, saved["state_dict"])
    assert int(ema_resumed.ema_model.steps) == int(saved["ema_state_dict"]["steps"]) == 6


def test_noisy_test_metrics_reach_the_message_hub_and_the_json_log(tmp_path) -> None:
    runner = _runner(tmp_path, [_hook(trials=3)], iters=6)
    runner.train()
    metrics = runner.test()
    hub = runner.message_hub
    for key in ("noisy/acc", "noisy/ce", "noisy/ce_std"):
        assert hub.get_scalar(f"test/{key}").current() == pytest.approx(metrics[key])
    log = tmp_path / runner.timestamp / f"{runner.timestamp}.json"
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    logged = next(line for line in lines if "noisy/ce" in line)
    assert logged["noisy/ce"] == pytest.approx(metrics["noisy/ce"], abs=1e-4)
    assert logged["noisy/ce_std"] == pytest.approx(metrics["noisy/ce_std"], abs=1e-4)


def test_grouped_arguments_reach_every_quant_config_field() -> None:
    flat = CacimHook(method="lloyd", levels=3, noise=0.01, include=["a.*"], exclude=["a.0"], first_last="fp",
                     refit_threshold=0.2, quantizer_kwargs={}, eval_noise=0.02, trials=2, seed=3)  # fmt: skip
    grouped = CacimHook(
        quant=dict(
            method="lloyd",
            levels=3,
            noise=0.01,
            include=["a.*"],
            exclude=["a.0"],
            first_last="fp",
            refit_threshold=0.2,
        ),  # fmt: skip
        evaluation=dict(noise=0.02, trials=2, seed=3),
    )
    assert flat.config == grouped.config
    assert (flat.eval_noise, flat.trials, flat.seed) == (0.02, 2, 3)
    assert (grouped.eval_noise, grouped.trials, grouped.seed) == (0.02, 2, 3)
    fields = dict(
        noise="gaussian:delta=0.02,mean=0.01", projection="cosine", adc_bits=6, bias_range_match=True,
        fold_bn=True, levels=8, tile=(64, 64),
    )  # fmt: skip
    every = CacimHook(quant=fields, evaluation=dict(trials=2))
    assert every.config == QuantConfig(**fields)
    # the evaluation draws the trained device's noise (mean shift included) by default
    assert every.eval_noise_model.spec == QuantConfig(**fields).noise_spec == "gaussian:delta=0.02,mean=0.01"
    pcm = CacimHook(noise=0.02, evaluation=dict(noise="pcm:t=86400", trials=2))
    assert pcm.eval_noise_model.spec.startswith("pcm:") and pcm.eval_noise_model.t == 86400
    assert CacimHook(noise=0.03).eval_noise == 0.03


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"levels": 2.5}, "levels must be an int >= 2, got 2.5"),
        ({"levels": 1}, "levels must be an int >= 2, got 1"),
        ({"quant": {"levels": True}}, "levels must be an int >= 2, got True"),
        ({"noise": -0.01}, "noise must be >= 0.0, got -0.01"),
        ({"eval_noise": -0.02, "trials": 3}, "eval_noise must be >= 0.0, got -0.02"),
        ({"eval_noise": 0.02}, r"a noisy test .* needs trials > 0 .*got trials=0"),
        ({"trials": -1}, "trials must be an int >= 0, got -1"),
        ({"include": "backbone.*"}, "include must be a list of fnmatch patterns, got 'backbone.*'"),
        ({"method": "nope"}, "unknown quantizer 'nope'"),
        ({"method": "lqnet", "levels": 3}, "lqnet has 2\\^K levels"),
        ({"quantizer_kwargs": {"bogus": 1}}, "Lloyd.__init__.. got an unexpected keyword argument 'bogus'"),
        ({"quant": {"adc_bits": 1}}, "adc_bits must be >= 2"),
        ({"quant": {"levels": 3}, "levels": 4}, "levels given twice"),
        ({"quant": {"colour": 1}}, r"quant has no field \['colour'\]"),
        ({"adc_bits": 6}, r"unknown argument 'adc_bits'.*quant=dict\(adc_bits=...\)"),
        ({"evaluation": {"draws": 3}}, r"evaluation has no field \['draws'\]"),
    ],
)
def test_bad_arguments_fail_when_the_hook_is_built(kwargs, message) -> None:
    with pytest.raises(ValueError, match=f"^CacimHook: {message}"):
        CacimHook(**kwargs)


def test_include_pattern_matching_nothing_fails_before_run(tmp_path) -> None:
    runner = _runner(tmp_path, [_hook(include=["net.0", "backbone.*"])], iters=6)
    with pytest.raises(
        ValueError, match=r"CacimHook: no layer matched include pattern\(s\) \['backbone.\*'\]"
    ):
        runner.train()
    assert runner.iter == 0 and not quantized_layers(unwrap(runner.model))


class Mixed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.up = nn.ConvTranspose2d(8, 4, 2)
        self.attn = nn.MultiheadAttention(16, 2)
        self.embed = nn.Embedding(10, 16)
        self.norm = nn.LayerNorm(16)
        self.head = nn.Linear(16, 5)


def test_coverage_lists_the_weight_layers_left_float() -> None:
    from cacim_core import quantize_model

    model = quantize_model(Mixed(), QuantConfig(levels=3, exclude=["head"]))
    total = sum(p.numel() for p in model.parameters())
    up = sum(p.numel() for p in model.up.parameters())
    in_proj = model.attn.in_proj_weight.numel() + model.attn.in_proj_bias.numel()
    head = sum(p.numel() for p in model.head.parameters())
    line = coverage(model)
    for count, kind in [(in_proj, "MultiheadAttention (type not quantized)"),
                        (up, "ConvTranspose2d (type not quantized)"),
                        (head, "Linear (not selected)")]:  # fmt: skip
        assert f"{count / 1e6:.3g}M params ({100 * count / total:.1f}%) in 1 {kind}" in line
    assert line.count(" in 1 ") == 3  # nothing else: the quantized Conv2d, out_proj and Embedding, LayerNorm
    assert re.match(r"left float: [\d.]+M params", line)


def test_learned_quantizer_parameters_are_trained_and_scheduled(tmp_path) -> None:
    schedule = [{"type": "CosineAnnealingLR", "T_max": 12, "by_epoch": False, "eta_min": 0.001}]
    runner = _runner(tmp_path, [_hook("lsq")], iters=10, param_scheduler=schedule)
    runner.train()
    groups = runner.optim_wrapper.optimizer.param_groups
    steps = [p.quantizer.step for _, _, p in quantized_layers(unwrap(runner.model))]
    assert len(groups) == 2 and [id(p) for p in groups[1]["params"]] == [id(s) for s in steps]
    # The quantizers' group follows the cosine schedule like the model's (0.05 -> about 0.008 here).
    assert groups[1]["lr"] == groups[0]["lr"] < 0.01
    fitted = [
        2 * float(float_weight(m).abs().mean()) / math.sqrt(1)
        for _, m, _ in quantized_layers(unwrap(runner.model))
    ]
    assert all(float(s) != pytest.approx(f, rel=1e-6) for s, f in zip(steps, fitted, strict=True))


def test_sigkill_then_auto_resume_restores_the_last_checkpoint(tmp_path) -> None:
    """tools/train.py --resume after a SIGKILL: mmengine finds the last checkpoint in the work dir."""
    import os
    import signal
    import subprocess
    import sys
    import time

    script = (
        "import sys; sys.path.insert(0, sys.argv[1]); from test_cacim_hook import _runner, _hook; "
        "_runner(sys.argv[2], [_hook('lsq')], iters=10**6).train()"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(Path(__file__).parent), str(tmp_path)], env=env
    )
    last = tmp_path / "last_checkpoint"
    try:
        deadline = time.time() + 50
        while proc.poll() is None and time.time() < deadline:
            time.sleep(0.3)  # mid-run, checkpoints every 6 iterations
            # Freeze it, and kill it only where `last_checkpoint` names a saved file: SIGKILL while mmengine
            # rewrites that file leaves it empty (mmengine's risk, not the hook's; not under test here).
            os.kill(proc.pid, signal.SIGSTOP)
            if last.is_file() and last.read_text().strip() and Path(last.read_text().strip()).is_file():
                break
            os.kill(proc.pid, signal.SIGCONT)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    ckpt = Path(last.read_text().strip())
    saved = torch.load(ckpt, map_location="cpu")
    resumed = _runner(tmp_path, [_hook("lsq")], iters=saved["meta"]["iter"], resume=True)
    resumed.train()
    assert resumed.iter == saved["meta"]["iter"] >= 6
    _assert_state_equal(unwrap(resumed.model), saved["state_dict"])


# -- a packaged mmdet config (RetinaNet R-50 FPN, PASCAL VOC), retargeted to the generated VOC files --------


def _openmmlab() -> None:
    try:
        import mmdet  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"mmdet not importable ({exc}); run scripts/setup_openmmlab.sh .venv/bin/python")


def _packaged(name: str) -> Path:
    """A config file shipped in the mmdet package (what `mmdet::name` names in a `_base_`)."""
    import mmdet

    return Path(mmdet.__file__).parent / ".mim" / "configs" / name


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory):
    from benchmarks.openmmlab.voc_shapes import SMOKE, write_voc_shapes

    root = tmp_path_factory.mktemp("voc")
    write_voc_shapes(root, SMOKE)
    return root


CACIM = {"type": "CacimHook", "quant": {"levels": 3, "noise": 0.02}}
# RTMDet's and YOLOX's EMAHook, as their packaged configs declare it.
EMA = {
    "type": "EMAHook",
    "ema_type": "ExpMomentumEMA",
    "momentum": 0.0002,
    "update_buffers": True,
    "priority": 49,
}


def _retinanet(voc_root, work_dir, hooks: list[dict], iters: int = 0, **runner_kw) -> Runner:
    """mmdet's packaged RetinaNet VOC config as tools/train.py (iters > 0) or tools/test.py builds it:
    only the data (generated VOC files, 64-pixel images, no workers), the schedule length and the
    backbone init (no ImageNet download here) change."""
    from mmengine.config import Config

    cfg = Config.fromfile(str(_packaged("pascal_voc/retinanet_r50_fpn_1x_voc0712.py")))
    cfg.model.backbone.init_cfg = None
    voc = {
        "type": "VOCDataset",
        "data_root": str(voc_root / "VOCdevkit"),
        "data_prefix": {"sub_data_root": "VOC2007/"},
    }
    load = [{"type": "LoadImageFromFile"}, {"type": "LoadAnnotations", "with_bbox": True}]
    resize = {"type": "Resize", "scale": (64, 64), "keep_ratio": True}
    loader = {"batch_size": 2, "num_workers": 0, "persistent_workers": False}
    cfg.train_dataloader = {
        **loader,
        "sampler": {"type": "InfiniteSampler"},
        "dataset": {
            **voc,
            "ann_file": "VOC2007/ImageSets/Main/trainval.txt",
            "pipeline": [*load, resize, {"type": "PackDetInputs"}],
        },
    }
    meta = ("img_id", "img_path", "ori_shape", "img_shape", "scale_factor")
    cfg.test_dataloader = {
        **loader,
        "sampler": {"type": "DefaultSampler", "shuffle": False},
        "dataset": {**voc, "ann_file": "VOC2007/ImageSets/Main/test.txt", "test_mode": True,
                    "pipeline": [load[0], resize, load[1], {"type": "PackDetInputs", "meta_keys": meta}]},
    }  # fmt: skip
    cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
    cfg.train_cfg = {"type": "IterBasedTrainLoop", "max_iters": max(iters, 1), "val_interval": 10**6}
    cfg.param_scheduler = None
    cfg.default_hooks.checkpoint = {"type": "CheckpointHook", "interval": 2, "by_epoch": False}
    cfg.log_processor = {"by_epoch": False}
    cfg.custom_hooks = hooks
    cfg.work_dir = str(work_dir)
    cfg.randomness = {"seed": 0}
    cfg.merge_from_dict(runner_kw)
    return Runner.from_cfg(cfg)


def test_packaged_retinanet_resume_and_load_from_keep_every_tensor(voc_root, tmp_path) -> None:
    _openmmlab()
    cacim = {**CACIM, "evaluation": {"trials": 2}}
    trained = _retinanet(voc_root, tmp_path / "train", [cacim], iters=4)
    trained.train()
    layers = quantized_layers(unwrap(trained.model))
    assert len(layers) == sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in unwrap(trained.model).modules())
    expected = trained.test()
    assert {"pascal_voc/mAP", "noisy/pascal_voc/mAP", "noisy/pascal_voc/mAP_std"} <= expected.keys()

    # resume=True at iteration 2, to iteration 2: the model and the optimizer are the checkpoint's.
    ckpt = tmp_path / "train" / "iter_2.pth"
    saved = torch.load(ckpt, map_location="cpu")
    resumed = _retinanet(voc_root, tmp_path / "resume", [cacim], iters=2, resume=True, load_from=str(ckpt))
    resumed.train()
    _assert_state_equal(unwrap(resumed.model), saved["state_dict"])
    state = resumed.optim_wrapper.optimizer.state_dict()["state"]
    assert state.keys() == saved["optimizer"]["state"].keys()
    assert all(
        torch.equal(state[i]["momentum_buffer"], s["momentum_buffer"])
        for i, s in saved["optimizer"]["state"].items()
    )

    # tools/test.py with load_from = the last checkpoint: the training run's test metrics, noisy ones too.
    tester = _retinanet(
        voc_root, tmp_path / "test", [cacim], load_from=str(tmp_path / "train" / "iter_4.pth")
    )
    assert tester.test() == expected  # mAP is ~0 after 4 iterations: the tensors are the real check
    _assert_state_equal(unwrap(tester.model), unwrap(trained.model).state_dict())


def test_packaged_retinanet_with_rtmdet_ema_hook_trains_quantized(voc_root, tmp_path) -> None:
    _openmmlab()
    runner = _retinanet(voc_root, tmp_path, [EMA, CACIM], iters=2)
    runner.train()
    ema = next(h for h in runner.hooks if type(h).__name__ == "EMAHook")
    assert len(quantized_layers(ema.ema_model.module)) == len(quantized_layers(unwrap(runner.model))) > 0
    assert runner.test()["pascal_voc/mAP"] >= 0


def test_packaged_retinanet_float_checkpoint_fits_the_loaded_weights(voc_root, tmp_path) -> None:
    _openmmlab()
    _retinanet(voc_root, tmp_path / "float", [], iters=2).train()
    ckpt = tmp_path / "float" / "iter_2.pth"
    weights = torch.load(ckpt, map_location="cpu")["state_dict"]
    tester = _retinanet(voc_root, tmp_path / "test", [CACIM], load_from=str(ckpt))
    tester.test()
    for name, module, p in quantized_layers(unwrap(tester.model))[::10]:
        assert torch.equal(float_weight(module), weights[f"{name}.weight"])
        q = quantizers.build("lloyd", levels=3)
        q.fit(weights[f"{name}.weight"])
        assert torch.equal(p.quantizer.levels, q.levels)


def test_packaged_dcn_faster_rcnn_lists_its_deformable_convs() -> None:
    _openmmlab()
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config

    from cacim_core import quantize_model

    register_all_modules()
    cfg = Config.fromfile(str(_packaged("dcn/faster-rcnn_r50-dconv-c3-c5_fpn_1x_coco.py")))
    cfg.model.backbone.init_cfg = None
    model = quantize_model(MODELS.build(cfg.model), QuantConfig(levels=4))
    deform = [m for m in model.modules() if type(m).__name__ == "DeformConv2dPack"]
    blocks = (3, 4, 6, 3)  # ResNet-50's bottlenecks per stage; DCN replaces conv2 where stage_with_dcn
    assert len(deform) == sum(
        n for n, dcn in zip(blocks, cfg.model.backbone.stage_with_dcn, strict=True) if dcn
    )
    count = sum(p.numel() for m in deform for p in m.parameters(recurse=False))
    total = sum(p.numel() for p in model.parameters())
    share = f"{count / 1e6:.3g}M params ({100 * count / total:.1f}%)"
    assert f"{share} in {len(deform)} DeformConv2dPack (type not quantized)" in coverage(model)


def test_adc_bits_from_a_config_are_calibrated_on_the_loops_data(tmp_path) -> None:
    from cacim_core.device import ADC

    hook = {
        "type": "CacimHook",
        "quant": {"levels": 3, "adc_bits": 6, "exclude": ["net.5"]},
        "adc_batches": 2,
    }
    trained = _runner(tmp_path / "train", [hook], iters=6)
    trained.train()  # ADCs calibrated before training, then again after it
    adcs = [m for m in unwrap(trained.model).modules() if isinstance(m, ADC)]
    assert len(adcs) == 2 and all(float(a.range) > 0 and int(a.batches) == 2 for a in adcs)

    # tools/test.py with a float checkpoint: calibrated on the first two test batches (32 samples each).
    _runner(tmp_path / "float", [], iters=6).train()
    tester = _runner(tmp_path / "test", [hook], load_from=str(tmp_path / "float" / "iter_6.pth"))
    tester.test()
    first = unwrap(tester.model).net[0]
    first.eval()
    data = toy_data(96, 1)
    quantiles = []
    with torch.no_grad():  # the range: mean over batches of the 0.999 quantile of |output| (device.ADC)
        for start in (0, 32):
            x = torch.stack([d["inputs"] for d in data[start : start + 32]])
            quantiles.append(torch.quantile(F.linear(x, first.weight, first.bias).abs().flatten(), 0.999))
    assert float(first.adc.range) == pytest.approx(float(sum(quantiles) / 2), rel=1e-6)
