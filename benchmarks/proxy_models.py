"""The synth32 proxy networks (``resnet20_proxy``, ``resnet18b_proxy``, ``resnet50b_proxy``) are defined and
registered in benchmarks/models.py, beside the narrow nets they derive from; this module only keeps
``import benchmarks.proxy_models`` working."""

from benchmarks import models  # noqa: F401
