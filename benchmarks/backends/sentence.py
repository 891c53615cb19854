"""The sentence backend (the transformer track): pretrained all-MiniLM-L6-v2 -> quantize_model (every Linear
and Embedding) -> PTQ fidelity -> short noise-aware distillation -> fidelity under seeded chips and the sweep.

Cells are short (seconds to a minute) and keep no checkpoint: an interrupted cell reruns from the start.
The float model and the tokenized corpus are loaded once per process.
"""

from __future__ import annotations

import copy
import time

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from benchmarks import text
from benchmarks.backends import Context, Outcome, SetupError, gap_metrics, ptq_metrics
from benchmarks.experiments import CONTROL, Cell, Condition
from benchmarks.experiments.transformers import DistillRecipe
from benchmarks.results import Metric, SweepPoint
from cacim_core import (
    QuantConfig,
    coverage,
    noisy_evaluate,
    quantize_model,
    quantized_layers,
    quantizers,
    refit_check,
    refit_counts,
)
from cacim_core.device import attach_adc, calibrate_adc, set_adc, set_tile
from cacim_core.noise import parse

#: what stays float in MiniLM, and why (every Linear and Embedding weight is quantized)
LEFT_FLOAT = {
    "LayerNorm": "an element-wise scale and shift after each block, computed digitally (not a matrix)",
    "bias": "Linear biases are added digitally after the crossbar (QuantConfig.bias_range_match maps them)",
}


class SentenceBackend:
    name = "sentence"
    supports = frozenset({"sweep", "options"})
    hints = {
        "amp": "the transformer track trains in fp32; drop --amp",
        "channels_last": "it has no convolutions; drop --channels-last",
        "reset_head": "the encoder has no classification head; drop --reset-head",
        "distributed": "the transformer track runs one process per cell (use --workers)",
        "measured_eval": "read measured conductances with a noise spec in the sweep instead",
    }

    def __init__(self) -> None:
        self.encoder: text.SentenceEncoder | None = None
        self.tokens: dict[tuple[str, int], tuple[Tensor, str]] = {}

    def _encoder(self) -> text.SentenceEncoder:
        if self.encoder is None:
            self.encoder, self.tokenize = text.load_encoder()
        return self.encoder

    def _tokens(self, corpus: str, max_length: int) -> tuple[Tensor, str]:
        """The whole corpus tokenized to `max_length`, and its fingerprint (once per process)."""
        key = (corpus, max_length)
        if key not in self.tokens:
            sentences, fingerprint = text.corpus(corpus)
            self._encoder()
            self.tokens[key] = (self.tokenize(list(sentences), max_length), fingerprint)
        return self.tokens[key]

    def prepare(self, cells: list[Cell], ctx: Context) -> None:
        """Every input before the first cell: the recipe type, the package, the corpus and its size."""
        for cell in cells:
            if not isinstance(cell.recipe, DistillRecipe):
                raise SetupError(f"{cell.id}: the sentence backend runs DistillRecipe cells")
            if cell.method == CONTROL:
                raise SetupError(
                    f"{cell.id}: the transformer track has no control arm (distilling the float "
                    "model to itself changes nothing): drop the row"
                )
            try:
                sentences, _ = text.corpus(cell.dataset)
                text.split(len(sentences), cell.recipe.train_sentences, cell.recipe.eval_sentences, 0)
            except text.SetupError as exc:
                raise SetupError(f"{cell.id}: {exc}") from None
        try:
            text.model_dir()
        except text.SetupError as exc:
            raise SetupError(str(exc)) from None

    def finetune_and_evaluate(self, cell: Cell, ctx: Context) -> Outcome:
        recipe: DistillRecipe = cell.recipe
        t0 = time.perf_counter()
        tokens, fingerprint = self._tokens(cell.dataset, recipe.max_length)
        train_ids, eval_ids = text.split(
            len(tokens), recipe.train_sentences, recipe.eval_sentences, cell.seed
        )
        train_x, eval_x = tokens[train_ids].to(ctx.device), tokens[eval_ids].to(ctx.device)
        base = self._encoder().to(ctx.device)
        reference, teacher = text.embed(base, eval_x), text.embed(base, train_x)
        fp = text.fidelity(reference, reference, recipe.k)  # 100 and 100: the float model against itself
        model = copy.deepcopy(base)
        config = QuantConfig(
            method=cell.method,
            levels=cell.levels,
            noise=cell.noise_train,
            first_last=cell.first_last,
            refit_threshold=recipe.refit_threshold,
            **dict(cell.options),
        )
        quantize_model(model, config, example_input=eval_x[:2])
        calibration = [train_x[i : i + 64] for i in range(0, len(train_x), 64)]
        if config.adc_bits is not None:
            calibrate_adc(model, calibration)
        measure = lambda m: text.fidelity(reference, text.embed(m, eval_x), recipe.k)  # noqa: E731
        ptq = noisy_evaluate(model, measure, draws=1, seed=cell.seed, noise=0.0).mean
        distill(model, recipe, train_x, teacher, cell.seed)
        if config.adc_bits is not None:
            calibrate_adc(model, calibration)
        draws = cell.trials if cell.noise_eval > 0 else 1
        result = noisy_evaluate(model, measure, draws=draws, seed=cell.seed, noise=cell.noise_eval)
        metrics: dict[str, Metric] = {}
        for k in ("cos", f"nn{recipe.k}"):
            metrics.update(gap_metrics(k, fp[k], Metric(result.mean[k], result.std[k], result.n)))
            metrics.update(ptq_metrics(k, fp[k], ptq[k]))
        metrics["weights_quantized"] = Metric(quantized_share(model))
        sweep = [
            self._point(model, config, at, measure, calibration, cell)
            for at in map(Condition._make, cell.sweep)
        ]
        return Outcome(metrics, fingerprint, time.perf_counter() - t0, False, refit_counts(model), sweep)

    @staticmethod
    def _point(
        model: nn.Module, config: QuantConfig, at: Condition, measure, calibration: list[Tensor], cell: Cell
    ) -> SweepPoint:
        """The trained model on one more chip condition: test noise, ADC bits, crossbar tiles."""
        chip(
            model,
            at.tile if at.tile is not None else config.tile,
            at.adc_bits or config.adc_bits,
            calibration,
        )
        draws = cell.trials if parse(at.noise) is not None else 1
        point = noisy_evaluate(model, measure, draws, cell.seed, noise=at.noise)
        return SweepPoint(
            at.noise,
            at.adc_bits,
            {k: Metric(point.mean[k], point.std[k], point.n) for k in point.mean},
            at.tile,
        )

    def discard(self, cell: Cell, ctx: Context) -> None:
        """Nothing to drop: cells keep no checkpoint."""


