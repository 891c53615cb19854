"""cacim_core: generalized (Lloyd) weight quantization and noise-aware training for analog CIM."""

from . import circuit, measured, noise, pcm, quantizers  # importing registers the noise models
from .convert import (
    QuantConfig,
    QuantizedWeight,
    coverage,
    export,
    float_weight,
    load_float,
    quantize_model,
    quantized_layers,
    selection,
    summary,
)
from .evaluate import NoisyResult, noisy_evaluate, weight_noise
from .training import projection, refit, refit_check, refit_counts

__all__ = [
    "NoisyResult",
    "QuantConfig",
    "QuantizedWeight",
    "circuit",
    "coverage",
    "export",
    "measured",
    "noise",
    "float_weight",
    "load_float",
    "noisy_evaluate",
    "pcm",
    "projection",
    "quantize_model",
    "quantized_layers",
    "quantizers",
    "refit",
    "refit_check",
    "refit_counts",
    "selection",
    "summary",
    "weight_noise",
]
