"""`CacimHook`: cacim quantization, Algorithm 1 re-fits and noisy test trials inside any mmengine Runner.

A plain OpenMMLab config gains quantization with two lines, nothing forked:

    custom_imports = dict(imports=["cacim_core.integrations.mmengine"], allow_failed_imports=False)
    custom_hooks = [dict(type="CacimHook", method="lloyd", levels=3, noise=0.01, trials=5,
                         include=["backbone.*"], exclude=["backbone.features.0"])]

- `before_train` / `before_val` / `before_test`: `quantize_model` on the (unwrapped) model, once; any
  parameter the quantizers add (e.g. LSQ's step) joins the optimizer as a new parameter group.
- `after_train_iter`: `refit_check` (Algorithm 1: re-fit a layer whose projection drifted beyond T).
- `after_test_epoch`: when `trials > 0` and the evaluation noise is non-zero, the test loop runs again
  `trials` times, each under one fixed weight-noise draw (one programmed chip); the metrics dict
  returned by `runner.test()` gains `noisy/<metric>` (mean) and `noisy/<metric>_std` (std). With
  `eval_noise_file` (a conductance CSV, `cacim_core.measured`) the draws come from the measured devices
  (Figure 4(b)) instead of the Gaussian `eval_noise`.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import torch
from mmengine.hooks import Hook
from mmengine.model import BaseTTAModel, is_model_wrapper
from mmengine.registry import HOOKS
from torch import nn

from cacim_core import QuantConfig, quantize_model, quantized_layers
from cacim_core.evaluate import noisy_evaluate
from cacim_core.measured import MeasuredConductances, MeasuredNoise
from cacim_core.training import refit_check, refit_counts


def unwrap(model: nn.Module) -> nn.Module:
    """The model that owns the weights: strips DDP-style wrappers and test-time-augmentation wrappers."""
    while hasattr(model, "module") and (is_model_wrapper(model) or isinstance(model, BaseTTAModel)):
        model = model.module
    return model


@HOOKS.register_module()
class CacimHook(Hook):
    """Quantize a model's Conv/Linear weights with cacim, re-fit during training, test under noise."""

    priority = "ABOVE_NORMAL"  # quantize before other hooks see the model; noisy metrics before logging

    def __init__(
        self,
        method: str = "lloyd",
        levels: int = 4,
        noise: float = 0.0,
        eval_noise: float | None = None,
        eval_noise_file: str | None = None,
        trials: int = 0,
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
        first_last: str = "quantize",
        refit_threshold: float = 0.1,
        quantizer_kwargs: dict[str, Any] | None = None,
        seed: int = 0,
    ) -> None:
        self.config = QuantConfig(
            method=method,
            levels=levels,
            noise=noise,
            first_last=first_last,
            include=tuple(include),
            exclude=tuple(exclude),
            quantizer_kwargs=dict(quantizer_kwargs or {}),
            refit_threshold=refit_threshold,
        )
        self.eval_noise = noise if eval_noise is None else eval_noise
        if trials < 0:
            raise ValueError(f"CacimHook: trials must be >= 0, got {trials}")
        # Read the conductance file now, so a bad one fails before any training.
        self.eval_noise_file = eval_noise_file
        self.measured = (
            MeasuredNoise(MeasuredConductances.from_csv(eval_noise_file)) if eval_noise_file else None
        )
        if self.measured is not None and eval_noise is not None:
            raise ValueError("CacimHook: give eval_noise (Gaussian) or eval_noise_file (measured), not both")
        if self.measured is not None and trials == 0:
            raise ValueError("CacimHook: eval_noise_file needs trials > 0 (noise draws to evaluate)")
        if self.measured is not None:
            self.eval_noise = 0.0  # no Gaussian evaluation noise: the measured devices replace it
        self.trials = trials
        self.seed = seed
        self.refits = 0
        self.noisy: dict[str, dict[str, float]] = {}

    def _quantize(self, runner) -> None:
        model = unwrap(runner.model)
        if quantized_layers(model):
            return
        before = {id(p) for p in model.parameters()}
        quantize_model(model, self.config)
        layers = quantized_layers(model)
        if not layers:
            raise ValueError(
                f"CacimHook: no Conv/Linear layer matched include={list(self.config.include)} "
                f"exclude={list(self.config.exclude)}; check the patterns against model.named_modules()"
            )
        new = [p for p in model.parameters() if id(p) not in before and p.requires_grad]
        optim_wrapper = getattr(runner, "optim_wrapper", None)
        if new and optim_wrapper is not None and hasattr(optim_wrapper, "optimizer"):
            optim_wrapper.optimizer.add_param_group({"params": new})
        runner.logger.info(
            f"CacimHook: {len(layers)} layers quantized ({self.config.method}, {self.config.levels} levels, "
            f"training noise {self.config.noise}): {', '.join(name for name, _, _ in layers)}"
        )

    def before_train(self, runner) -> None:
        self._quantize(runner)

    def before_val(self, runner) -> None:
        self._quantize(runner)

    def before_test(self, runner) -> None:
        self._quantize(runner)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        self.refits += refit_check(unwrap(runner.model))

    def after_train(self, runner) -> None:
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

    def after_test_epoch(self, runner, metrics: dict[str, float] | None = None) -> None:
        if self.trials == 0 or (self.eval_noise == 0 and self.measured is None):
            return
        noise = {"noise_fn": self.measured} if self.measured is not None else {"delta": self.eval_noise}
        result = noisy_evaluate(
            unwrap(runner.model),
            lambda _model: self._test_metrics(runner),
            draws=self.trials,
            seed=self.seed,
            **noise,
        )
        self.noisy = {"mean": dict(result.mean), "std": dict(result.std)}
        summary = ", ".join(f"{k} {result.mean[k]:.4f} ± {result.std[k]:.4f}" for k in result.mean)
        what = (
            f"conductances {self.eval_noise_file}"
            if self.measured is not None
            else f"delta {self.eval_noise}"
        )
        runner.logger.info(
            f"CacimHook: {self.trials} noisy test trials ({what}, seed {self.seed}): {summary}"
        )
        if metrics is not None:
            for key in result.mean:
                metrics[f"noisy/{key}"] = result.mean[key]
                metrics[f"noisy/{key}_std"] = result.std[key]
