"""`CacimHook`: cacim quantization, Algorithm 1 re-fits and noisy test trials inside any mmengine Runner.

A plain OpenMMLab config gains quantization with two lines, nothing forked:

    custom_imports = dict(imports=["cacim_core.integrations.mmengine"], allow_failed_imports=False)
    custom_hooks = _base_.custom_hooks + [   # or [dict(...)] when the base config has none
        dict(type="CacimHook", quant=dict(method="lloyd", levels=3, noise=0.01, include=["backbone.*"]),
             evaluation=dict(trials=5, noise=0.01, seed=0)),
    ]

`quant` holds any `QuantConfig` field; `evaluation` the noisy test (trials, noise, noise_mean, noise_file,
seed). The flat form `CacimHook(method=..., levels=..., noise=..., eval_noise=..., trials=...)` names the
same things (FLAT below). When the hook acts (mmengine's Runner calls `before_run`, then, when training,
`init_weights`, then loads a checkpoint; `before_train/val/test` come after the load):
- `after_load_checkpoint` (before the state dict is copied into the model): a checkpoint saved with the
  hook (`...parametrizations.weight.original` keys) -> quantize now, so the load restores every float
  weight, quantizer buffer and learned quantizer parameter; key sets must match exactly. The new quantizer
  parameters join the optimizer before `resume` loads its state. A float checkpoint (no such keys) loads
  into the float model, as mmengine does without the hook.
- `before_train/val/test`: quantize if not done yet, each layer's quantizer fitted on the weights the
  model holds now (the loaded float checkpoint: Algorithm 1 starts from the float model). Quantizing in
  `before_run` would be too early: the Runner calls `init_weights` after it, and init functions write
  into `module.weight`, which on a quantized layer is a computed tensor (the init would be lost).
- After quantizing, every `EMAHook` rebuilds its averaged copy from the quantized model (it copied the
  float model in its `before_run`); CacimHook's priority (ABOVE_NORMAL) runs it before EMAHook (NORMAL,
  or 49 in mmdet's configs) at every point.
- With `quant=dict(adc_bits=...)`, the ADC ranges are calibrated on the first `adc_batches` batches of the
  loop's dataset before training/testing (unless loaded) and again after training.
- `after_train_iter`: `refit_check` (Algorithm 1: re-fit a layer whose projection drifted beyond T); it
  runs before CheckpointHook, so a checkpoint holds the re-fitted levels.
- `after_test_epoch`: with `trials > 0` and evaluation noise, the test loop runs `trials` more times, each
  under one fixed weight-noise draw (one programmed chip); `noisy/<metric>` (mean) and
  `noisy/<metric>_std` join the metrics `runner.test()` returns and the message hub (`test/noisy/...`),
  which LoggerHook (BELOW_NORMAL, after this hook) writes to the log and the JSON scalars. With
  `noise_file` (a conductance CSV, `cacim_core.measured`) the draws come from the measured devices.

Importing this module also allow-lists the classes an mmengine checkpoint holds (HistoryBuffer, numpy
arrays and scalars) for torch's weights-only `torch.load`, the default since torch 2.6, which mmengine
0.10.7 calls without `weights_only`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import numbers
import pickle
import re
from collections import defaultdict
from typing import Any, NoReturn

import numpy as np
import torch
from mmengine.hooks import EMAHook, Hook
from mmengine.logging import HistoryBuffer
from mmengine.model import BaseTTAModel, is_model_wrapper
from mmengine.optim import OptimWrapper, OptimWrapperDict
from mmengine.optim.scheduler.param_scheduler import _ParamScheduler
from mmengine.registry import HOOKS
from torch import nn
from torch.nn.utils import parametrize
from torch.utils.data import DataLoader

from cacim_core import QuantConfig, float_weight, quantize_model, quantized_layers, quantizers
from cacim_core.convert import LAYER_TYPES, _matches
from cacim_core.device import ADC, calibrate_adc
from cacim_core.evaluate import noisy_evaluate
from cacim_core.measured import MeasuredConductances, MeasuredNoise
from cacim_core.noise import parse as noise_parse
from cacim_core.training import refit_check, refit_counts


def _history_buffer_method(owner: type, name: str) -> Any:
    """`getattr` as weights-only unpickling sees it: HistoryBuffer pickles its statistics methods as
    getattr(HistoryBuffer, "min"); this allows exactly those, never getattr in general."""
    if owner is HistoryBuffer and name in ("min", "max", "current", "mean"):
        return getattr(owner, name)
    raise pickle.UnpicklingError(f"weights-only load: getattr({owner!r}, {name!r}) is not allow-listed")


# What mmengine 0.10.7 checkpoints pickle besides tensors (`get_unsafe_globals_in_checkpoint` on one): the
# message hub's HistoryBuffers, with numpy arrays and the methods above inside, and numpy scalars.
torch.serialization.add_safe_globals(
    [
        HistoryBuffer,
        (_history_buffer_method, "builtins.getattr"),
        np.ndarray,
        np.dtype,
        np._core.multiarray._reconstruct,  # type: ignore[attr-defined]  # numpy's stubs omit _core
        np._core.multiarray.scalar,  # type: ignore[attr-defined]
        *{type(np.dtype(t)) for t in (np.float64, np.float32, np.int64, np.int32, np.bool_)},
    ]
)

#: flat argument -> (group, field): today's configs and the table runner use these names.
FLAT = {
    "method": ("quant", "method"),
    "levels": ("quant", "levels"),
    "noise": ("quant", "noise"),
    "include": ("quant", "include"),
    "exclude": ("quant", "exclude"),
    "first_last": ("quant", "first_last"),
    "refit_threshold": ("quant", "refit_threshold"),
    "quantizer_kwargs": ("quant", "quantizer_kwargs"),
    "eval_noise": ("evaluation", "noise"),
    "eval_noise_file": ("evaluation", "noise_file"),
    "trials": ("evaluation", "trials"),
    "seed": ("evaluation", "seed"),
}
EVALUATION = ("trials", "noise", "noise_mean", "noise_file", "seed")
ORIGINAL = re.compile(r"\.parametrizations\.\w+\.original$")


def unwrap(model: nn.Module) -> nn.Module:
    """The model that owns the weights: strips DDP-style wrappers and test-time-augmentation wrappers."""
    while hasattr(model, "module") and (is_model_wrapper(model) or isinstance(model, BaseTTAModel)):
        model = model.module  # type: ignore[assignment]  # a wrapper's `module` is the wrapped Module
    return model


def _fail(message: str) -> NoReturn:
    raise ValueError(f"CacimHook: {message}")


def _real(name: str, value: Any, low: float | None = 0.0) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        _fail(f"{name} must be a number, got {value!r}")
    if low is not None and value < low:
        _fail(f"{name} must be >= {low}, got {value!r}")


def _int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        _fail(f"{name} must be an int >= {low}, got {value!r}")


def _split(quant: dict | None, evaluation: dict | None, flat: dict[str, Any]) -> tuple[dict, dict]:
    """One (quant, evaluation) pair from the grouped and the flat arguments; a field given twice fails."""
    groups = {"quant": dict(quant or {}), "evaluation": dict(evaluation or {})}
    for name, value in flat.items():
        if name not in FLAT:
            _fail(
                f"unknown argument {name!r}; flat arguments: {', '.join(FLAT)}; any QuantConfig field goes "
                f"in quant=dict({name}=...), the noisy test in evaluation=dict({', '.join(EVALUATION)})"
            )
        group, field = FLAT[name]
        if field in groups[group]:
            _fail(f"{name} given twice: as {name}= and in {group}=dict({field}=...)")
        groups[group][field] = value
    unknown = set(groups["evaluation"]) - set(EVALUATION)
    if unknown:
        _fail(f"evaluation has no field {sorted(unknown)}; fields: {', '.join(EVALUATION)}")
    return groups["quant"], groups["evaluation"]


def _quant_config(quant: dict[str, Any]) -> QuantConfig:
    """QuantConfig from a config dict, every value checked with a message naming the hook."""
    fields = {f.name for f in dataclasses.fields(QuantConfig)}
    unknown = set(quant) - fields
    if unknown:
        _fail(f"quant has no field {sorted(unknown)}; QuantConfig fields: {', '.join(sorted(fields))}")
    quant = dict(quant)
    if "levels" in quant:
        _int("levels", quant["levels"], 2)
    for name in ("noise", "refit_threshold"):
        if isinstance(quant.get(name), numbers.Real):  # noise may also be a device-model spec (noise.parse)
            _real(name, quant[name])
    for name in ("include", "exclude"):
        patterns = quant.get(name, ())
        if isinstance(patterns, str) or not all(isinstance(p, str) for p in patterns):
            _fail(f"{name} must be a list of fnmatch patterns, got {patterns!r}")
        quant[name] = tuple(patterns)
    if not isinstance(quant.get("quantizer_kwargs", {}), dict):
        _fail(f"quantizer_kwargs must be a dict, got {quant['quantizer_kwargs']!r}")
    try:
        config = QuantConfig(**quant)
        quantizers.build(config.method, levels=config.levels, **config.quantizer_kwargs)  # fails early
    except (ValueError, KeyError, TypeError) as exc:
        _fail(f"{exc.args[0] if exc.args else exc} (quant={quant})")
    return config


def weight_layers(model: nn.Module) -> list[tuple[str, nn.Module, int]]:
    """(name, module, parameter count) of every module holding a >= 2-D parameter of its own (a weight
    matrix or kernel: Conv, Linear, DeformConv, MultiheadAttention's in_proj, Embedding; not norms)."""
    out = []
    for name, module in model.named_modules():
        if isinstance(module, parametrize.ParametrizationList):
            continue  # counted with the layer that owns it
        own = list(module.named_parameters(recurse=False))
        if parametrize.is_parametrized(module):
            own += list(module.parametrizations.named_parameters())
        if any(p.dim() >= 2 for _, p in own):
            out.append((name, module, sum(p.numel() for _, p in own)))
    return out


def coverage(model: nn.Module) -> str:
    """One line: the weight-bearing layers left float, by type, with their share of all parameters."""
    total = sum(p.numel() for p in model.parameters())
    kept: dict[str, list[int]] = defaultdict(list)
    for _, module, count in weight_layers(model):
        if not parametrize.is_parametrized(module, "weight"):
            why = "not selected" if isinstance(module, LAYER_TYPES) else "type not quantized"
            kept[f"{type(module).__name__} ({why})"].append(count)
    if not kept:
        return "left float: no weight-bearing layer"
    parts = [
        f"{sum(c) / 1e6:.3g}M params ({100 * sum(c) / total:.1f}%) in {len(c)} {kind}"
        for kind, c in sorted(kept.items(), key=lambda item: -sum(item[1]))
    ]
    return "left float: " + "; ".join(parts)


class _TestSteps(nn.Module):
    """`model(batch)` as `calibrate_adc` calls it -> the mmengine model's `test_step(batch)`."""

    model: Any  # an mmengine BaseModel: `test_step` is its own method, not a Module's

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: Any) -> Any:
        return self.model.test_step(batch)