def distill(model: nn.Module, recipe: DistillRecipe, x: Tensor, teacher: Tensor, seed: int) -> None:
    """`recipe.steps` Adam steps on 1 - cosine(student, float teacher) over random batches of `x`, fresh
    weight noise in each forward (NATS), Algorithm 1's re-fit check after each step; eval mode after."""
    if recipe.steps == 0:
        return
    optimizer = torch.optim.Adam(quantizers.param_groups(model, recipe.lr, 0.0), lr=recipe.lr)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for step in range(recipe.steps):
        torch.manual_seed(seed * 100_003 + step)  # the NATS draws (and dropout, which BERT has in training)
        pick = torch.randint(len(x), (recipe.batch_size,), generator=generator).to(x.device)
        loss = 1 - F.cosine_similarity(model(x[pick]), teacher[pick], dim=1).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        refit_check(model)
    model.eval()


def chip(model: nn.Module, tile: tuple[int, int] | None, bits: int | None, calibration: list[Tensor]) -> None:
    """Map the analog layers onto `tile`s with a `bits`-bit ADC per tile (None: whole layers, no ADC).

    An Embedding is read by a one-hot input, so one row (token) of one row block drives its outputs: it gets
    one ADC on the looked-up vector (its noise is still drawn per tile)."""
    set_adc(model, None)
    set_tile(model, tile)
    if bits is None:
        return
    for _, module, p in quantized_layers(model):
        if not p.analog:
            continue
        if isinstance(module, nn.Embedding) and tile is not None:
            p.tile = None
            attach_adc(module, bits)
            p.tile = tile
        else:
            attach_adc(module, bits)
    calibrate_adc(model, calibration)


def quantized_share(model: nn.Module) -> float:
    """Percent of all weight-matrix entries (Linear and Embedding weights) that are quantized."""
    rows = coverage(model)
    total = sum(r["weights"] for r in rows)
    return 100 * sum(r["weights"] for r in rows if r["status"].startswith("quantized")) / total


BACKEND = SentenceBackend()
