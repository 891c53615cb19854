"""Weight quantizers, built by name: `build("lloyd", levels=4)`; `register("mine")(MyQuantizer)` adds one."""

from . import grid, learned, lloyd, noise_aware, ternary  # noqa: F401  (importing registers the built-in methods)
from .base import LearnedQuantizer, Quantizer, build, check_weights, names, nearest, param_groups, register
from .lloyd import distortion

__all__ = [
    "LearnedQuantizer",
    "Quantizer",
    "build",
    "check_weights",
    "distortion",
    "names",
    "nearest",
    "param_groups",
    "register",
]
