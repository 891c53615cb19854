"""Weight quantizers, built by name: `build("lloyd", levels=4)`; `register("mine")(MyQuantizer)` adds one."""

from . import grid, learned, lloyd, noise_aware, ternary  # noqa: F401  (importing registers the built-in methods)
from .base import Quantizer, build, check_finite, names, nearest, register
from .lloyd import distortion

__all__ = ["Quantizer", "build", "check_finite", "distortion", "names", "nearest", "register"]