@HOOKS.register_module()
class CacimHook(Hook):
    """Quantize a model's Conv/Linear weights with cacim, re-fit during training, test under noise."""

    priority = "ABOVE_NORMAL"  # before EMAHook (NORMAL) and LoggerHook (BELOW_NORMAL); see the module doc

    def __init__(
        self, quant: dict | None = None, evaluation: dict | None = None, adc_batches: int = 8, **flat: Any
    ) -> None:
        quant, evaluation = _split(quant, evaluation, flat)
        self.config = _quant_config(quant)
        _int("adc_batches", adc_batches, 1)
        self.adc_batches = adc_batches
        trials, seed = evaluation.get("trials", 0), evaluation.get("seed", 0)
        _int("trials", trials, 0)
        _int("seed", seed, 0)
        eval_noise = evaluation.get("noise")
        if isinstance(eval_noise, numbers.Real):
            _real("eval_noise", eval_noise)
        self.eval_noise_mean = evaluation.get("noise_mean", 0.0)
        _real("eval noise_mean", self.eval_noise_mean, low=None)
        # Read the conductance file now, so a bad one fails before any training.
        self.eval_noise_file = evaluation.get("noise_file")
        self.measured = (
            MeasuredNoise(MeasuredConductances.from_csv(self.eval_noise_file))
            if self.eval_noise_file
            else None
        )
        if self.measured is not None and eval_noise is not None:
            _fail("give eval_noise (Gaussian) or eval_noise_file (measured), not both")
        if trials == 0 and (self.measured is not None or eval_noise or "noise_mean" in evaluation):
            _fail(
                f"a noisy test (eval_noise={eval_noise}, eval_noise_file={self.eval_noise_file}) needs "
                f"trials > 0 (noise draws to evaluate), got trials={trials}"
            )
        # The measured devices replace the Gaussian evaluation noise.
        self.eval_noise = (
            0.0 if self.measured is not None else (self.config.noise if eval_noise is None else eval_noise)
        )
        try:  # the evaluation noise as one object, parsed now: a bad spec fails before any training
            self.eval_noise_model = self.measured or noise_parse(
                {"type": "gaussian", "delta": self.eval_noise, "mean": self.eval_noise_mean}
                if isinstance(self.eval_noise, numbers.Real)
                else self.eval_noise
            )
        except (ValueError, KeyError, TypeError) as exc:
            _fail(f"evaluation noise {self.eval_noise!r}: {exc}")
        self.trials = trials
        self.seed = seed
        self.refits = 0
        self.noisy: dict[str, dict[str, float]] = {}
        self._refit_pending = False  # a float checkpoint was loaded into the quantized model
        self._cached: contextlib.ExitStack | None = None

    # -- quantizing ------------------------------------------------------------------------------------

    def _check_patterns(self, model: nn.Module) -> None:
        """Each include pattern must name some Conv/Linear layer: a typo would quantize nothing there."""
        names = [name for name, module in model.named_modules() if isinstance(module, LAYER_TYPES)]
        empty = [p for p in self.config.include if not any(_matches(n, (p,)) for n in names)]
        if empty:
            _fail(
                f"no layer matched include pattern(s) {empty} (include={list(self.config.include)}, "
                f"exclude={list(self.config.exclude)}); Conv/Linear layers: {', '.join(names[:8])}"
                + (f", ... ({len(names)} in all)" if len(names) > 8 else "")
            )

    def before_run(self, runner) -> None:
        """Check the patterns against the model before anything is trained or loaded."""
        self._check_patterns(unwrap(runner.model))

    def _quantize(self, runner) -> None:
        model = unwrap(runner.model)
        if quantized_layers(model):
            return
        self._check_patterns(model)
        before = {id(p) for p in model.parameters()}
        try:
            quantize_model(model, self.config)
        except ValueError as exc:
            _fail(f"{exc} (include={list(self.config.include)}, exclude={list(self.config.exclude)})")
        new = [p for p in model.parameters() if id(p) not in before and p.requires_grad]
        if new:
            self._optimize(runner, new)
        for hook in runner.hooks:  # averaged copies made from the float model: copy the quantized one
            if isinstance(hook, EMAHook) and hasattr(hook, "ema_model"):
                hook.before_run(runner)
        layers = quantized_layers(model)
        runner.logger.info(
            f"CacimHook: {len(layers)} layers quantized ({self.config.method}, {self.config.levels} levels, "
            f"training noise {self.config.noise}): {', '.join(name for name, _, _ in layers)}"
        )
        runner.logger.info(f"CacimHook: {coverage(model)}")

    @staticmethod
    def _optimize(runner, params: list[nn.Parameter]) -> None:
        """Learned quantizer parameters (LSQ's step, TTQ's scales) join the optimizer as one more param
        group, which the already built parameter schedulers then schedule like the others."""
        optim_wrapper = runner.optim_wrapper
        if isinstance(optim_wrapper, OptimWrapperDict):
            _fail("learned quantizer parameters need a single optimizer, not an OptimWrapperDict")
        if not isinstance(optim_wrapper, OptimWrapper):
            return  # not training: no optimizer built
        group = {"params": params}
        optim_wrapper.optimizer.add_param_group(group)
        group = optim_wrapper.optimizer.param_groups[-1]
        schedulers = runner.param_schedulers
        if isinstance(schedulers, dict):
            schedulers = [s for ss in schedulers.values() for s in ss]
        for scheduler in schedulers or []:
            if isinstance(scheduler, _ParamScheduler) and scheduler.param_name in group:
                group.setdefault(f"initial_{scheduler.param_name}", group[scheduler.param_name])
                scheduler.base_values.append(group[f"initial_{scheduler.param_name}"])

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """Runs before mmengine copies the state dict: give the model the checkpoint's structure."""
        model = unwrap(runner.model)
        state = checkpoint.get("state_dict", checkpoint)
        keys = {re.sub(r"^module\.", "", key) for key in state}  # mmengine's default revise_keys
        if any(ORIGINAL.search(key) for key in keys):
            self._quantize(runner)
            expected = model.state_dict()
            missing, unexpected = sorted(set(expected) - keys), sorted(keys - set(expected))
            if missing or unexpected:
                _fail(
                    f"the checkpoint does not fit the quantized model (other include/exclude/first_last "
                    f"or another model?): {len(missing)} missing keys {missing[:5]}, "
                    f"{len(unexpected)} unexpected keys {unexpected[:5]}"
                )
            shapes = {re.sub(r"^module\.", "", k): tuple(v.shape) for k, v in state.items()}
            wrong = [k for k, v in expected.items() if tuple(v.shape) != shapes[k]]
            if wrong:
                _fail(f"checkpoint tensors of another shape (other levels or model?): {wrong[:5]}")
        elif quantized_layers(model):
            self._rename_float_keys(model, state)

    def _rename_float_keys(self, model: nn.Module, state: dict) -> None:
        """A float checkpoint into an already quantized model: `x.weight` -> its float parameter, then
        re-fit every quantizer on the loaded weights at the next before_train/val/test."""
        for name, module in model.named_modules():
            if not parametrize.is_parametrized(module):
                continue
            prefix = f"{name}." if name else ""
            for tensor in module.parametrizations:
                for wrapper in ("", "module."):
                    plain = f"{wrapper}{prefix}{tensor}"
                    if plain in state:
                        state[f"{wrapper}{prefix}parametrizations.{tensor}.original"] = state.pop(plain)
        present = {re.sub(r"^module\.", "", key) for key in state}
        for key, value in model.state_dict().items():
            if ".parametrizations." in key and key not in present:
                state[key] = value.clone()  # quantizer state: fitted afresh after the load, not "missing"
        self._refit_pending = True

    def _calibrate(self, runner, loader, again: bool = False) -> None:
        """Set the ADC ranges (QuantConfig.adc_bits) from the first `adc_batches` batches of this loop's
        dataset, in eval mode and noise-free (`calibrate_adc`); loaded ranges are kept unless `again`."""
        adcs = [m for m in unwrap(runner.model).modules() if isinstance(m, ADC)]
        if not adcs or (not again and all(int(adc.batches) > 0 for adc in adcs)):
            return
        # A loader of its own over the loop's dataset, in order: drawing from the loop's loader would close
        # the shared index generator of mmengine's InfiniteSampler.
        batch_size = loader.batch_size or getattr(loader.batch_sampler, "batch_size", 1)
        own = DataLoader(loader.dataset, batch_size=batch_size, collate_fn=loader.collate_fn)
        seen = calibrate_adc(_TestSteps(runner.model), itertools.islice(own, self.adc_batches))
        runner.logger.info(f"CacimHook: {len(adcs)} ADC ranges calibrated on {seen} batches")

    def _ready(self, runner, loader) -> None:
        self._quantize(runner)
        if self._refit_pending:
            for _, module, p in quantized_layers(unwrap(runner.model)):
                # A fresh fit (a re-fit would warm-start from the old levels), copied in place so the
                # optimizer keeps its references to learned quantizer parameters.
                kwargs = self.config.quantizer_kwargs if p.analog else {}
                fresh = quantizers.build(p.quantizer.registered_name, levels=p.quantizer.num_levels, **kwargs)
                fresh.to(float_weight(module)).fit(float_weight(module))
                p.quantizer.load_state_dict(fresh.state_dict())
            self._refit_pending = False
            runner.logger.info("CacimHook: quantizers re-fitted on the loaded float weights")
        self._calibrate(runner, loader)

    def before_train(self, runner) -> None:
        self._uncache_weights()  # training changes the weights every step
        self._ready(runner, runner.train_loop.dataloader)

    def before_val(self, runner) -> None:
        self._ready(runner, runner.val_loop.dataloader)

    def before_test(self, runner) -> None:
        self._ready(runner, runner.test_loop.dataloader)

    # -- training and testing --------------------------------------------------------------------------

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        self.refits += refit_check(unwrap(runner.model))

    def after_train(self, runner) -> None:
        self._calibrate(runner, runner.train_loop.dataloader, again=True)  # training moved the weights
        counts = {name: n for name, n in refit_counts(unwrap(runner.model)).items() if n}
        runner.logger.info(f"CacimHook: {self.refits} re-fits after the initial fits; per layer: {counts}")

    def _test_metrics(self, runner) -> dict[str, float]:
        """One pass of the test loop's data through the model and its evaluator (no iteration hooks)."""
        loop = runner.test_loop
        with torch.no_grad():
            for data_batch in loop.dataloader:
                outputs = runner.model.test_step(data_batch)
                loop.evaluator.process(data_samples=outputs, data_batch=data_batch)
        metrics = loop.evaluator.evaluate(len(loop.dataloader.dataset))
        return {key: float(value) for key, value in metrics.items() if isinstance(value, numbers.Real)}

    def _cache_weights(self) -> None:
        """Quantize each layer once per val/test epoch instead of once per batch: the weights are fixed."""
        self._uncache_weights()  # one left open by an epoch that raised
        self._cached = contextlib.ExitStack()
        self._cached.enter_context(parametrize.cached())

    def _uncache_weights(self) -> None:
        """Before anything changes the weights (EMAHook swaps them back after this hook; noisy trials)."""
        if self._cached is not None:
            self._cached.close()
            self._cached = None

    def before_val_epoch(self, runner) -> None:
        self._cache_weights()

    def after_val_epoch(self, runner, metrics: dict[str, float] | None = None) -> None:
        self._uncache_weights()

    def before_test_epoch(self, runner) -> None:
        self._cache_weights()

    def after_test_epoch(self, runner, metrics: dict[str, float] | None = None) -> None:
        self._uncache_weights()
        if self.trials == 0 or self.eval_noise_model is None:
            return
        if self.measured is not None:
            what = f"conductances {self.eval_noise_file}"
        else:
            what = self.eval_noise_model.spec
        result = noisy_evaluate(
            unwrap(runner.model),
            lambda _model: self._test_metrics(runner),
            draws=self.trials,
            seed=self.seed,
            noise=self.eval_noise_model,
        )
        self.noisy = {"mean": dict(result.mean), "std": dict(result.std)}
        summary = ", ".join(f"{k} {result.mean[k]:.4f} ± {result.std[k]:.4f}" for k in result.mean)
        runner.logger.info(
            f"CacimHook: {self.trials} noisy test trials ({what}, seed {self.seed}): {summary}"
        )
        noisy = {f"noisy/{k}": v for k, v in result.mean.items()}
        noisy.update({f"noisy/{k}_std": v for k, v in result.std.items()})
        if metrics is not None:
            metrics.update(noisy)
        for key, value in noisy.items():  # RuntimeInfoHook (VERY_HIGH) copied the clean ones already
            runner.message_hub.update_scalar(f"test/{key}", value)
