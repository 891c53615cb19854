"""Metric names as data: the grammar of the keys a record's metrics are stored under, written once.

    <m>                 the quantized model's metric after fine-tuning (top1, mAP, nn10, weights_quantized)
    <m>_clean           the same model measured without weight noise (the OpenMMLab backend)
    ptq_<m>             post-training quantized: right after conversion, before fine-tuning
    fp_<m>              the float model
    gap_<m>             fp_<m> - <m>: the paper's gap (smaller is better)
    gap_ptq_<m>         fp_<m> - ptq_<m>
    gap_vs_control_<m>  the control cell's <m> - <m>: quantization alone (derived by the table renderer)

Builders and readers use `MetricName` (or the `*_of` shorthands), never string operations on a key; a key
outside the grammar is an error naming it, not a silent miss. `<m>` may hold "_" but no reserved prefix or
suffix (`_std` and `_n` name a metric's spread and draw-count columns in `results.load`'s frame).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Kind = Literal["value", "fp", "gap"]
Phase = Literal["final", "ptq"]
Against = Literal["fp", "control"]

#: (kind, phase, against) -> the key's prefix: the grammar, read both ways (other combinations are no metric)
_PREFIX: dict[tuple[Kind, Phase, Against], str] = {
    ("value", "final", "fp"): "",
    ("value", "ptq", "fp"): "ptq_",
    ("fp", "final", "fp"): "fp_",
    ("gap", "final", "fp"): "gap_",
    ("gap", "ptq", "fp"): "gap_ptq_",
    ("gap", "final", "control"): "gap_vs_control_",
}
_BY_PREFIX = sorted(((p, f) for f, p in _PREFIX.items()), key=lambda pf: -len(pf[0]))  # longest first
#: a base may not start like a prefix, nor like what a gap's prefix leaves (`gap_` + `vs_control_x`)
_RESERVED_PREFIXES = sorted({q for p in _PREFIX.values() for q in (p, p.removeprefix("gap_")) if q})
_CLEAN = "_clean"
_RESERVED_SUFFIXES = (_CLEAN, "_std", "_n")
_BASE = re.compile(r"[A-Za-z][A-Za-z0-9]*(_[A-Za-z0-9]+)*")
GRAMMAR = ", ".join([f"{p}<m>" for p in _PREFIX.values()] + [f"<m>{_CLEAN}"])


@dataclass(frozen=True)
class MetricName:
    """One stored metric: what is measured (`base`), of which model (`kind`: the quantized one's value, the
    float model's, or the gap between them), when (`phase`: after fine-tuning or post-training), a gap's
    reference (`against`: the float model or the control cell) and whether weight noise was off (`clean`)."""

    base: str
    kind: Kind = "value"
    phase: Phase = "final"
    against: Against = "fp"
    clean: bool = False

    def __post_init__(self) -> None:
        if not _BASE.fullmatch(self.base):
            raise ValueError(f"metric base {self.base!r} is not a name (letters, digits, inner '_')")
        reserved = [p for p in _RESERVED_PREFIXES if self.base.startswith(p)]
        reserved += [s for s in _RESERVED_SUFFIXES if self.base.endswith(s)]
        if reserved:
            raise ValueError(f"metric base {self.base!r} holds the reserved {reserved[0]!r}")
        if self._fields not in _PREFIX:
            raise ValueError(
                f"no metric is kind={self.kind!r}, phase={self.phase!r}, against={self.against!r}"
            )
        if self.clean and self._fields != ("value", "final", "fp"):
            raise ValueError(f"only a final value is measured clean, not a {self.kind} ({self.phase})")

    @property
    def _fields(self) -> tuple[Kind, Phase, Against]:
        return self.kind, self.phase, self.against

    @property
    def key(self) -> str:
        """The string records and the frame store this metric under."""
        return _PREFIX[self._fields] + self.base + (_CLEAN if self.clean else "")

    @property
    def subject(self) -> str:
        """A gap's key without `gap_` (`top1`, `ptq_top1`, `vs_control_top1`): what the gap is labelled by."""
        if self.kind != "gap":
            raise ValueError(f"{self.key!r} is not a gap")
        return _PREFIX[self._fields].removeprefix("gap_") + self.base

    @property
    def headline(self) -> bool:
        """The paper's gap: final, against the float model (what claims and `compare` test by default)."""
        return self._fields == ("gap", "final", "fp")

    @classmethod
    def parse(cls, key: str) -> MetricName:
        """The metric a stored key names; a key outside the grammar is a ValueError naming it."""
        prefix, (kind, phase, against) = next((p, f) for p, f in _BY_PREFIX if key.startswith(p))
        base = key[len(prefix) :]
        clean = not prefix and base.endswith(_CLEAN)
        try:
            return cls(base.removesuffix(_CLEAN) if clean else base, kind, phase, against, clean)
        except ValueError as e:
            raise ValueError(f"unreadable metric key {key!r} ({e}); the grammar: {GRAMMAR}") from None


def gap_of(base: str, phase: Phase = "final") -> str:
    """The key of `base`'s gap to the float model (`gap_top1`; post-training: `gap_ptq_top1`)."""
    return MetricName(base, "gap", phase).key


def fp_of(base: str) -> str:
    """The key of the float model's `base` (`fp_top1`)."""
    return MetricName(base, "fp").key


def ptq_of(base: str) -> str:
    """The key of `base` right after conversion, before fine-tuning (`ptq_top1`)."""
    return MetricName(base, phase="ptq").key


def clean_of(base: str) -> str:
    """The key of `base` measured without weight noise (`mAP_clean`)."""
    return MetricName(base, clean=True).key


def control_gap_of(base: str) -> str:
    """The key of the control cell's `base` minus the cell's (`gap_vs_control_top1`)."""
    return MetricName(base, "gap", against="control").key
