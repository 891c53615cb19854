"""What every figure gets (where to read and write) and what it gives back (the figure, what was missing)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from matplotlib.figure import Figure

from benchmarks.experiments.fig4b import DEFAULT_CONDUCTANCES


@dataclass(frozen=True)
class Context:
    """Command-line inputs shared by the figures."""

    results: Path = Path("results")
    out: Path = Path("figures/out")
    scale: str = "proxy"
    checkpoint: Path | None = None
    conductances: Path = DEFAULT_CONDUCTANCES
    methods: tuple[str, ...] = ()  # the quantizers drawn (--methods); empty: each figure's default


@dataclass
class Missing:
    """Inputs a figure could not find, each with the `make` target that produces it."""

    items: list[tuple[str, str]] = field(default_factory=list)

    def add(self, what: str, make_target: str, method: str = "lloyd") -> None:
        """A method other than ours (lloyd) gets `METHODS=<it>` on the target, which then runs its cells."""
        self.items.append((what, make_target + (f" METHODS={method}" if method != "lloyd" else "")))

    def lines(self, figure: str) -> list[str]:
        return [f"{figure}: missing {what} -> run `{target}`" for what, target in self.items]


@dataclass
class Rendered:
    """A drawn figure (None when none of its measured inputs exist) and what it lacked."""

    figure: Figure | None
    missing: Missing
