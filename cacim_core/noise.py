"""Weight-noise models: what a programmed analog weight looks like after it is written to the device.

A noise model is one object, built once from a spec at the edge (`parse`) and passed down: called as
`model(wq, generator) -> noise` it returns an additive error in weight units for one programmed copy of
`wq` (a layer, or one crossbar tile of it); `active` says whether it does anything; `spec` is a stable
string that `parse` reads back (it goes into records and cell ids). Models are registered by name in
`NOISES`: "gaussian" (NATS, here), "measured" and "fitted" (`cacim_core.measured`), "pcm"
(`cacim_core.pcm`), "stuck" (`cacim_core.device`), and the circuit effects "irdrop", "dac" and "slice"
(`cacim_core.circuit`).

Specs `parse` accepts: None, 0 or "none" (no noise); a float (the NATS delta); "name" or "name:key=value,..."
(e.g. "gaussian:delta=0.02,mean=0.01", "pcm:t=86400", "measured:path=chip.csv"); a dict
{"type": "pcm", "t": 3600}; a built noise object; or any callable `(wq, generator) -> noise`. Models
compose with "+", applied left to right to the weights (`Composed`): "gaussian:delta=0.02+irdrop:r=0.35"
is a noisy programmed tile read through resistive lines.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar, Union, cast

import torch
from torch import Tensor

from .registry import Registry


class NoiseModel:
    """Base of every noise model: `model(wq, generator) -> additive noise` (weight units, no gradient)."""

    name: ClassVar[str] = ""

    def __call__(self, wq: Tensor, generator: torch.Generator | None = None) -> Tensor:
        raise NotImplementedError

    @property
    def active(self) -> bool:
        return True

    @property
    def spec(self) -> str:
        """`name:key=value,...` with the parameters that differ from their defaults; `parse` reads it back."""
        params = []
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            if not f.init or not f.metadata.get("spec", True):
                continue
            value = getattr(self, f.name)
            if f.default is not dataclasses.MISSING and value == f.default:
                continue
            params.append(f"{f.name}={_format(value)}")
        return f"{self.name}:{','.join(params)}" if params else self.name

    def describe(self) -> str:
        """One line for logs; the spec unless a model has more to say (e.g. a fit's goodness)."""
        return self.spec

    def __str__(self) -> str:
        return self.spec


NOISES: Registry[Callable[..., NoiseModel]] = Registry("noise model")


_Model = TypeVar("_Model", bound=type[NoiseModel])


def register(name: str) -> Callable[[_Model], _Model]:
    """Class decorator: register a noise model under `name` (also its `spec` prefix)."""

    def wrap(cls: _Model) -> _Model:
        cls.name = name
        return cast(_Model, NOISES.register(name)(cls))

    return wrap


@register("gaussian")
@dataclass(frozen=True)
class GaussianNoise(NoiseModel):
    """NATS noise (the paper's eq. 6): N(mean * m, (delta * m)^2) per weight, with m = max|W_q| of the layer.

    `mean` is a device mean shift (a systematic conductance drift), also relative to max|W_q|; the paper's
    noise has mean 0. With tiles (`QuantConfig.tile`) m is the tile's max|W_q|.
    """

    delta: float = 0.0
    mean: float = 0.0

    def __post_init__(self) -> None:
        if not self.delta >= 0:
            raise ValueError(f"gaussian noise delta is a relative std and must be >= 0, got {self.delta}")

    def __call__(self, wq: Tensor, generator: torch.Generator | None = None) -> Tensor:
        scale = wq.detach().abs().max()
        eps = torch.randn(wq.shape, generator=generator, device=wq.device, dtype=wq.dtype)
        return (self.mean + self.delta * eps) * scale

    @property
    def active(self) -> bool:
        return self.delta > 0 or self.mean != 0


@dataclass(frozen=True)
class FunctionNoise(NoiseModel):
    """A plain callable `(wq, generator) -> noise` given as a noise model; its spec names the function."""

    fn: Callable[[Tensor, torch.Generator | None], Tensor]
    name: ClassVar[str] = "function"

    def __call__(self, wq: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return self.fn(wq, generator)

    @property
    def spec(self) -> str:
        fn = self.fn
        return f"function:{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__name__)}"


@dataclass(frozen=True)
class Composed(NoiseModel):
    """Device models applied in turn: w_k = w_(k-1) + part_k(w_(k-1)); the noise is w_last - w_0.

    Order matters where a part depends on the conductances it is given (programming noise, then IR drop
    of the noisy tile). Each part draws from the one generator in order. At most one part sets the DAC.
    """

    parts: tuple[NoiseModel, ...]
    name: ClassVar[str] = "composed"

    def __post_init__(self) -> None:
        if sum(getattr(p, "input_bits", None) is not None for p in self.parts) > 1:
            raise ValueError(f"noise spec {self.spec!r} sets the DAC twice: keep one 'dac:bits=...' part")

    def __call__(self, wq: Tensor, generator: torch.Generator | None = None) -> Tensor:
        w = wq
        for part in self.parts:
            w = w + part(w, generator)
        return w - wq

    @property
    def active(self) -> bool:
        return any(p.active for p in self.parts)

    @property
    def input_bits(self) -> int | None:
        """The DAC bits of its DAC part (`cacim_core.circuit.DACInput`), None without one."""
        return next(
            (cast(Any, p).input_bits for p in self.parts if getattr(p, "input_bits", None) is not None), None
        )

    @property
    def spec(self) -> str:
        return "+".join(p.spec for p in self.parts)

    def describe(self) -> str:
        return " then ".join(p.describe() for p in self.parts)


_PLUS = re.compile(r"\+(?=\s*[A-Za-z])")  # a "+" before a name; "1e+16" inside a number stays


def parts(text: str) -> list[NoiseModel]:
    """Every part of a "+"-composed spec string as built, inactive ones included (r=0, delta 0)."""
    return [_from_string(piece) for piece in _PLUS.split(text)]


def parse(spec: Any) -> NoiseModel | None:
    """The one place a noise spec becomes a noise object; None when it adds no noise (None, 0, delta 0)."""
    if spec is None:
        return None
    if isinstance(spec, NoiseModel):
        model = spec
    elif isinstance(spec, bool):
        raise TypeError(f"noise spec {spec!r} is a bool; give a delta (0.02), a name ('pcm:t=3600') or None")
    elif isinstance(spec, (int, float)):
        if not math.isfinite(spec) or spec < 0:
            raise ValueError(f"noise delta is a relative std and must be a finite number >= 0, got {spec}")
        model = GaussianNoise(float(spec))
    elif isinstance(spec, str):
        if spec.strip().lower() in ("", "none"):  # what `spec_of` writes for no noise
            return None
        built = [p for p in parts(spec) if p.active]
        if not built:
            return None
        model = built[0] if len(built) == 1 else Composed(tuple(built))
    elif isinstance(spec, dict):
        kwargs = dict(spec)
        if "type" not in kwargs:
            raise ValueError(
                f"noise dict {spec!r} needs a 'type' key; registered: {', '.join(NOISES.names())}"
            )
        model = _build(str(kwargs.pop("type")), kwargs)
    elif callable(spec):
        model = FunctionNoise(spec)
    else:
        raise TypeError(
            f"cannot read noise spec {spec!r}: give None, a delta, 'name:key=value', a dict with 'type', "
            f"or a noise object; registered models: {', '.join(NOISES.names())}"
        )
    return model if model.active else None


def spec_of(noise: Any) -> str:
    """The stable spec string of any noise spec ("none" when it adds no noise)."""
    model = parse(noise)
    return "none" if model is None else model.spec


def _from_string(text: str) -> NoiseModel:
    text = text.strip()
    try:
        return GaussianNoise(float(text))
    except ValueError:
        pass
    name, _, rest = text.partition(":")
    kwargs: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"noise spec {text!r}: {item!r} is not key=value (e.g. 'pcm:t=3600,comp=false')")
        kwargs[key.strip()] = value.strip()
    return _build(name.strip(), kwargs, from_text=True)


def _build(name: str, kwargs: dict[str, Any], from_text: bool = False) -> NoiseModel:
    factory = NOISES.get(name)
    params = {
        p.name: p
        for p in inspect.signature(factory).parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        raise ValueError(
            f"noise model {name!r} has no parameter {unknown[0]!r}; parameters: {', '.join(params)}"
        )
    if from_text:
        hints = typing.get_type_hints(factory)
        kwargs = {key: _coerce(name, key, value, hints.get(key, str)) for key, value in kwargs.items()}
    return factory(**kwargs)


def _coerce(name: str, key: str, value: str, hint: Any) -> Any:
    """A spec string value to the parameter's annotated type (float, int, bool, str, or X | None)."""
    if typing.get_origin(hint) in (Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if value.lower() == "none" and len(options) < len(typing.get_args(hint)):
            return None
        hint = options[0]
    try:
        if hint is bool:
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        return hint(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"noise model {name!r}: {key}={value!r} is not a {getattr(hint, '__name__', hint)}"
        ) from None


def _format(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value)
