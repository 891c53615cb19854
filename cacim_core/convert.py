"""`quantize_model(model, config)`: attach a quantizer and weight noise to every selected Conv, Linear and
Embedding layer.

One mechanism: a torch parametrization on `.weight`, so the float weights stay the trained parameters
(`parametrizations.weight.original`), every access of `.weight` returns the quantized (noisy) weights, and
any training loop (ours, mmengine's) works unchanged.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

import torch
import torch.fx
from torch import Tensor, nn
from torch.nn.utils import parametrize

from . import noise as noises
from . import quantizers
from .device import Tile, attach_adc, check_tile, tiled_noise
from .noise import NoiseModel

#: layers whose weight is a crossbar matrix-vector product (BatchNorm folding, per-tile ADCs)
MAC_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
#: every layer type quantize_model quantizes. An Embedding is a crossbar read by a one-hot input (the token's
#: row): its levels are fitted on the whole table, it gets the same straight-through forward and device noise
#: as the others (per-channel quantizers, LQ-Net's, fit one basis per table row, i.e. per token)
LAYER_TYPES = (*MAC_TYPES, nn.Embedding)
log = logging.getLogger("cacim_core")
FIRST_LAST = ("quantize", "fp", "8bit")
NoiseFn = Callable[[Tensor, "torch.Generator | None"], Tensor]
NoiseSpec = float | str | dict | NoiseModel | NoiseFn | None


@dataclass(frozen=True)
class QuantConfig:
    """Everything that decides how a model is quantized; one object, like torchao's configs.

    noise: the training noise, any spec `cacim_core.noise.parse` reads, drawn fresh every training forward:
    a float is the NATS delta (sigma = noise * max|W_q|); "gaussian:delta=0.02,mean=0.05" adds a device
    mean shift; "pcm:t=86400", "stuck:gmax=0.01", "measured:path=chip.csv", a dict or a noise object
    select a device model. It is parsed once here (`noise_model()`); the spec string is `noise_spec`.
    first_last: the paper's footnotes: "quantize" (no mark), "fp" (*, first and last layer stay float)
    or "8bit" (+, 255-level uniform, noise-free digital layers).
    include/exclude: fnmatch patterns on module names (a name also covers the module's children).
    refit_threshold: Algorithm 1's T (None: never re-fit);
    projection: "ratio" (<Wq,W>/||Wq||^2, the default: exactly 1 right after a Lloyd fit) or "cosine".
    adc_bits: digitise each analog layer's output with a b-bit ADC (`device.ADC`; calibrate its range with
    `device.calibrate_adc` before use). tile: (rows, cols), the largest crossbar tile: each layer's
    (out, in * k * k) weight matrix is split into tiles of at most that size, each with its own noise
    scale (max|W_q| of the tile) and, with adc_bits, its own ADC on its partial sums (Linear and groups=1
    Conv layers); None: one tile per layer.
    bias_range_match: program a layer's bias as one more crossbar column, [W b/s][x; s], quantized with
    the weights' levels and noise (`BiasColumn`). fold_bn: fold every BatchNorm
    that directly follows a Conv/Linear into it (`fold_batchnorm`) before quantizing.
    """

    method: str = "lloyd"
    levels: int = 4
    noise: NoiseSpec = 0.0
    first_last: str = "quantize"
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    quantizer_kwargs: dict = field(default_factory=dict)
    refit_threshold: float | None = 0.1
    projection: str = "ratio"
    adc_bits: int | None = None
    tile: Tile | None = None
    bias_range_match: bool = False
    fold_bn: bool = False

    def __post_init__(self) -> None:
        quantizers.base.check_levels_arg(self.levels, "QuantConfig.levels")
        if self.first_last not in FIRST_LAST:
            raise ValueError(f"first_last must be one of {FIRST_LAST}, got {self.first_last!r}")
        if self.projection not in ("ratio", "cosine"):
            raise ValueError(f"projection must be 'ratio' or 'cosine', got {self.projection!r}")
        if self.method not in quantizers.names():
            raise KeyError(f"unknown quantizer {self.method!r}; registered: {', '.join(quantizers.names())}")
        if self.adc_bits is not None and self.adc_bits < 2:
            raise ValueError(f"adc_bits must be >= 2 (a signed ADC) or None, got {self.adc_bits}")
        object.__setattr__(self, "tile", check_tile(self.tile))
        object.__setattr__(self, "_noise", noises.parse(self.noise))

    def noise_model(self) -> NoiseModel | None:
        """The training noise object, parsed once from `noise` (None: noise-free)."""
        return self._noise  # type: ignore[attr-defined]

    @property
    def noise_spec(self) -> str:
        """Stable string of the training noise ("none", "gaussian:delta=0.02", "pcm:t=3600", ...)."""
        model = self.noise_model()
        return "none" if model is None else model.spec


class QuantizedWeight(nn.Module):
    """The parametrization: W -> quantizer(W) (+ noise in training, or in eval inside `weight_noise`).

    analog: the layer sits on the crossbar (noise, ADC); False for the noise-free digital 8-bit end layers.
    tile: the crossbar tile size (`QuantConfig.tile`): noise is drawn tile by tile (`device.tiled_noise`).
    """

    quantizer: quantizers.Quantizer
    refits: Tensor

    def __init__(
        self,
        quantizer: quantizers.Quantizer,
        noise: NoiseModel | None,
        config: QuantConfig,
        analog: bool = True,
    ) -> None:
        super().__init__()
        self.quantizer = quantizer
        self.noise = noise
        self.analog = analog
        self.tile = config.tile if analog else None
        self.refit_threshold = config.refit_threshold
        self.projection = config.projection
        #: Algorithm 1's re-fits since quantize_model, a buffer so that checkpoints keep it (an EMA copy's
        #: count is an average or its copy's: read `refit_counts` of the trained model)
        self.register_buffer("refits", torch.zeros((), dtype=torch.long))
        self.eval_noise: tuple[NoiseModel | None, torch.Generator | None] | None = None
        #: what a checkpoint of this layer must have been quantized with: kept in the state_dict's metadata
        #: (no extra key, so EMA helpers that average every state_dict tensor are unaffected)
        self.method = config.method if analog else "uniform_maxabs"
        self.register_state_dict_post_hook(_stamp)
        self.register_load_state_dict_pre_hook(_check_stamp)

    def stamp(self) -> dict:
        return {"method": self.method, "levels": self.quantizer.num_levels}

    def forward(self, w: Tensor) -> Tensor:
        return self.perturb(self.quantizer(w))

    def perturb(self, wq: Tensor) -> Tensor:
        """Add the device noise: fresh in training, the seeded draw inside `weight_noise`, else none."""
        if self.eval_noise is not None and not self.training:
            noise, generator = self.eval_noise
            return wq if noise is None else wq + self.draw(noise, wq, generator)
        if self.training and self.noise is not None:
            return wq + self.draw(self.noise, wq, None)
        return wq

    def draw(self, noise: NoiseFn, wq: Tensor, generator: torch.Generator | None) -> Tensor:
        """One noise sample for `wq`: per crossbar tile when the layer is tiled (a bias vector is not)."""
        if self.tile is None or wq.dim() < 2:
            return noise(wq, generator)
        return tiled_noise(noise, wq, self.tile, generator)

    @torch.no_grad()
    def clean(self, w: Tensor) -> Tensor:
        """Noise-free quantized weights, without side effects on learned quantizer state."""
        was_training = self.quantizer.training
        self.quantizer.eval()
        try:
            return self.quantizer.quantize(w)
        finally:
            self.quantizer.train(was_training)


def _stamp(module: QuantizedWeight, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    local_metadata["cacim"] = module.stamp()


def _check_stamp(
    module: QuantizedWeight, state_dict: dict, prefix: str, local_metadata: dict, *_: object
) -> None:
    """A checkpoint of another method or level count would load silently (same buffer shapes, e.g. lloyd
    4L into uniform 4L): refuse it, naming both. Checkpoints without the stamp load as before."""
    theirs, mine = local_metadata.get("cacim"), module.stamp()
    if theirs is not None and (theirs.get("method"), theirs.get("levels")) != (
        mine["method"],
        mine["levels"],
    ):
        raise ValueError(
            f"checkpoint quantized with {theirs.get('method')} at {theirs.get('levels')} levels, this "
            f"model with {mine['method']} at {mine['levels']}: build the model with the checkpoint's "
            "QuantConfig (or load a float checkpoint with cacim_core.load_float)"
        )


class BiasColumn(nn.Module):
    """Bias range matching (the HA-SGD poster's eq.): W x + b = [W b/s][x; s], the bias as one more column.

    s = max|b| / max|W| (fixed when the layer is converted, a constant input voltage) puts b/s in the weights'
    range, so the bias column is quantized with the weights' levels and edges (straight-through gradient) and
    carries the same device noise, relative to the largest quantized value of the whole [W b/s] array.
    Simplification: the levels are fitted on W alone (the column is 1 of fan_in + 1 entries per row).
    """

    scale: Tensor
    layer: nn.Module
    weight_param: QuantizedWeight

    def __init__(self, layer: nn.Module, weight_param: QuantizedWeight) -> None:
        super().__init__()
        levels = weight_param.quantizer.levels
        if levels.dim() > 1 and levels.shape[0] > 1:
            raise ValueError(
                f"bias_range_match needs one level set per layer, {type(weight_param.quantizer).__name__} "
                "has one per output channel: pass quantizer_kwargs={'per_channel': False} or drop the option"
            )
        w, b = float_weight(layer).detach(), cast(Tensor, layer.bias).detach()
        w_max, b_max = w.abs().max(), b.abs().max()
        self.register_buffer("scale", (b_max / w_max) if w_max > 0 and b_max > 0 else torch.ones(()).to(w))
        # plain references, not submodules: the layer owns both, and state_dict must not hold them twice
        object.__setattr__(self, "layer", layer)
        object.__setattr__(self, "weight_param", weight_param)

    def _snap(self, x: Tensor) -> Tensor:
        q = self.weight_param.quantizer
        levels, edges = q.levels.to(x).reshape(-1), q.edges.to(x).reshape(-1)  # one set (LQ-Net: 1 x v)
        return levels[torch.bucketize(x.detach(), edges)]

    def forward(self, b: Tensor) -> Tensor:
        x = b / self.scale
        xq = self._snap(x) + (x - x.detach())
        w = float_weight(self.layer).detach()
        ends = self._snap(torch.stack([w.max(), w.min()]))  # max|Wq| of a monotone quantizer: 2 values
        return self.weight_param.perturb(torch.cat([xq, ends]))[: len(b)] * self.scale

    @torch.no_grad()
    def clean(self, b: Tensor) -> Tensor:
        return self._snap(b / self.scale) * self.scale


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    """A pattern names a module and everything inside it: "features.0" also matches "features.0.conv"."""
    parts = name.split(".")
    prefixes = [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
    return any(fnmatch.fnmatchcase(prefix, p) for prefix in prefixes for p in patterns)


def quantize_model(model: nn.Module, config: QuantConfig, example_input: object = None) -> nn.Module:
    """Quantize `model` in place and return it; each layer's quantizer is fitted on its current weights.

    `example_input` (a tensor or a tuple of positional inputs) finds the first and last layers by a forward
    in eval mode, for models torch.fx cannot trace; without it they come from the fx graph."""
    if quantized_layers(model):
        raise ValueError(
            "model is already quantized: call quantize_model once (export() gives plain weights)"
        )
    if config.fold_bn:
        fold_batchnorm(model)
    plan = selection(model, config, example_input)
    if not plan:  # selection has an entry for every Conv/Linear layer
        raise ValueError("model has no Conv, Linear or Embedding layer to quantize")
    selected = 0
    for name, module in model.named_modules():
        if plan.get(name) not in (ANALOG, DIGITAL):
            continue
        analog = plan[name] == ANALOG
        if analog:
            noise = config.noise_model()
            kwargs = dict(config.quantizer_kwargs)
            if getattr(quantizers.base.QUANTIZERS.get(config.method), "noise_aware", False):
                kwargs.setdefault("noise", noise)  # e.g. lloyd_noise: fit under the training noise model
            quantizer = quantizers.build(config.method, levels=config.levels, **kwargs)
        else:
            quantizer, noise = quantizers.build("uniform_maxabs", levels=255), None
        weight = module.weight.detach()
        quantizer.to(device=weight.device, dtype=weight.dtype)
        quantizers.base.fit_checked(quantizer, weight, name)
        param = QuantizedWeight(quantizer, noise, config, analog)
        parametrize.register_parametrization(module, "weight", param)
        if analog and config.bias_range_match and getattr(module, "bias", None) is not None:
            parametrize.register_parametrization(module, "bias", BiasColumn(module, param))
        if analog and (config.adc_bits is not None or getattr(noise, "input_bits", None) is not None):
            attach_adc(module, config.adc_bits)  # bits None: the input DAC of a "dac:bits=b" noise only
        selected += 1
    if selected == 0:
        why = sorted(set(plan.values()))
        hint = (
            "check QuantConfig.include/exclude against model.named_modules()"
            if (config.include or config.exclude)
            else "use first_last='quantize' or '8bit'"
        )
        raise ValueError(f"no layer matched ({len(plan)} Conv/Linear layers: {'; '.join(why)}): {hint}")
    rows = coverage(model, plan)
    unsupported = [r["name"] or "(model)" for r in rows if r["status"].startswith("float: unsupported")]
    log.info("%s", summary(rows))
    if unsupported:
        log.warning(
            "quantize_model left %d layer(s) float, their type is not supported: %s (cacim_core.summary "
            "lists every layer)",
            len(unsupported),
            ", ".join(unsupported[:8]) + (" ..." if len(unsupported) > 8 else ""),
        )
    return model


ANALOG, DIGITAL = "quantized (analog)", "quantized (8-bit digital)"


def execution_order(model: nn.Module, example_input: object = None) -> tuple[list[str], str]:
    """The Conv/Linear layers a forward calls, in call order, and how the order was found: hooks on a forward
    of `example_input` (eval mode, no grad, training flags restored), else the torch.fx graph, else module
    registration order (BERT-like models register a layer-0 query before the embeddings' users run)."""
    layers = [n for n, m in model.named_modules() if isinstance(m, LAYER_TYPES)]
    known = set(layers)
    if example_input is not None:
        called: list[str] = []
        modules = dict(model.named_modules())
        hooks = [modules[n].register_forward_pre_hook(lambda *_, n=n: called.append(n)) for n in layers]
        modes = {m: m.training for m in model.modules()}
        try:
            model.eval()
            with torch.no_grad():
                model(*example_input) if isinstance(example_input, tuple) else model(example_input)
        finally:
            for hook in hooks:
                hook.remove()
            for m, mode in modes.items():
                m.training = mode
        return list(dict.fromkeys(called)), "a forward of example_input"
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception as exc:  # fx raises many types for untraceable Python control flow
        why = " ".join(str(exc).split())[:80]
        return layers, f"registration order (torch.fx cannot trace the model: {why}; pass example_input)"
    called = [str(n.target) for n in graph.nodes if n.op == "call_module" and str(n.target) in known]
    return list(dict.fromkeys(called)), "the torch.fx graph"


def selection(model: nn.Module, config: QuantConfig, example_input: object = None) -> dict[str, str]:
    """What quantize_model does with each Conv/Linear layer, and why: ANALOG, DIGITAL or "float: <why>".
    First and last are the first and last layers a forward calls (`execution_order`), logged at INFO."""
    layers = [n for n, m in model.named_modules() if isinstance(m, LAYER_TYPES)]
    ends: set[str] = set()
    if layers and config.first_last != "quantize":
        order, how = execution_order(model, example_input)
        order = order or layers  # a forward that calls none of them by module (functional use): fall back
        ends = {order[0], order[-1]}
        log.info(
            "first_last=%r: first layer %s, last layer %s (by %s)",
            config.first_last,
            order[0],
            order[-1],
            how,
        )
    plan = {}
    for name in layers:
        if config.include and not _matches(name, config.include):
            plan[name] = "float: not in include"
        elif _matches(name, config.exclude):
            plan[name] = "float: excluded"
        elif name in ends and config.first_last == "fp":
            plan[name] = "float: first/last layer (first_last='fp')"
        else:
            plan[name] = DIGITAL if name in ends and config.first_last == "8bit" else ANALOG
    return plan


def coverage(model: nn.Module, plan: dict[str, str] | None = None) -> list[dict]:
    """One row per module that owns weight matrices (parameters of 2+ dims): name, type, status, weights
    count. A quantized layer's weights are its float parameter; a type quantize_model does not handle
    (MultiheadAttention's in_proj, RNN/LSTM/GRU, ConvTranspose) is "float: unsupported type"."""
    plan = plan or {}
    rows = []
    for name, module in model.named_modules():
        if parametrize.is_parametrized(module, "weight"):
            status = plan.get(name) or (ANALOG if quantized_layers(module)[0][2].analog else DIGITAL)
            rows.append(
                {
                    "name": name,
                    "type": _layer_type(module),
                    "status": status,
                    "weights": float_weight(module).numel(),
                }
            )
            continue
        own = [p for n, p in module.named_parameters(recurse=False) if p.dim() >= 2 and "original" not in n]
        if own:
            why = plan.get(name) or (
                "float: not selected" if isinstance(module, LAYER_TYPES) else "float: unsupported type"
            )
            rows.append(
                {
                    "name": name,
                    "type": type(module).__name__,
                    "status": why,
                    "weights": sum(p.numel() for p in own),
                }
            )
    return rows


def _layer_type(module: nn.Module) -> str:
    """The user's class name of a parametrized layer (torch and export() wrap it in generated subclasses)."""
    return next(c.__name__ for c in type(module).__mro__ if not c.__name__.startswith("Parametrized"))


def summary(model_or_rows: nn.Module | list[dict]) -> str:
    """The layer table as text: every weight-holding layer, quantized or why not, and the share of all
    weight-matrix entries that are quantized."""
    rows = coverage(model_or_rows) if isinstance(model_or_rows, nn.Module) else model_or_rows
    total = sum(r["weights"] for r in rows) or 1
    done = sum(r["weights"] for r in rows if r["status"].startswith("quantized"))
    lines = [f"{r['name'] or '(model)'}  {r['type']}  {r['status']}  {r['weights']}" for r in rows]
    head = f"quantized {done} of {total} weights ({100 * done / total:.1f}%) in {len(rows)} layers:"
    return "\n".join([head, *lines])


def quantized_layers(model: nn.Module) -> list[tuple[str, nn.Module, QuantizedWeight]]:
    """(name, layer, parametrization) for every quantized layer, in module order."""
    out = []
    for name, module in model.named_modules():
        if parametrize.is_parametrized(module, "weight"):
            for p in module.parametrizations.weight:
                if isinstance(p, QuantizedWeight):
                    out.append((name, module, p))
    return out


def float_weight(module: nn.Module) -> Tensor:
    """The trained float weights behind a quantized layer."""
    return _plist(module, "weight").original


def _plist(module: nn.Module, tensor: str) -> parametrize.ParametrizationList:
    """The parametrizations of a parametrized `module.<tensor>` (torch types them as any submodule)."""
    return cast(parametrize.ParametrizationList, getattr(module.parametrizations, tensor))


@torch.no_grad()
def load_float(model: nn.Module, state_dict: dict[str, Tensor], strict: bool = True) -> nn.Module:
    """Load a float model's state_dict (plain `x.weight` keys) into a quantized model: the float weights go
    behind the parametrizations and every quantizer is fitted on them again, as `quantize_model` would.
    (`model.load_state_dict(float_state, strict=False)` would leave every quantized layer at its init.)"""
    plain = {n for n, _, _ in quantized_layers(model)}
    mapped = {}
    for key, value in state_dict.items():
        layer, _, tensor = key.rpartition(".")
        if layer in plain and tensor in ("weight", "bias"):
            module = model.get_submodule(layer)
            if parametrize.is_parametrized(module, tensor):
                key = f"{layer}.parametrizations.{tensor}.original"
        mapped[key] = value
    if any(".parametrizations." in k and not k.endswith(".original") for k in state_dict):
        raise ValueError("load_float takes a float checkpoint; this one is quantized: use load_state_dict")
    own = model.state_dict()
    quantizer_state = {
        k: v for k, v in own.items() if ".parametrizations." in k and not k.endswith(".original")
    }
    model.load_state_dict({**quantizer_state, **mapped}, strict=strict)
    for name, module, p in quantized_layers(model):
        quantizers.base.fit_checked(p.quantizer, float_weight(module), name)
        p.refits.zero_()
    return model


def _own_class(module: nn.Module) -> None:
    """Give a parametrized module a class of its own. torch.nn.utils.parametrize makes one class per
    module, but copy.deepcopy (and AveragedModel, EMA) shares it between the copies, and removing a
    parametrization deletes its property from that class: export() of a copy broke the original."""
    cls = module.__class__
    body = {k: v for k, v in cls.__dict__.items() if k not in ("__dict__", "__weakref__")}
    module.__class__ = type(cls.__name__, cls.__bases__, body)


@torch.no_grad()
def export(model: nn.Module) -> nn.Module:
    """Replace every parametrization by a plain weight holding the noise-free quantized values (in place;
    copies of the model, an EMA's included, are left as they are)."""
    for _, module, p in quantized_layers(model):
        _own_class(module)
        wq = p.clean(float_weight(module))
        if parametrize.is_parametrized(module, "bias"):
            bias = _plist(module, "bias")
            bq = cast(BiasColumn, bias[0]).clean(bias.original)
            parametrize.remove_parametrizations(module, "bias", leave_parametrized=False)
            cast(Tensor, module.bias).copy_(bq)
        parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)
        cast(Tensor, module.weight).copy_(wq)
    return model


@torch.no_grad()
def fold_batchnorm(model: nn.Module) -> list[tuple[str, str]]:
    """Fold each BatchNorm fed only by a Conv/Linear output into that layer, in place (eval semantics).

    W' = W * gamma / sqrt(var + eps) per output channel, b' = beta + (b - mean) * gamma / sqrt(var + eps); the
    BatchNorm becomes nn.Identity, so CIM hardware needs no high-precision per-channel MAC after the array
    (the MARS / SRAM-CIM motivation). Pairs are found on the torch.fx graph: a BN after a pooling or
    activation is left alone. Returns the (layer, batchnorm) names that were folded.
    """
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception as exc:  # fx raises many types for untraceable Python control flow
        raise ValueError(f"fold_batchnorm needs an fx-traceable model ({exc}); set fold_bn=False") from exc
    modules = dict(model.named_modules())
    folded = []
    for node in graph.nodes:
        bn = modules.get(node.target) if node.op == "call_module" else None
        if not isinstance(bn, nn.modules.batchnorm._BatchNorm) or not bn.track_running_stats:
            continue
        src = node.args[0]
        layer = modules.get(src.target) if getattr(src, "op", None) == "call_module" else None
        if not isinstance(layer, MAC_TYPES) or len(src.users) != 1:
            continue
        if parametrize.is_parametrized(layer):
            raise ValueError("fold_batchnorm must run before quantize_model (use QuantConfig.fold_bn=True)")
        # tracked running statistics: both buffers are tensors
        running_mean, running_var = cast(Tensor, bn.running_mean), cast(Tensor, bn.running_var)
        scale = bn.weight if bn.affine else torch.ones_like(running_var)
        shift = bn.bias if bn.affine else torch.zeros_like(running_mean)
        factor = scale / torch.sqrt(running_var + bn.eps)
        bias = layer.bias if layer.bias is not None else torch.zeros_like(running_mean)
        layer.weight.mul_(factor.reshape(-1, *([1] * (layer.weight.dim() - 1))))
        new_bias = shift + (bias - running_mean) * factor
        if layer.bias is None:
            layer.bias = nn.Parameter(new_bias.to(layer.weight))
        else:
            layer.bias.copy_(new_bias)
        parent, _, child = node.target.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, nn.Identity())
        folded.append((src.target, node.target))
    return folded
