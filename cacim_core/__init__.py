"""cacim_core: generalized (Lloyd) weight quantization and noise-aware training for analog CIM."""

from . import quantizers
from .convert import QuantConfig, QuantizedWeight, export, float_weight, quantize_model, quantized_layers
from .evaluate import NoisyResult, noisy_evaluate, weight_noise
from .training import projection, refit_check, refit_counts

__all__ = [
    "NoisyResult",
    "QuantConfig",
    "QuantizedWeight",
    "export",
    "float_weight",
    "noisy_evaluate",
    "projection",
    "quantize_model",
    "quantized_layers",
    "quantizers",
    "refit_check",
    "refit_counts",
    "weight_noise",
]
